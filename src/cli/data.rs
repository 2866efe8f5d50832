//! `ekka lock ...` and `ekka kv ...`: the data commands. Output and exit codes follow CONTRACT.md.

use std::io::Write;

use ekka::types::{KvEntry, KvEvent};
use ekka::ApiError;
use serde_json::json;

use crate::cli::args::{AcquireArgs, KvCmd, LockCmd};
use crate::cli::cluster::client;

/// Prints one line and flushes; `false` when stdout is gone (the reader quit).
pub(crate) fn emit(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// A new owner id for a one-off acquire: host, process and a random part.
fn new_owner() -> String {
    let host = Some(crate::cli::config::hostname())
        .filter(|h| !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "ekka".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Takes the lock `a` names, as `a.owner` or a new owner; the client used and the grant.
async fn acquire(a: &AcquireArgs) -> Result<(ekka::Client, ekka::LockGrant), ApiError> {
    let owner = a.owner.clone().unwrap_or_else(new_owner);
    let cl = client(&a.client)?;
    let g = cl
        .lock_acquire(&a.resource, &owner, a.ttl, a.wait.unwrap_or_default())
        .await?;
    Ok((cl, g))
}

pub async fn lock(cmd: LockCmd) -> Result<(), ApiError> {
    match cmd {
        LockCmd::Acquire(a) => {
            let (_, g) = acquire(&a).await?;
            println!("{}", g.token);
        }
        LockCmd::Hold(a) => {
            let (cl, g) = acquire(&a).await?;
            let (resource, ttl) = (a.resource, a.ttl);
            if !emit(&g.token.to_string()) {
                cl.lock_release(&resource, g.token).await?;
                return Ok(());
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| ApiError::new(ekka::ErrorCode::Internal, e.to_string()))?;
            let period = (ttl / 3).max(std::time::Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                }
                match cl.lock_renew(&resource, g.token, None).await {
                    Ok(_) => {}
                    // Lost (the lease ran out while cut off): say so and stop.
                    Err(e) if e.code == ekka::ErrorCode::LockNotHeld => return Err(e),
                    Err(e) => tracing::warn!(error = %e, "renewal failed; retrying"),
                }
            }
            cl.lock_release(&resource, g.token).await?;
            println!("released");
        }
        LockCmd::Renew {
            resource,
            token,
            ttl,
            client: c,
        } => {
            client(&c)?.lock_renew(&resource, token, ttl).await?;
            println!("renewed");
        }
        LockCmd::Status {
            resource,
            client: c,
        } => {
            let st = client(&c)?.lock_status(&resource).await?;
            let (owner, token, expires_ms) = match st.holder {
                Some((o, t, e)) => (json!(o), json!(t), json!(e)),
                None => (json!(null), json!(null), json!(null)),
            };
            let v = json!({
                "resource": resource,
                "revision": st.revision,
                "owner": owner,
                "token": token,
                "expires_ms": expires_ms,
                "waiters": st.waiters,
            });
            println!("{v}");
        }
        LockCmd::Release {
            resource,
            token,
            client: c,
        } => {
            client(&c)?.lock_release(&resource, token).await?;
            println!("released");
        }
    }
    Ok(())
}

fn entry_json(key: &str, e: &KvEntry) -> serde_json::Value {
    json!({
        "key": key,
        "value": text(&e.value),
        "create_revision": e.create_revision,
        "mod_revision": e.mod_revision,
        "version": e.version,
    })
}

fn event_json(e: &KvEvent) -> serde_json::Value {
    match &e.value {
        Some(v) => json!({"revision": e.revision, "event": "put", "key": e.key, "value": text(v)}),
        None => json!({"revision": e.revision, "event": "delete", "key": e.key}),
    }
}

fn event_line(e: &KvEvent) -> String {
    match &e.value {
        Some(v) => format!("{} put {} {}", e.revision, e.key, text(v)),
        None => format!("{} delete {}", e.revision, e.key),
    }
}

pub async fn kv(cmd: KvCmd) -> Result<(), ApiError> {
    match cmd {
        KvCmd::Put {
            key,
            value,
            client: c,
        } => {
            let rev = client(&c)?.kv_put(&key, value.into_bytes()).await?;
            println!("{rev}");
        }
        KvCmd::Get {
            key,
            json,
            stale,
            client: c,
        } => {
            let e = client(&c)?.kv_get(&key, stale).await?;
            if json {
                println!("{}", entry_json(&key, &e));
            } else {
                println!("{}", text(&e.value));
            }
        }
        KvCmd::Delete { key, client: c } => match client(&c)?.kv_delete(&key).await? {
            Some(_) => println!("deleted"),
            None => println!("ignored: no key {key}"),
        },
        KvCmd::Cas {
            key,
            rev,
            value,
            client: c,
        } => {
            let r = client(&c)?
                .kv_cas(&key, rev, Some(value.into_bytes()))
                .await?;
            println!("{r}");
        }
        KvCmd::List {
            prefix,
            json,
            stale,
            client: c,
        } => {
            let r = client(&c)?.kv_range(&prefix, 0, stale).await?;
            for (k, e) in &r.entries {
                let line = if json {
                    entry_json(k, e).to_string()
                } else {
                    format!("{k} {}", text(&e.value))
                };
                if !emit(&line) {
                    return Ok(());
                }
            }
            if r.more {
                eprintln!("more keys match {prefix:?}; the answer stops at the limit");
            }
        }
        KvCmd::Watch {
            prefix,
            from,
            json,
            client: c,
        } => {
            let mut w = client(&c)?.kv_watch(&prefix, from).await?;
            loop {
                let next = tokio::select! {
                    n = w.next() => n,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                let e = match next {
                    None => return Ok(()),
                    Some(r) => r?,
                };
                let line = if json {
                    event_json(&e).to_string()
                } else {
                    event_line(&e)
                };
                if !emit(&line) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
