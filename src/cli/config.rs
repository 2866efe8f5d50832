//! Agent configuration: flags and `EKKA_*` env override the TOML file, which overrides defaults.
//! Everything is validated before anything binds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use ekka::{ApiError, ErrorCode, NodeConfig};
use ekka_node::discovery::{
    Dns, DnsRecord, Etcd, EtcdConfig, Exec, K8s, K8sConfig, Mcast, McastConfig, Static, Strategy,
};
use ekka_node::Discovery;

use crate::cli::args::AgentArgs;

/// The merged agent configuration.
#[derive(Debug)]
pub struct AgentConfig {
    pub node: NodeConfig,
    pub http: Option<String>,
    pub default_cookie: bool,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidConfig, m)
}

fn duration(key: &str, v: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(v)
        .map_err(|e| invalid(format!("{key}: {v:?} is not a duration ({e})")))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `100B` or a plain number of bytes.
fn byte_count(key: &str, v: &str) -> Result<u64, ApiError> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(invalid(format!(
                "{key}: {v:?} is not a byte count (like 64MiB)"
            )))
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| invalid(format!("{key}: {v:?} is not a byte count (like 64MiB)")))
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ekka".into())
}

/// The flags and env over the TOML file: both are an [`AgentArgs`], merged key by key (a flag
/// given replaces the file's key). Unknown keys in the file are an error.
fn merge_file(args: AgentArgs) -> Result<AgentArgs, ApiError> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let bad = |e: &dyn std::fmt::Display| invalid(format!("config {}: {e}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(&e))?;
    let mut keys: toml::Table = toml::from_str(&text).map_err(|e| bad(&e.message()))?;
    // Flags not given are `None`, which TOML has no value for: they leave the file's key.
    let flags = toml::Table::try_from(&args).map_err(|e| bad(&e))?;
    keys.extend(flags);
    // The error names the key whose value is wrong.
    let mut merged: AgentArgs = serde_path_to_error::deserialize(keys).map_err(|e| {
        let key = e.path().to_string();
        bad(&format!("{key}: {}", e.into_inner().message()))
    })?;
    merged.config = Some(path);
    Ok(merged)
}

/// Merges flags/env over the file over defaults, and validates the result.
pub fn load(args: AgentArgs) -> Result<AgentConfig, ApiError> {
    let args = merge_file(args)?;
    let name = args.name.unwrap_or_else(hostname);
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./ekka-data"));
    let mut node = NodeConfig::new(name, data_dir);
    if let Some(l) = args.listen {
        node.listen = l;
    }
    node.advertise = args.advertise;
    let cookie = args.cookie;
    let default_cookie = cookie.is_none();
    if let Some(c) = cookie {
        node.cookie = c;
    }
    node.tls = crate::cli::args::tls_files(&args.tls_cert, &args.tls_key, &args.tls_ca)?;
    let kind = args.discovery.clone().unwrap_or_else(|| "manual".into());
    let seeds = args.seeds.clone().unwrap_or_default();
    let timeout = ekka_node::discovery::DEFAULT_TIMEOUT;
    // dns and k8s default the agents' port to this agent's own listen port.
    let listen_port = node
        .listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.port())
        .unwrap_or(0);
    let strategy: Option<Arc<dyn Strategy>> = match kind.as_str() {
        "manual" => None,
        "singleton" => {
            node.singleton = true;
            None
        }
        "static" => {
            if seeds.is_empty() {
                return Err(invalid("seeds: the static strategy needs --seeds A,B"));
            }
            let s = Static::new(seeds).map_err(|e| invalid(format!("seeds: {e}")))?;
            Some(Arc::new(s))
        }
        "dns" => {
            let name = args.dns_name.clone()
                .ok_or_else(|| invalid("dns_name: the dns strategy needs --dns-name"))?;
            let record: DnsRecord = args.dns_type.clone()
                .unwrap_or_else(|| "a".into())
                .parse()
                .map_err(|e: String| invalid(format!("dns_type: {e}")))?;
            let port = args.dns_port.unwrap_or(listen_port);
            let ns = match args.dns_nameserver.clone() {
                Some(n) => Some(n.parse::<std::net::SocketAddr>().map_err(|e| {
                    invalid(format!("dns_nameserver: {n:?} is not IP:PORT ({e})"))
                })?),
                None => None,
            };
            let d = Dns::new(name, record, port, ns, timeout)
                .map_err(|e| invalid(format!("dns: {e}")))?;
            Some(Arc::new(d))
        }
        "exec" => {
            let cmd = args.exec_command.clone()
                .ok_or_else(|| invalid("exec_command: the exec strategy needs --exec-command"))?;
            Some(Arc::new(Exec::new(cmd, timeout)))
        }
        "etcd" => {
            let endpoints = args.etcd_endpoints.clone()
                .unwrap_or_default();
            let ttl = match args.etcd_ttl.clone() {
                Some(t) => duration("etcd_ttl", &t)?,
                None => std::time::Duration::from_secs(10),
            };
            let cfg = EtcdConfig {
                endpoints,
                prefix: args.etcd_prefix.clone()
                    .unwrap_or_else(|| "ekka".into()),
                cluster: args.etcd_cluster.clone()
                    .unwrap_or_else(|| "ekka".into()),
                addr: node.advertise.clone().unwrap_or_else(|| node.listen.clone()),
                ttl,
                lock_timeout: std::time::Duration::from_secs(10),
                timeout,
            };
            let e = Etcd::new(cfg).map_err(|e| invalid(format!("etcd: {e}")))?;
            Some(Arc::new(e))
        }
        "k8s" => {
            let service = args.k8s_service.clone()
                .ok_or_else(|| invalid("k8s_service: the k8s strategy needs --k8s-service"))?;
            let mut k = K8sConfig::from_pod(service, args.k8s_port.unwrap_or(listen_port));
            if let Some(v) = args.k8s_namespace.clone() {
                k.namespace = v;
            }
            if let Some(v) = args.k8s_apiserver.clone() {
                k.apiserver = v;
            }
            if let Some(v) = args.k8s_address_type.clone() {
                k.address_type = v
                    .parse()
                    .map_err(|e: String| invalid(format!("k8s_address_type: {e}")))?;
            }
            if let Some(v) = args.k8s_suffix.clone() {
                k.suffix = v;
            }
            if let Some(v) = args.k8s_token_file.clone() {
                k.token_file = Some(v);
            }
            if let Some(v) = args.k8s_ca_file.clone() {
                k.ca_file = Some(v);
            }
            let k = K8s::new(k).map_err(|e| invalid(format!("k8s: {e}")))?;
            Some(Arc::new(k))
        }
        "mcast" => {
            let m = McastConfig {
                group: args.mcast_group
                    .unwrap_or(std::net::Ipv4Addr::new(239, 192, 0, 1)),
                port: args.mcast_port.unwrap_or(4369),
                iface: args.mcast_iface
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                ttl: 1,
                cluster: args.mcast_cluster.clone()
                    .unwrap_or_else(|| "ekka".into()),
                cookie: node.cookie.clone(),
                wait: std::time::Duration::from_millis(500),
            };
            let m = Mcast::new(m).map_err(|e| invalid(format!("mcast: {e}")))?;
            Some(Arc::new(m))
        }
        other => {
            return Err(invalid(format!(
                "discovery: unknown kind {other:?} (manual, singleton, static, dns, etcd, k8s, mcast, exec)"
            )))
        }
    };
    node.discovery = strategy.map(Discovery);
    if let Some(v) = args.retry_interval.clone() {
        node.retry_interval = duration("retry_interval", &v)?;
    }
    if let Some(v) = args.bootstrap_expect {
        node.bootstrap_expect = v;
    }
    if let Some(v) = args.autoheal {
        node.autoheal = v;
    }
    if let Some(v) = args.max_voters {
        node.max_voters = v;
    }
    if let Some(v) = args.heartbeat_interval {
        node.heartbeat_interval = duration("heartbeat_interval", &v)?;
    }
    if let Some(v) = args.election_timeout {
        node.election_timeout_min = duration("election_timeout", &v)?;
        node.election_timeout_max = node.election_timeout_min * 2;
    }
    if let Some(v) = args.down_after {
        node.down_after = duration("down_after", &v)?;
    }
    if let Some(v) = args.replace_down_voter_after.clone() {
        node.replace_down_voter_after = duration("replace_down_voter_after", &v)?;
    }
    if let Some(v) = args.autoclean.clone() {
        node.autoclean = duration("autoclean", &v)?;
    }
    if let Some(n) = args.snapshot_every {
        node.snapshot_every = n;
    }
    if let Some(v) = &args.snapshot_log_bytes {
        node.snapshot_log_bytes = byte_count("snapshot_log_bytes", v)?;
    }
    let http = args.http;
    if let Some(h) = &http {
        h.parse::<std::net::SocketAddr>()
            .map_err(|e| invalid(format!("http: {h:?} is not IP:PORT ({e})")))?;
    }
    node.validate()?;
    if default_cookie && node.tls.is_none() && reachable_from_others(&node.listen) {
        return Err(invalid(format!(
            "listen: {} can be reached from other hosts, and with neither a cookie nor TLS \
             anyone there could read and write the cluster: set --cookie (or EKKA_COOKIE), or \
             --tls-cert, --tls-key and --tls-ca",
            node.listen
        )));
    }
    check_data_dir(&node.data_dir)?;
    Ok(AgentConfig {
        node,
        http,
        default_cookie,
    })
}

