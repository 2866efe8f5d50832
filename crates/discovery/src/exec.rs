//! `exec`: a user command that prints one peer address per line.

use std::process::Stdio;
use std::time::Duration;

use crate::{clean, DiscoveryError, Strategy};

/// Runs `sh -c COMMAND`; every non-empty output line is a `HOST:PORT`. A non-zero exit, a bad
/// line or no answer within the timeout is an error.
#[derive(Clone, Debug)]
pub struct Exec {
    command: String,
    timeout: Duration,
}

impl Exec {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Exec {
        Exec {
            command: command.into(),
            timeout,
        }
    }
}

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "exec",
        message,
    }
}

#[async_trait::async_trait]
impl Strategy for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.timeout, child)
            .await
            .map_err(|_| DiscoveryError::Timeout {
                strategy: "exec",
                timeout: self.timeout,
            })?
            .map_err(|e| failed(format!("cannot run {:?}: {e}", self.command)))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(failed(format!(
                "{:?} exited with {}: {}",
                self.command,
                out.status,
                err.trim()
            )));
        }
        let text = String::from_utf8(out.stdout)
            .map_err(|_| failed(format!("{:?} printed non-UTF-8 output", self.command)))?;
        clean(
            "exec",
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prints_addresses() {
        let e = Exec::new(
            "printf '127.0.0.1:2\\n\\n127.0.0.1:1\\n'",
            Duration::from_secs(5),
        );
        assert_eq!(e.discover().await.unwrap(), ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[tokio::test]
    async fn failures_are_errors() {
        let bad_line = Exec::new("echo not-an-address", Duration::from_secs(5));
        assert!(matches!(
            bad_line.discover().await,
            Err(DiscoveryError::BadAnswer { .. })
        ));
        let exit = Exec::new("echo oops >&2; exit 3", Duration::from_secs(5));
        let e = exit.discover().await.unwrap_err();
        assert!(e.to_string().contains("oops"), "{e}");
        let slow = Exec::new("sleep 5", Duration::from_millis(100));
        assert!(matches!(
            slow.discover().await,
            Err(DiscoveryError::Timeout { .. })
        ));
    }
}
