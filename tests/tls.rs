//! Mutual TLS on the gRPC port (CONTRACT.md "Transport security"): agents with a certificate from
//! a CA the test makes form a cluster, join, write and fail over; plaintext clients, clients of
//! another CA and clients with an expired certificate are refused while the agent keeps serving;
//! an agent other hosts could reach, with neither a cookie nor TLS, refuses to start.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and the PEM files of certificates it signed, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// The three files of one party, as the flags take them.
struct Party {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Party {
    fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("EKKA_TLS_CERT".into(), self.cert.clone().into()),
            ("EKKA_TLS_KEY".into(), self.key.clone().into()),
            ("EKKA_TLS_CA".into(), self.ca.clone().into()),
        ]
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = p.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A certificate for 127.0.0.1 and localhost signed by this CA; `expired` dates it in 2020.
    fn party(&self, name: &str, expired: bool) -> Party {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let at = |f: &str| self.dir.path().join(format!("{name}-{f}"));
        std::fs::write(at("cert.pem"), cert.pem()).unwrap();
        std::fs::write(at("key.pem"), key.serialize_pem()).unwrap();
        Party {
            cert: at("cert.pem"),
            key: at("key.pem"),
            ca: self.dir.path().join("ca.pem"),
        }
    }
}

/// `ekka <args> --node <addr> --cookie <test cookie>`, as `who` (TLS files in its env, or none).
fn cli_as(who: Option<&Party>, addr: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--node", addr, "--cookie", COOKIE])
        .env("EKKA_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in who.map(Party::env).unwrap_or_default() {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run ekka");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn start_tls(c: &mut Cluster, name: &str, party: &Party, extra: &[&str]) {
    let dir = c.path(name);
    let agent = Agent::start_with_env(name, &dir, extra, party.env());
    c.agents.push(agent);
}

fn status_json(who: &Party, addr: &str) -> Option<serde_json::Value> {
    let out = cli_as(Some(who), addr, &["cluster", "status", "--json"]);
    (out.code == 0).then(|| serde_json::from_str(&out.stdout).ok())?
}

#[test]
fn t70_a_cluster_forms_writes_and_fails_over_over_mutual_tls() {
    let pki = Pki::new("ekka");
    let admin = pki.party("admin", false);
    let mut c = Cluster::new();
    for n in ["n1", "n2", "n3"] {
        let party = pki.party(n, false);
        start_tls(&mut c, n, &party, &["--down-after", "300ms"]);
    }
    let seed = c.get("n1").addr.clone();
    for n in ["n2", "n3"] {
        let out = cli_as(Some(&admin), &c.get(n).addr, &["cluster", "join", &seed]);
        assert!(out.ok().starts_with("joined "), "{n}: {out:?}");
    }
    let names = ["n1", "n2", "n3"];
    wait_until(Duration::from_secs(20), "three members up", || {
        status_json(&admin, &seed).is_some_and(|s| formed(&s, &names))
    });
    let out = cli_as(Some(&admin), &c.get("n2").addr, &["kv", "put", "k", "v1"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The leader goes; the others elect a new one over TLS and take writes.
    let leader = status_json(&admin, &seed).unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    c.get_mut(&leader).kill();
    let other = names.iter().find(|n| **n != leader).unwrap();
    let addr = c.get(other).addr.clone();
    wait_until(Duration::from_secs(20), "a write after failover", || {
        cli_as(Some(&admin), &addr, &["kv", "put", "k", "v2"]).code == 0
    });
    let out = cli_as(Some(&admin), &addr, &["kv", "get", "k"]);
    assert_eq!(out.ok().trim(), "v2", "{out:?}");
}

#[test]
fn t71_plaintext_foreign_and_expired_clients_are_refused_and_the_agent_serves_on() {
    let pki = Pki::new("ekka");
    let good = pki.party("client", false);
    let expired = pki.party("old-client", true);
    let other = Pki::new("other");
    let foreign = other.party("stranger", false);
    // Trusts the agent's CA, but its own certificate is the other CA's.
    let foreign_cert = Party {
        cert: foreign.cert.clone(),
        key: foreign.key.clone(),
        ca: good.ca.clone(),
    };
    let mut c = Cluster::new();
    let n1 = pki.party("n1", false);
    start_tls(&mut c, "n1", &n1, &[]);
    let addr = c.get("n1").addr.clone();
    let ok = cli_as(Some(&good), &addr, &["kv", "put", "k", "v"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    for (who, party) in [
        ("plaintext", None),
        ("foreign CA", Some(&foreign)),
        ("foreign certificate", Some(&foreign_cert)),
        ("expired", Some(&expired)),
    ] {
        let out = cli_as(party, &addr, &["kv", "get", "k"]);
        assert_ne!(out.code, 0, "{who} client was served: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{who}: {out:?}");
        assert!(!out.stdout.contains('v'), "{who}: {out:?}");
        // The agent still serves a good client.
        let out = cli_as(Some(&good), &addr, &["kv", "get", "k"]);
        assert_eq!(out.ok().trim(), "v", "after the {who} client: {out:?}");
    }
    // A client that presents no certificate at all, though it trusts the CA.
    let no_cert = Party {
        cert: good.ca.clone(),
        key: good.key.clone(),
        ca: good.ca.clone(),
    };
    let out = cli_as(Some(&no_cert), &addr, &["kv", "get", "k"]);
    assert_ne!(
        out.code, 0,
        "a client with the CA's certificate as its own: {out:?}"
    );
}

#[test]
fn t72_tls_files_are_checked_before_anything_is_bound() {
    let pki = Pki::new("ekka");
    let n1 = pki.party("n1", false);
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    let junk = d.path().join("junk.pem");
    std::fs::write(&junk, "no pem here").unwrap();
    let cert = n1.cert.to_str().unwrap();
    let key = n1.key.to_str().unwrap();
    let junk = junk.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        // Not all three.
        vec!["--tls-cert", cert, "--tls-key", key],
        // A key file that holds no key; a CA file that holds no certificate.
        vec!["--tls-cert", cert, "--tls-key", junk, "--tls-ca", cert],
        vec!["--tls-cert", cert, "--tls-key", key, "--tls-ca", junk],
        vec![
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            "/nonexistent/ca.pem",
        ],
    ];
    for extra in cases {
        let mut args = vec!["agent", "--listen", "127.0.0.1:0", "--data-dir", data];
        args.extend(&extra);
        let out = run(&args);
        assert_eq!(out.code, 2, "{extra:?}: {out:?}");
        assert!(
            out.stderr.contains("error: invalid_config: tls"),
            "{extra:?}: {out:?}"
        );
        assert!(!out.stdout.contains("listening on"), "{extra:?}: {out:?}");
    }
}

#[test]
fn t73_no_cookie_and_no_tls_on_an_address_others_reach_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    // Refused before anything is bound: nothing listens on 0.0.0.0 in this test.
    let out = run(&["agent", "--listen", "0.0.0.0:0", "--data-dir", data]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("error: invalid_config: listen: 0.0.0.0:0 can be reached"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("listening on"), "{out:?}");
    assert!(!Path::new(data).join("EKKA_DATA").exists(), "{out:?}");
}
