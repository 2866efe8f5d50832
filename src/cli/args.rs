//! The command line, as CONTRACT.md fixes it (clap derive; every option also reads `EKKA_*`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "ekka",
    version,
    about = "Raft-based cluster membership agent and CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Runs one node in the foreground until SIGINT/SIGTERM.
    Agent(Box<AgentArgs>),
    /// Cluster membership commands.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Membership events.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Starts a local N-node cluster as child processes and shows its live status.
    Up(UpArgs),
    /// Lease locks with fencing tokens.
    #[command(subcommand)]
    Lock(LockCmd),
    /// The small replicated key-value space.
    #[command(subcommand)]
    Kv(KvCmd),
}

/// Agent options: the flags (and `EKKA_*` env) and, by the same struct, the TOML file's keys.
/// All are optional so that a flag given can be told apart from the file's value; defaults are
/// applied after merging (see `config.rs`).
#[derive(Args, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML file with the same keys as the flags (data_dir, listen, ...).
    #[arg(long, env = "EKKA_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Unique member name [default: hostname].
    #[arg(long, env = "EKKA_NAME")]
    pub name: Option<String>,
    /// gRPC address; port 0 picks a free port [default: 127.0.0.1:4370].
    #[arg(long, env = "EKKA_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address given to peers [default: the bound address].
    #[arg(long, env = "EKKA_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// HTTP address for /metrics, /health, /ready, /status and / [default: off].
    #[arg(long, env = "EKKA_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Data directory [default: ./ekka-data].
    #[arg(long, env = "EKKA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shared cluster secret [default: a fixed default, with a warning; refused on an address
    /// other hosts can reach unless TLS is on].
    #[arg(long, env = "EKKA_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// PEM certificate of this agent: with --tls-key and --tls-ca, the gRPC port speaks mutual
    /// TLS only.
    #[arg(long, env = "EKKA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EKKA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: peers and clients must present a certificate it signed.
    #[arg(long, env = "EKKA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Discovery strategy: manual, singleton, static, dns, etcd, k8s, mcast or exec
    /// [default: manual].
    #[arg(long, env = "EKKA_DISCOVERY", value_name = "KIND")]
    pub discovery: Option<String>,
    /// Seed addresses for the static strategy.
    #[arg(long, env = "EKKA_SEEDS", value_delimiter = ',', value_name = "A,B")]
    pub seeds: Option<Vec<String>>,
    /// Most voters the cluster keeps, odd [default: 5]; used when this node bootstraps.
    #[arg(long, env = "EKKA_MAX_VOTERS")]
    pub max_voters: Option<u32>,
    /// Raft heartbeat interval [default: 50ms].
    #[arg(long, env = "EKKA_HEARTBEAT_INTERVAL", value_name = "DUR")]
    pub heartbeat_interval: Option<String>,
    /// Raft election timeout, lower bound [default: 120ms]; the upper bound is twice this.
    #[arg(long, env = "EKKA_ELECTION_TIMEOUT", value_name = "DUR")]
    pub election_timeout: Option<String>,
    /// The leader marks a member down after this long without an answer [default: 500ms].
    #[arg(long, env = "EKKA_DOWN_AFTER", value_name = "DUR")]
    pub down_after: Option<String>,
    /// A voter down this long is replaced by an up learner [default: 10s].
    #[arg(long, env = "EKKA_REPLACE_DOWN_VOTER_AFTER", value_name = "DUR")]
    pub replace_down_voter_after: Option<String>,
    /// The leader removes members down this long, learners first, never below quorum; 0 turns
    /// it off [default: 1h]. `ekka cluster autoclean DUR` changes it for the whole cluster.
    #[arg(long, env = "EKKA_AUTOCLEAN", value_name = "DUR")]
    pub autoclean: Option<String>,
    /// Snapshot every N log entries, keeping N entries after it [default: 5000].
    #[arg(long, env = "EKKA_SNAPSHOT_EVERY", value_name = "N")]
    pub snapshot_every: Option<u64>,
    /// Also snapshot once the log written since the last snapshot passes this many bytes
    /// (`64MiB`, `512KiB`, `1GiB` or a plain count) [default: 64MiB].
    #[arg(long, env = "EKKA_SNAPSHOT_LOG_BYTES", value_name = "BYTES")]
    #[serde(default, deserialize_with = "text_or_number")]
    pub snapshot_log_bytes: Option<String>,
    /// dns: the name to resolve.
    #[arg(long, env = "EKKA_DNS_NAME")]
    pub dns_name: Option<String>,
    /// dns: record type a, aaaa or srv [default: a].
    #[arg(long, env = "EKKA_DNS_TYPE", value_name = "a|aaaa|srv")]
    pub dns_type: Option<String>,
    /// dns: the agents' port for a/aaaa answers [default: this agent's listen port].
    #[arg(long, env = "EKKA_DNS_PORT")]
    pub dns_port: Option<u16>,
    /// dns: ask this server instead of the system's resolvers.
    #[arg(long, env = "EKKA_DNS_NAMESERVER", value_name = "IP:PORT")]
    pub dns_nameserver: Option<String>,
    /// exec: a shell command that prints one peer address per line.
    #[arg(long, env = "EKKA_EXEC_COMMAND", value_name = "CMD")]
    pub exec_command: Option<String>,
    /// etcd: client URLs, http://HOST:PORT.
    #[arg(
        long,
        env = "EKKA_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL,URL"
    )]
    pub etcd_endpoints: Option<Vec<String>>,
    /// etcd: key prefix [default: ekka].
    #[arg(long, env = "EKKA_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd: cluster name under the prefix [default: ekka].
    #[arg(long, env = "EKKA_ETCD_CLUSTER")]
    pub etcd_cluster: Option<String>,
    /// etcd: registration lease TTL [default: 10s].
    #[arg(long, env = "EKKA_ETCD_TTL", value_name = "DUR")]
    pub etcd_ttl: Option<String>,
    /// k8s: the service whose endpoints are the agents.
    #[arg(long, env = "EKKA_K8S_SERVICE")]
    pub k8s_service: Option<String>,
    /// k8s: namespace [default: the pod's, else default].
    #[arg(long, env = "EKKA_K8S_NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// k8s: API server URL [default: from KUBERNETES_SERVICE_HOST/PORT].
    #[arg(long, env = "EKKA_K8S_APISERVER", value_name = "URL")]
    pub k8s_apiserver: Option<String>,
    /// k8s: ip, dns or hostname [default: ip].
    #[arg(long, env = "EKKA_K8S_ADDRESS_TYPE")]
    pub k8s_address_type: Option<String>,
    /// k8s: suffix of dns/hostname names, e.g. svc.cluster.local.
    #[arg(long, env = "EKKA_K8S_SUFFIX")]
    pub k8s_suffix: Option<String>,
    /// k8s: the agents' port [default: this agent's listen port].
    #[arg(long, env = "EKKA_K8S_PORT")]
    pub k8s_port: Option<u16>,
    /// k8s: bearer token file [default: the service account's].
    #[arg(long, env = "EKKA_K8S_TOKEN_FILE", value_name = "FILE")]
    pub k8s_token_file: Option<std::path::PathBuf>,
    /// k8s: CA certificate file [default: the service account's].
    #[arg(long, env = "EKKA_K8S_CA_FILE", value_name = "FILE")]
    pub k8s_ca_file: Option<std::path::PathBuf>,
    /// mcast: multicast group [default: 239.192.0.1].
    #[arg(long, env = "EKKA_MCAST_GROUP", value_name = "IP")]
    pub mcast_group: Option<std::net::Ipv4Addr>,
    /// mcast: UDP port [default: 4369].
    #[arg(long, env = "EKKA_MCAST_PORT")]
    pub mcast_port: Option<u16>,
    /// mcast: interface address to join on [default: 0.0.0.0].
    #[arg(long, env = "EKKA_MCAST_IFACE", value_name = "IP")]
    pub mcast_iface: Option<std::net::Ipv4Addr>,
    /// mcast: cluster name carried in packets [default: ekka].
    #[arg(long, env = "EKKA_MCAST_CLUSTER")]
    pub mcast_cluster: Option<String>,
    /// Time between autocluster rounds, plus jitter [default: 1s].
    #[arg(long, env = "EKKA_RETRY_INTERVAL", value_name = "DUR")]
    pub retry_interval: Option<String>,
    /// Nodes to discover before single nodes form a cluster [default: 1].
    #[arg(long, env = "EKKA_BOOTSTRAP_EXPECT", value_name = "N")]
    pub bootstrap_expect: Option<usize>,
    /// Let this node's cluster dissolve into a strictly larger one it discovers [default: true].
    #[arg(long, env = "EKKA_AUTOHEAL", value_name = "BOOL")]
    pub autoheal: Option<bool>,
}

