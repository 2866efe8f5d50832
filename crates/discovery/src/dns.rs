//! `dns`: peers from A, AAAA (with a configured port) or SRV records (host:port, deduplicated).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::{clean, DiscoveryError, Strategy};

/// Which records name the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    A,
    Aaaa,
    Srv,
}

impl std::str::FromStr for DnsRecord {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "a" => Ok(DnsRecord::A),
            "aaaa" => Ok(DnsRecord::Aaaa),
            "srv" => Ok(DnsRecord::Srv),
            other => Err(format!("unknown DNS record type {other:?} (a, aaaa, srv)")),
        }
    }
}

/// Resolves `name`: A/AAAA answers become `IP:port`; SRV answers become `IP:srv-port`, the
/// target resolved through the same resolver, duplicates removed.
pub struct Dns {
    name: String,
    record: DnsRecord,
    port: u16,
    timeout: Duration,
    resolver: TokioResolver,
}

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "dns",
        message,
    }
}

impl Dns {
    /// `nameserver` overrides the system's resolvers (`/etc/resolv.conf`).
    pub fn new(
        name: impl Into<String>,
        record: DnsRecord,
        port: u16,
        nameserver: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<Dns, DiscoveryError> {
        let name = name.into();
        if name.is_empty() {
            return Err(failed("no name to resolve (--dns-name)".into()));
        }
        if record != DnsRecord::Srv && port == 0 {
            return Err(failed("A and AAAA records need a port (--dns-port)".into()));
        }
        let mut builder = match nameserver {
            Some(ns) => {
                let mut cfg = NameServerConfig::udp_and_tcp(ns.ip());
                for c in &mut cfg.connections {
                    c.port = ns.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![cfg]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| failed(format!("no system resolver: {e}")))?,
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        // Discovery asks every round: never serve an old answer.
        opts.cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| failed(format!("resolver: {e}")))?;
        Ok(Dns {
            name,
            record,
            port,
            timeout,
            resolver,
        })
    }

    /// One query, bounded by the timeout.
    async fn lookup(
        &self,
        name: &str,
        kind: RecordType,
    ) -> Result<hickory_resolver::lookup::Lookup, DiscoveryError> {
        tokio::time::timeout(self.timeout, self.resolver.lookup(name, kind))
            .await
            .map_err(|_| DiscoveryError::Timeout {
                strategy: "dns",
                timeout: self.timeout,
            })?
            .map_err(|e| failed(format!("{name} {kind}: {e}")))
    }

    async fn ips(&self, name: &str, kind: RecordType) -> Result<Vec<IpAddr>, DiscoveryError> {
        let answer = self.lookup(name, kind).await?;
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Strategy for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        let addrs = match self.record {
            DnsRecord::A | DnsRecord::Aaaa => {
                let kind = if self.record == DnsRecord::A {
                    RecordType::A
                } else {
                    RecordType::AAAA
                };
                self.ips(&self.name, kind)
                    .await?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port).to_string())
                    .collect::<Vec<_>>()
            }
            DnsRecord::Srv => {
                let answer = self.lookup(&self.name, RecordType::SRV).await?;
                let mut targets: Vec<(String, u16)> = answer
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(s) => Some((s.target.to_utf8(), s.port)),
                        _ => None,
                    })
                    .collect();
                targets.sort();
                targets.dedup();
                let mut out = Vec::new();
                for (target, port) in targets {
                    if port == 0 {
                        return Err(DiscoveryError::BadAnswer {
                            strategy: "dns",
                            answer: target,
                            message: "SRV port 0".into(),
                        });
                    }
                    let mut ips = self.ips(&target, RecordType::A).await.unwrap_or_default();
                    if ips.is_empty() {
                        ips = self.ips(&target, RecordType::AAAA).await?;
                    }
                    let ip = ips.first().ok_or_else(|| DiscoveryError::BadAnswer {
                        strategy: "dns",
                        answer: target.clone(),
                        message: "SRV target has no address".into(),
                    })?;
                    out.push(SocketAddr::new(*ip, port).to_string());
                }
                out
            }
        };
        clean("dns", addrs)
    }
}
