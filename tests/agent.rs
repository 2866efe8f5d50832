//! The agent process itself: configuration errors, the cookie, hostile bytes on its port, singleton.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn t30_invalid_config_exits_2_before_binding() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["agent", "--listen", "not-an-address", "--data-dir", data],
        vec!["agent", "--name", "bad name", "--data-dir", data],
        vec!["agent", "--discovery", "smoke-signals", "--data-dir", data],
        vec!["agent", "--max-voters", "4", "--data-dir", data],
    ];
    for args in cases {
        let out = run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .trim_end()
                .lines()
                .last()
                .unwrap()
                .starts_with("error: invalid_config: "),
            "{out:?}"
        );
        assert!(!out.stdout.contains("listening on"), "{out:?}");
    }
    let toml = d.path().join("ekka.toml");
    std::fs::write(&toml, "listen = \"127.0.0.1:0\"\nno_such_key = 1\n").unwrap();
    let out = run(&[
        "agent",
        "--config",
        toml.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no_such_key"), "{out:?}");
}

#[test]
fn t30b_a_port_in_use_exits_2_before_the_data_dir_is_touched() {
    let d = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (i, flag) in ["--listen", "--http"].into_iter().enumerate() {
        let data = d.path().join(format!("data{i}"));
        let mut args = vec!["agent", "--data-dir", data.to_str().unwrap()];
        if flag == "--http" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend([flag, &taken]);
        let out = run(&args);
        assert_eq!(out.code, 2, "{flag}: {out:?}");
        assert!(
            out.stderr.contains("error: invalid_config: ") && out.stderr.contains("cannot bind"),
            "{flag}: {out:?}"
        );
        assert!(!out.stdout.contains("listening on"), "{flag}: {out:?}");
        // The config check may create the dir (it must be writable); nothing is written in it.
        let held: Vec<_> = std::fs::read_dir(&data)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(held.is_empty(), "{flag}: the data dir holds {held:?}");
    }
}

#[test]
fn t31_data_dir_in_use_is_refused() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    let dir = c.get("n1").data_dir.clone();
    let out = run(&[
        "agent",
        "--name",
        "n9",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("error: invalid_config: "), "{out:?}");
    assert_eq!(running(&c.get("n1").status()), ["n1"]);
}

#[test]
fn t32_foreign_data_dir_is_refused_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let precious = d.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let out = run(&[
        "agent",
        "--name",
        "n1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

#[test]
fn t33_wrong_cookie_is_unauthenticated_and_changes_nothing() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    c.start("n2", &[]);
    let n1 = c.get("n1");
    let out = run(&["cluster", "status", "--node", &n1.addr, "--cookie", "wrong"]);
    assert_eq!(out.err_code(), "unauthenticated");
    let out = run(&[
        "cluster",
        "join",
        &c.get("n2").addr,
        "--node",
        &n1.addr,
        "--cookie",
        "wrong",
    ]);
    assert_eq!(out.err_code(), "unauthenticated");
    // A node with another cookie cannot join either.
    let mut other = Cluster::new();
    let d = other.path("x");
    let stranger = Agent::start("x", &d, &["--cookie", "another-cookie"]);
    let out = run(&[
        "cluster",
        "join",
        &n1.addr,
        "--node",
        &stranger.addr,
        "--cookie",
        "another-cookie",
    ]);
    assert_eq!(out.err_code(), "unauthenticated");
    assert_eq!(running(&n1.status()), ["n1"]);
    other.agents.clear();
    let log = std::fs::read_to_string(&c.get("n1").log).unwrap();
    assert!(log.contains("wrong cookie"), "refusals are logged");
}

#[test]
fn t34_garbage_on_the_grpc_port_does_not_crash_the_agent() {
    let mut c = Cluster::new();
    c.start("n1", &[]);
    let addr = c.get("n1").addr.clone();
    let payloads: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02\x03garbage\xff\xfe",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x00\xff\xff\xff",
        &[0xAAu8; 70_000],
    ];
    for p in payloads {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = s.write_all(p);
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    }
    assert!(c.get_mut("n1").is_running());
    assert_eq!(running(&c.get("n1").status()), ["n1"]);
}

#[test]
fn t35_singleton_refuses_join_both_ways() {
    let mut c = Cluster::new();
    c.start("s1", &["--discovery", "singleton"]);
    c.start("n2", &[]);
    let (s1, n2) = (c.get("s1"), c.get("n2"));
    assert_eq!(
        s1.cli(&["cluster", "join", &n2.addr]).err_code(),
        "singleton"
    );
    assert_eq!(
        n2.cli(&["cluster", "join", &s1.addr]).err_code(),
        "singleton"
    );
    assert_eq!(running(&s1.status()), ["s1"]);
    assert_eq!(running(&n2.status()), ["n2"]);
}

#[test]
fn t36_http_port_serves_health_status_and_metrics() {
    let mut c = Cluster::new();
    let d = c.path("n1");
    let a = Agent::start("n1", &d, &["--http", "127.0.0.1:0"]);
    let line = a.next_line().expect("http line");
    let http = line
        .strip_prefix("http on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    assert!(get("/ready").starts_with("HTTP/1.1 200"));
    let status = get("/status");
    let body = status.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(running(&v), ["n1"]);
    assert!(get("/metrics").contains("ekka_members_up 1"));
    assert!(get("/").contains("<pre>"));
    c.agents.push(a);
}

#[test]
fn t37_up_forms_a_cluster_and_stops_it_on_ctrl_c() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["up", "--nodes", "3", "--cookie", COOKIE, "--dir"])
        .arg(d.path())
        .env("EKKA_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let done = l.starts_with("cluster of 3 formed in ");
        seen.push(l);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("n3 joined cluster ")),
        "{seen:?}"
    );
    // The table follows: three members, all up voters.
    let table: Vec<String> = lines
        .by_ref()
        .map(|l| l.unwrap())
        .skip_while(|l| !l.starts_with("NAME"))
        .take(4)
        .collect();
    assert_eq!(table.len(), 4, "{table:?}");
    assert!(
        table[1..]
            .iter()
            .all(|l| l.contains("voter") && l.ends_with("up")),
        "{table:?}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for n in ["n1", "n2", "n3"] {
        assert!(rest.contains(&format!("stopped {n}")), "{rest:?}");
    }
}
