//! Generates the gRPC code from ../../proto with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let files = ["ekka/v1/cluster.proto", "ekka/v1/raft.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
