//! Generates an etcd v3 gRPC client for the few RPCs the benchmark drives, with protox (pure
//! Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "proto";
    let files = ["etcdserverpb.proto", "v3lockpb.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
