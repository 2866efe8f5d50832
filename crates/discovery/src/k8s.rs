//! `k8s`: peers from the Kubernetes API: the EndpointSlices of a service (paginated), falling
//! back to its Endpoints object; only ready addresses count. Authenticates with the
//! service-account token and trusts its CA (or the files given instead).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{clean, DiscoveryError, Strategy};

/// The service-account directory mounted into every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How a discovered endpoint becomes a host name (ekka's `address_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    /// The pod IP.
    Ip,
    /// `a-b-c-d.<namespace>.<suffix>` (the pod's DNS name).
    Dns,
    /// `<hostname>.<service>.<namespace>.<suffix>` (a StatefulSet pod behind a headless service).
    Hostname,
}

impl std::str::FromStr for AddressType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ip" => Ok(AddressType::Ip),
            "dns" => Ok(AddressType::Dns),
            "hostname" => Ok(AddressType::Hostname),
            o => Err(format!("unknown address type {o:?} (ip, dns, hostname)")),
        }
    }
}

/// Settings of the k8s strategy.
#[derive(Clone, Debug)]
pub struct K8sConfig {
    /// `https://host:port` (or `http://` for a test server).
    pub apiserver: String,
    pub namespace: String,
    pub service: String,
    /// The agents' port, added to every discovered host.
    pub port: u16,
    pub address_type: AddressType,
    /// Appended to `dns` and `hostname` names, e.g. `svc.cluster.local`; may be empty.
    pub suffix: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl K8sConfig {
    /// Defaults from the pod's environment: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the
    /// service-account token, CA and namespace when they are mounted.
    pub fn from_pod(service: impl Into<String>, port: u16) -> K8sConfig {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .unwrap_or_else(|_| "kubernetes.default.svc".into());
        let api_port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let sa = Path::new(SERVICE_ACCOUNT_DIR);
        let existing = |f: &str| Some(sa.join(f)).filter(|p| p.exists());
        K8sConfig {
            apiserver: format!("https://{host}:{api_port}"),
            namespace: std::fs::read_to_string(sa.join("namespace"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "default".into()),
            service: service.into(),
            port,
            address_type: AddressType::Ip,
            suffix: String::new(),
            token_file: existing("token"),
            ca_file: existing("ca.crt"),
            timeout: crate::DEFAULT_TIMEOUT,
        }
    }
}

/// The k8s strategy.
pub struct K8s {
    cfg: K8sConfig,
    http: reqwest::Client,
}

fn failed(message: String) -> DiscoveryError {
    DiscoveryError::Failed {
        strategy: "k8s",
        message,
    }
}

fn bad(answer: &Value, message: &str) -> DiscoveryError {
    DiscoveryError::BadAnswer {
        strategy: "k8s",
        answer: answer.to_string().chars().take(200).collect(),
        message: message.into(),
    }
}

/// Page size asked of the API; `metadata.continue` fetches the rest.
const PAGE: usize = 100;
/// Pages read at most (a loop guard against an API that never stops paginating).
const MAX_PAGES: usize = 100;

impl K8s {
    pub fn new(cfg: K8sConfig) -> Result<K8s, DiscoveryError> {
        if cfg.service.is_empty() {
            return Err(failed("no service name (--k8s-service)".into()));
        }
        if !(cfg.apiserver.starts_with("https://") || cfg.apiserver.starts_with("http://")) {
            return Err(failed(format!(
                "apiserver {:?} is not an http(s) URL",
                cfg.apiserver
            )));
        }
        if cfg.port == 0 {
            return Err(failed("no agent port (--k8s-port)".into()));
        }
        let ca = match &cfg.ca_file {
            Some(p) => Some(
                std::fs::read(p).map_err(|e| failed(format!("CA file {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let http = crate::http_client("k8s", cfg.timeout, ca.as_deref())?;
        Ok(K8s { cfg, http })
    }

    fn token(&self) -> Result<Option<String>, DiscoveryError> {
        match &self.cfg.token_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| failed(format!("token file {}: {e}", p.display()))),
        }
    }

    /// GET `path`; `Ok(None)` on 404.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<Value>, DiscoveryError> {
        let url = format!("{}{path}", self.cfg.apiserver.trim_end_matches('/'));
        let mut req = self.http.get(&url).query(query);
        if let Some(t) = self.token()? {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                DiscoveryError::Timeout {
                    strategy: "k8s",
                    timeout: self.cfg.timeout,
                }
            } else {
                failed(format!("{url}: {e}"))
            }
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| failed(format!("{url}: {e}")))?;
        if !status.is_success() {
            let why: String = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(failed(format!("{url}: {status}: {why}")));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DiscoveryError::BadAnswer {
                strategy: "k8s",
                answer: text.chars().take(200).collect(),
                message: e.to_string(),
            })
    }

    fn host(&self, ip: &str, hostname: Option<&str>) -> Result<String, DiscoveryError> {
        let suffix = |s: String| {
            if self.cfg.suffix.is_empty() {
                s
            } else {
                format!("{s}.{}", self.cfg.suffix)
            }
        };
        Ok(match self.cfg.address_type {
            AddressType::Ip => ip.to_string(),
            AddressType::Dns => suffix(format!(
                "{}.{}",
                ip.replace(['.', ':'], "-"),
                self.cfg.namespace
            )),
            AddressType::Hostname => {
                let h = hostname.filter(|h| !h.is_empty()).ok_or_else(|| {
                    DiscoveryError::BadAnswer {
                        strategy: "k8s",
                        answer: ip.into(),
                        message: "address type hostname, but the endpoint has no hostname".into(),
                    }
                })?;
                suffix(format!("{h}.{}.{}", self.cfg.service, self.cfg.namespace))
            }
        })
    }

    fn addr(&self, host: String) -> String {
        if host.contains(':') {
            format!("[{host}]:{}", self.cfg.port)
        } else {
            format!("{host}:{}", self.cfg.port)
        }
    }

    /// Ready endpoints of every EndpointSlice of the service; `None` when the API has no slices.
    async fn read_slices(&self) -> Result<Option<Vec<String>>, DiscoveryError> {
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
            self.cfg.namespace
        );
        let selector = format!("kubernetes.io/service-name={}", self.cfg.service);
        let mut out = Vec::new();
        let mut cont = String::new();
        for _ in 0..MAX_PAGES {
            let mut q = vec![
                ("labelSelector", selector.clone()),
                ("limit", PAGE.to_string()),
            ];
            if !cont.is_empty() {
                q.push(("continue", cont.clone()));
            }
            let Some(v) = self.get(&path, &q).await? else {
                return Ok(None);
            };
            let items = v["items"].as_array().ok_or_else(|| bad(&v, "no items"))?;
            for slice in items {
                for ep in slice["endpoints"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    // Kubernetes: an absent `ready` means ready.
                    if ep["conditions"]["ready"].as_bool() == Some(false) {
                        continue;
                    }
                    let hostname = ep["hostname"].as_str();
                    for a in ep["addresses"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        let ip = a
                            .as_str()
                            .ok_or_else(|| bad(a, "address is not a string"))?;
                        out.push(self.addr(self.host(ip, hostname)?));
                    }
                }
            }
            cont = v["metadata"]["continue"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if cont.is_empty() {
                return Ok(Some(out));
            }
        }
        Err(failed(format!(
            "more than {MAX_PAGES} pages of EndpointSlices"
        )))
    }

    /// Ready addresses of the service's Endpoints object (not `notReadyAddresses`).
    async fn read_endpoints(&self) -> Result<Vec<String>, DiscoveryError> {
        let path = format!(
            "/api/v1/namespaces/{}/endpoints/{}",
            self.cfg.namespace, self.cfg.service
        );
        let Some(v) = self.get(&path, &[]).await? else {
            return Err(failed(format!(
                "service {}/{} has no endpoints",
                self.cfg.namespace, self.cfg.service
            )));
        };
        let mut out = Vec::new();
        for subset in v["subsets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            for a in subset["addresses"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let ip = a["ip"]
                    .as_str()
                    .ok_or_else(|| bad(a, "address has no ip"))?;
                out.push(self.addr(self.host(ip, a["hostname"].as_str())?));
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Strategy for K8s {
    fn name(&self) -> &'static str {
        "k8s"
    }

    async fn discover(&self) -> Result<Vec<String>, DiscoveryError> {
        let found = match self.read_slices().await? {
            Some(v) => v,
            None => self.read_endpoints().await?,
        };
        clean("k8s", found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_types_parse() {
        assert_eq!("ip".parse(), Ok(AddressType::Ip));
        assert_eq!("dns".parse(), Ok(AddressType::Dns));
        assert_eq!("hostname".parse(), Ok(AddressType::Hostname));
        assert!("pod".parse::<AddressType>().is_err());
    }
}
