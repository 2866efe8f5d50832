//! The `ekka` binary: `agent`, `cluster ...` and `up`. Exit codes: 0 success, 1 operation failed
//! (`error: <code>: <message>` on stderr), 2 usage or configuration error, 3 the outcome of a
//! write is unknown (`error: outcome_unknown: <message>`).

mod cli;

use clap::Parser;
use ekka::ErrorCode;

/// glibc's malloc took about 6 % of the machine's CPU in a 64-client put load (perf); with
/// mimalloc the agents' CPU per operation fell 8 % for puts and 15 % for lock cycles
/// (bench/results/2026-11-25-issue-5.md, "Sixth run").
///
/// Built with mimalloc's `no_thp` feature (Cargo.toml): otherwise mimalloc asks for transparent
/// huge pages on its eagerly committed 1 GiB arena (`madvise(MADV_HUGEPAGE)`), and on a kernel
/// in THP `madvise` mode every 2 MiB region it touches becomes resident: an idle agent held
/// 41 MiB of anonymous memory instead of 2.5 MiB (bench/results/2026-12-02-lean.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::args::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EKKA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // One runtime thread: a write crosses many tasks (gRPC streams, the batcher, openraft's core
    // and replication), and on a thread of its own each hop is a plain poll instead of waking
    // another thread. Disk flushes run on the store's ekka-flush thread. On the 2-core bench
    // machine this raised lock and put throughput at 16 and 64 clients by 14-56 % in same-day
    // runs (bench/results/2026-11-25-issue-5.md).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: internal: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(async move {
        match args.cmd {
            cli::args::Cmd::Agent(a) => cli::agent::run(*a).await,
            cli::args::Cmd::Cluster(c) => cli::cluster::run(c).await,
            cli::args::Cmd::Members(m) => cli::cluster::members(m).await,
            cli::args::Cmd::Up(u) => cli::up::run(u).await,
            cli::args::Cmd::Lock(l) => cli::data::lock(l).await,
            cli::args::Cmd::Kv(k) => cli::data::kv(k).await,
        }
    });
    if let Err(e) = res {
        // The agent's shutdown watchdog may be printing its own last line: only one of us does.
        let _held = cli::agent::EXIT.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("error: {}: {}", e.code, e.message);
        let code = match e.code {
            ErrorCode::InvalidConfig => 2,
            ErrorCode::OutcomeUnknown => 3,
            _ => 1,
        };
        std::process::exit(code);
    }
}
