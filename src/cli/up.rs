//! `ekka up --nodes N`: starts N agents as child processes, joins them into one cluster, shows
//! progress, then a live status table until Ctrl-C (which stops the agents).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ekka::types::fmt_id;
use ekka::{ApiError, Client, ErrorCode, Outcome, Status};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::args::UpArgs;
use crate::cli::output;

/// One started agent.
struct Agent {
    name: String,
    addr: String,
    child: Child,
}

fn fail(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, m)
}

/// Starts agent `name`, on its previous address when `dir` has one (a whole cluster restarted
/// on new ports could not find itself again: members know each other by committed address),
/// else on a free port.
async fn start_agent(dir: &Path, name: &str, cookie: &str) -> Result<Agent, ApiError> {
    let addr_file = dir.join(format!("{name}.addr"));
    let previous = std::fs::read_to_string(&addr_file)
        .ok()
        .map(|s| s.trim().to_string());
    let agent = match previous {
        Some(p) if !p.is_empty() => match spawn_agent(dir, name, cookie, &p).await {
            Ok(a) => a,
            Err(_) => spawn_agent(dir, name, cookie, "127.0.0.1:0").await?,
        },
        _ => spawn_agent(dir, name, cookie, "127.0.0.1:0").await?,
    };
    std::fs::write(&addr_file, &agent.addr).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidConfig,
            format!("{}: {e}", addr_file.display()),
        )
    })?;
    Ok(agent)
}

async fn spawn_agent(
    dir: &Path,
    name: &str,
    cookie: &str,
    listen: &str,
) -> Result<Agent, ApiError> {
    let exe = std::env::current_exe().map_err(|e| fail(format!("cannot find ekka: {e}")))?;
    let data = dir.join(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("{}: {e}", dir.display())))?;
    let mut child = Command::new(exe)
        .arg("agent")
        .args(["--name", name, "--listen", listen, "--cookie", cookie])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start {name}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout from the agent"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| fail(format!("{name} did not start within 30s")))?
        .map_err(|e| fail(format!("{name}: {e}")))?;
    let addr = first
        .as_deref()
        .and_then(|l| l.strip_prefix("listening on "))
        .ok_or_else(|| {
            fail(format!(
                "{name} exited before listening; see {}",
                dir.join(format!("{name}.log")).display()
            ))
        })?
        .to_string();
    // Keep draining stdout so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Agent {
        name: name.to_string(),
        addr,
        child,
    })
}

pub async fn run(args: UpArgs) -> Result<(), ApiError> {
    // Registered first, so a Ctrl-C at any point stops the agents instead of orphaning them.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| fail(format!("cannot handle SIGINT: {e}")))?;
    if args.nodes == 0 || args.nodes as usize > ekka::types::limits::MAX_MEMBERS {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            "nodes: must be at least 1",
        ));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidConfig,
            format!("dir: cannot create {}: {e}", args.dir.display()),
        )
    })?;
    let cookie = args
        .cookie
        .clone()
        .unwrap_or_else(|| ekka_client::DEFAULT_COOKIE.to_string());
    let started = Instant::now();
    let mut agents = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("n{i}");
        let a = start_agent(&args.dir, &name, &cookie).await?;
        println!("started {} on {}", a.name, a.addr);
        agents.push(a);
    }
    let seed = agents[0].addr.clone();
    for a in agents.iter().skip(1) {
        let c = Client::new(&a.addr, &cookie)?;
        match c.join(&seed).await {
            Ok(Outcome::Done(id)) => println!("{} joined cluster {}", a.name, fmt_id(id)),
            Ok(Outcome::Ignored(why)) => println!("{}: {why}", a.name),
            Err(e) if e.code == ErrorCode::AlreadyInCluster => {
                println!("{} is already in the cluster", a.name)
            }
            Err(e) => return Err(e),
        }
    }
    let c = Client::new(&seed, &cookie)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = c.status().await?;
        let up = s.members.iter().filter(|m| m.status == Status::Up).count();
        if up == agents.len() && s.leader.is_some() {
            break s;
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "only {up} of {} nodes are up after 60s",
                agents.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "cluster of {} formed in {} ms\n",
        agents.len(),
        started.elapsed().as_millis()
    );
    print!("{}", output::status_table(&status));
    println!("\nlive status (Ctrl-C stops the cluster):");
    live(&agents, &cookie, &mut interrupt).await;
    stop(agents).await;
    Ok(())
}

/// Prints the status table whenever it changes, until Ctrl-C.
async fn live(agents: &[Agent], cookie: &str, interrupt: &mut tokio::signal::unix::Signal) {
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return,
            _ = tick.tick() => {}
        }
        let mut shown = None;
        for a in agents {
            let Ok(c) = Client::new(&a.addr, cookie) else {
                continue;
            };
            if let Ok(s) = c.status().await {
                shown = Some(output::status_table(&s));
                break;
            }
        }
        let text = shown.unwrap_or_else(|| "no agent answers\n".into());
        if text != last {
            print!("\n{text}");
            last = text;
        }
    }
}

/// SIGTERM to every agent, then wait (SIGKILL after 5 s).
async fn stop(agents: Vec<Agent>) {
    for a in &agents {
        if let Some(pid) = a.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for mut a in agents {
        if tokio::time::timeout(Duration::from_secs(5), a.child.wait())
            .await
            .is_err()
        {
            let _ = a.child.kill().await;
        }
        println!("stopped {}", a.name);
    }
}
