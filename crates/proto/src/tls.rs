//! Mutual TLS on the gRPC port: the three PEM files an agent or a client is given
//! ([`TlsFiles`]), read and checked once ([`TlsFiles::load`]), and the tonic endpoint and server
//! configurations built from them. Every side presents its certificate and accepts only peers
//! whose certificate the CA signed; a client also checks that the server's certificate names the
//! host it dialled (an IP address or a DNS name in its subject alternative names).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Where a node's or a client's certificate, key and CA bundle are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// PEM certificate (chain) presented to the other side.
    pub cert: PathBuf,
    /// Its PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle: the other side's certificate must be signed by one of these.
    pub ca: PathBuf,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct TlsError {
    what: &'static str,
    path: PathBuf,
    reason: String,
}

/// The TLS material, loaded and checked: what endpoints and servers are configured with.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The certificates in `pem`; an error unless there is at least one and each parses.
fn certs(what: &'static str, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(())
}

impl TlsFiles {
    /// Reads the three files and checks that each holds what it should.
    pub fn load(&self) -> Result<Tls, TlsError> {
        let cert = read("tls cert", &self.cert)?;
        certs("tls cert", &self.cert, &cert)?;
        let key = read("tls key", &self.key)?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError {
            what: "tls key",
            path: self.key.clone(),
            reason: format!("no PEM private key: {e}"),
        })?;
        let ca = read("tls ca", &self.ca)?;
        certs("tls ca", &self.ca, &ca)?;
        Ok(Tls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        })
    }
}

impl Tls {
    /// The server side: this identity, and client certificates required, signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// The client side of a connection to `host`: this identity, and the server's certificate
    /// signed by the CA and naming `host`.
    pub fn client(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(host)
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address removed).
fn host(addr: &str) -> &str {
    let h = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    h.trim_start_matches('[').trim_end_matches(']')
}

/// A lazily connecting endpoint for `addr` (`HOST:PORT`): `https` with `tls`, else `http`.
pub fn endpoint(addr: &str, tls: Option<&Tls>, connect: Duration) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect)
        .tcp_nodelay(true);
    match tls {
        Some(t) => ep
            .tls_config(t.client(host(addr)))
            .map_err(|e| format!("tls for {addr}: {e}")),
        None => Ok(ep),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host("127.0.0.1:4370"), "127.0.0.1");
        assert_eq!(host("[::1]:4370"), "::1");
        assert_eq!(host("node-1.ekka:4370"), "node-1.ekka");
    }

    #[test]
    fn files_that_hold_no_pem_are_refused_naming_the_file() {
        let d = std::env::temp_dir().join(format!("ekka-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk.clone(),
            ca: junk.clone(),
        };
        let e = files.load().unwrap_err().to_string();
        assert!(e.starts_with("tls cert ") && e.contains("junk.pem"), "{e}");
        let missing = TlsFiles {
            cert: d.join("absent.pem"),
            ..files
        };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.contains("absent.pem"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