/// A key the file may give as a number or as text (`snapshot_log_bytes = 8388608` or `"8MiB"`).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(u64),
    }
    Ok(Option::<TextOrNumber>::deserialize(d)?.map(|v| match v {
        TextOrNumber::Text(t) => t,
        TextOrNumber::Number(n) => n.to_string(),
    }))
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The agent to talk to.
    #[arg(
        long,
        env = "EKKA_NODE",
        default_value = "127.0.0.1:4370",
        value_name = "HOST:PORT"
    )]
    pub node: String,
    /// Shared cluster secret.
    #[arg(long, env = "EKKA_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// PEM certificate to present to a TLS agent (with --tls-key and --tls-ca).
    #[arg(long, env = "EKKA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EKKA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle the agent's certificate must be signed by.
    #[arg(long, env = "EKKA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// The TLS files from the three flags: all or none (`invalid_config` otherwise).
pub fn tls_files(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    ca: &Option<PathBuf>,
) -> Result<Option<ekka::TlsFiles>, ekka::ApiError> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(ekka::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        _ => Err(ekka::ApiError::new(
            ekka::ErrorCode::InvalidConfig,
            "tls: --tls-cert, --tls-key and --tls-ca go together",
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Makes the --node agent join the cluster that ADDR belongs to.
    Join {
        addr: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Makes the --node agent leave its cluster.
    Leave {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Removes member NAME (up or down).
    ForceLeave {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Members and roles as seen by the cluster.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sets the cluster's autoclean delay (members down this long are removed; 0 turns it off).
    Autoclean {
        #[arg(value_parser = duration, value_name = "DUR")]
        delay: std::time::Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Offline: makes this data dir a one-node cluster again (when quorum is lost for good).
    Recover {
        #[arg(long, env = "EKKA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum MembersCmd {
    /// Streams membership events from revision REV (inclusive), or only new ones.
    Watch {
        #[arg(long = "from", value_name = "REV")]
        from: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Directory for the nodes' data dirs and logs.
    #[arg(long, default_value = "./ekka-up", value_name = "DIR")]
    pub dir: PathBuf,
    /// Shared cluster secret.
    #[arg(long, env = "EKKA_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
}

fn duration(v: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(v)
        .map_err(|e| format!("{v:?} is not a duration like 500ms, 10s, 2m ({e})"))
}

/// What `lock acquire` and `lock hold` take.
#[derive(Args, Debug)]
pub struct AcquireArgs {
    pub resource: String,
    /// Lease length; the lock is freed when it runs out unless renewed.
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub ttl: std::time::Duration,
    /// Wait in line this long while another owner holds it [default: 0, fail at once].
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub wait: Option<std::time::Duration>,
    /// Owner id; the same owner acquiring again gets the same token [default: a new id].
    #[arg(long, value_name = "ID")]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum LockCmd {
    /// Takes a lease lock; prints the fencing token.
    Acquire(AcquireArgs),
    /// Takes a lease lock and keeps it while running: prints the token, renews every third of
    /// the ttl, releases on SIGINT/SIGTERM. A holder killed otherwise loses it when the lease ends.
    Hold(AcquireArgs),
    /// Extends the lease held with TOKEN.
    Renew {
        resource: String,
        #[arg(long, value_name = "T")]
        token: u64,
        /// New lease length [default: the lease's own].
        #[arg(long, value_parser = duration, value_name = "DUR")]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prints the holder and the line of RES as the addressed agent sees them (JSON).
    Status {
        resource: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Releases the lock held with TOKEN.
    Release {
        resource: String,
        #[arg(long, value_name = "T")]
        token: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Writes V under K; prints the write's revision.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prints the value of K.
    Get {
        key: String,
        /// Print a JSON object with the revisions.
        #[arg(long)]
        json: bool,
        /// Read this agent's state without checking with the leader (may be behind).
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deletes K.
    Delete {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes V under K only if K is at revision R (0: K must not exist); prints the revision.
    Cas {
        key: String,
        #[arg(long = "rev", value_name = "R")]
        rev: u64,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists the keys under PREFIX as `KEY VALUE` lines.
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// One JSON object per key.
        #[arg(long)]
        json: bool,
        /// Read this agent's state without checking with the leader (may be behind).
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Streams changes under PREFIX from revision REV (inclusive), or only new ones.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long = "from", value_name = "REV")]
        from: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}
