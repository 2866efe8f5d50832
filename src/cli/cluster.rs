//! `ekka cluster ...`: the client commands. Output and exit codes follow CONTRACT.md.

use ekka::types::fmt_id;
use ekka::{ApiError, Client, Outcome};

use crate::cli::args::{ClientArgs, ClusterCmd};
use crate::cli::output;

pub(crate) fn client(a: &ClientArgs) -> Result<Client, ApiError> {
    let cookie = a.cookie.as_deref().unwrap_or(ekka_client::DEFAULT_COOKIE);
    let tls = match crate::cli::args::tls_files(&a.tls_cert, &a.tls_key, &a.tls_ca)? {
        Some(f) => Some(
            f.load()
                .map_err(|e| ApiError::new(ekka::ErrorCode::InvalidConfig, e.to_string()))?,
        ),
        None => None,
    };
    Client::with_tls(&a.node, cookie, tls.as_ref())
}

/// Runs one cluster command; prints its success output on stdout.
pub async fn run(cmd: ClusterCmd) -> Result<(), ApiError> {
    match cmd {
        ClusterCmd::Join { addr, client: c } => match client(&c)?.join(&addr).await? {
            Outcome::Done(cluster_id) => println!("joined {}", fmt_id(cluster_id)),
            Outcome::Ignored(why) => println!("ignored: {why}"),
        },
        ClusterCmd::Leave { client: c } => {
            client(&c)?.leave().await?;
            println!("left");
        }
        ClusterCmd::ForceLeave { name, client: c } => match client(&c)?.force_leave(&name).await? {
            Outcome::Done(()) => println!("removed {name}"),
            Outcome::Ignored(why) => println!("ignored: {why}"),
        },
        ClusterCmd::Status { json, client: c } => {
            let s = client(&c)?.status().await?;
            if json {
                println!("{}", output::status_json(&s));
            } else {
                print!("{}", output::status_table(&s));
            }
        }
        ClusterCmd::Autoclean { delay, client: c } => {
            client(&c)?.set_autoclean(delay).await?;
            if delay.is_zero() {
                println!("autoclean off");
            } else {
                println!("autoclean {}", humantime::format_duration(delay));
            }
        }
        ClusterCmd::Recover { data_dir } => {
            let report = ekka_node::recover(&data_dir).await?;
            for m in &report.discarded {
                eprintln!(
                    "discarding member {} ({}) at {}",
                    m.name,
                    fmt_id(m.id),
                    m.addr
                );
            }
            if report.dropped_locks > 0 {
                eprintln!("dropping {} held locks", report.dropped_locks);
            }
            if report.kept_keys > 0 {
                eprintln!("keeping {} keys", report.kept_keys);
            }
            eprintln!(
                "new cluster id {} (was {}): members of the old cluster are refused until joined with `ekka cluster join`",
                fmt_id(report.cluster_id),
                fmt_id(report.recovered_from)
            );
            println!("recovered");
        }
    }
    Ok(())
}

/// `ekka members watch`: prints events until the stream ends or Ctrl-C.
pub async fn members(cmd: crate::cli::args::MembersCmd) -> Result<(), ApiError> {
    let crate::cli::args::MembersCmd::Watch {
        from,
        json,
        client: c,
    } = cmd;
    let mut w = client(&c)?.watch(from).await?;
    loop {
        let next = tokio::select! {
            n = w.next() => n,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(e)) => {
                let line = if json {
                    output::event_json(&e).to_string()
                } else {
                    output::event_line(&e)
                };
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    return Ok(());
                }
            }
        }
    }
}