/// Whether an agent listening on `listen` (`IP:PORT`, checked) takes connections from other
/// hosts: any address but a loopback one.
fn reachable_from_others(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback())
}

/// The data dir must be a directory we can write (created if missing).
fn check_data_dir(dir: &Path) -> Result<(), ApiError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| invalid(format!("data_dir: cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(".ekka-write-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| invalid(format!("data_dir: {} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> AgentArgs {
        AgentArgs {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn the_snapshot_log_budget_reads_units_from_flags_and_numbers_from_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ekka.toml");
        std::fs::write(&f, "snapshot_log_bytes = 8388608\n").unwrap();
        let mut a = args(d.path());
        a.config = Some(f.clone());
        assert_eq!(load(a).unwrap().node.snapshot_log_bytes, 8 << 20);
        std::fs::write(&f, "snapshot_log_bytes = \"16MiB\"\n").unwrap();
        let mut a = args(d.path());
        a.config = Some(f);
        assert_eq!(load(a).unwrap().node.snapshot_log_bytes, 16 << 20);
        let mut a = args(d.path());
        a.snapshot_log_bytes = Some("1GiB".into());
        assert_eq!(load(a).unwrap().node.snapshot_log_bytes, 1 << 30);
        for bad in ["64MB", "lots", "1KiB"] {
            let mut a = args(d.path());
            a.snapshot_log_bytes = Some(bad.into());
            let e = load(a).unwrap_err();
            assert!(e.message.contains("snapshot_log_bytes"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_fail() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ekka.toml");
        std::fs::write(&f, "name = \"from-file\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let mut a = args(d.path());
        a.config = Some(f.clone());
        a.name = Some("from-flag".into());
        let c = load(a).unwrap();
        assert_eq!(c.node.name, "from-flag");
        assert_eq!(c.node.listen, "127.0.0.1:0");
        assert!(c.default_cookie);

        std::fs::write(&f, "nmae = \"typo\"\n").unwrap();
        let mut a = args(d.path());
        a.config = Some(f);
        let e = load(a).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("nmae"), "{e}");
    }

    #[test]
    fn bad_values_are_invalid_config() {
        let d = tempfile::tempdir().unwrap();
        for (f, bad) in [
            ("listen", "not-an-address"),
            ("discovery", "carrier-pigeon"),
            ("down_after", "soon"),
        ] {
            let mut a = args(d.path());
            match f {
                "listen" => a.listen = Some(bad.into()),
                "discovery" => a.discovery = Some(bad.into()),
                _ => a.down_after = Some(bad.into()),
            }
            let e = load(a).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{f}");
            assert!(e.message.starts_with(f), "{e}");
        }
    }

    #[test]
    fn every_kind_of_key_reads_from_the_file_and_a_wrong_type_names_its_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ekka.toml");
        std::fs::write(
            &f,
            "discovery = \"mcast\"\nmcast_group = \"239.192.0.9\"\nmcast_port = 4999\n\
             autoheal = false\nseeds = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n\
             down_after = \"2s\"\n",
        )
        .unwrap();
        let mut a = args(d.path());
        a.config = Some(f.clone());
        a.mcast_port = Some(5000);
        let c = load(a).unwrap();
        assert!(!c.node.autoheal);
        assert_eq!(c.node.down_after, Duration::from_secs(2));
        assert!(c.node.discovery.is_some());

        std::fs::write(&f, "max_voters = \"five\"\n").unwrap();
        let mut a = args(d.path());
        a.config = Some(f);
        let e = load(a).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("max_voters"), "{e}");
    }
}
