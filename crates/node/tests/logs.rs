//! Nodes sharing a process log inside their own span: every line says which node wrote it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ekka_node::{JoinOutcome, Node, NodeConfig};

/// Log lines, as the subscriber writes them.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn node(dir: &tempfile::TempDir, name: &str) -> Node {
    let mut c = NodeConfig::new(name, dir.path().join(name));
    c.listen = "127.0.0.1:0".into();
    c.cookie = "logs-test".into();
    Node::start(c).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_names_its_node() {
    let lines = Lines::default();
    let out = lines.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || out.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(&dir, "n1").await;
    let n2 = node(&dir, "n2").await;
    let joined = n2.join(&n1.local_addr().to_string()).await.unwrap();
    assert!(matches!(joined, JoinOutcome::Joined { .. }), "{joined:?}");
    n2.shutdown().await;
    n1.shutdown().await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("ekka_node")).collect();
    // Both bootstraps, n2's join and the leader's side of it were logged.
    for (node, what) in [
        ("n1", "bootstrapped a one-node cluster"),
        ("n2", "bootstrapped a one-node cluster"),
        ("n2", "joined"),
    ] {
        assert!(
            ours.iter()
                .any(|l| l.contains(&format!("node{{node={node}}}")) && l.contains(what)),
            "no line of {node} saying {what:?} in:\n{text}"
        );
    }
    let bare: Vec<&&str> = ours.iter().filter(|l| !l.contains("node{node=n")).collect();
    assert!(bare.is_empty(), "lines without a node: {bare:#?}");
}
