//! The mesh CA and the TLS configurations for `tls: terminate`.
//!
//! To read what an agent says over TLS, the proxy terminates the agent's TLS
//! with a leaf certificate minted on the fly for the name the agent asked for,
//! signed by a host-local CA that governed agents are configured to trust, and
//! opens its own TLS to the real server, verified against the system roots.
//!
//! The CA key lets whoever holds it impersonate any server to those agents, so
//! it is created once, kept `0600` in a `0700` directory, and never replaced
//! silently: a damaged or mismatched pair is an error for the operator.
//!
//! All configurations name the ring provider explicitly and never rely on a
//! process-wide default provider.
//!
//! [`ca`] holds the CA (load or create, mint and cache leaves); [`config`]
//! builds the rustls server (agent-facing) and client (upstream) configs.
pub mod ca;
pub mod config;

use std::{
    io,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use rustls::crypto::CryptoProvider;

pub use self::{
    ca::MeshCa,
    config::{client_config, server_config, server_config_for, SUPPORTED_ALPN},
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mesh CA certificate {}: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    #[error("mesh CA key {}: {reason}", path.display())]
    CaKey { path: PathBuf, reason: String },
    #[error(
        "mesh CA certificate {} and key {} do not belong together: {reason}; \
         restore the matching pair (an existing CA is never replaced automatically)",
        cert.display(), key.display()
    )]
    CaMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "mesh CA is incomplete: {} exists but {} does not; restore it, or remove both \
         to create a new CA (agents must then be given the new certificate)",
        present.display(), missing.display()
    )]
    CaIncomplete { present: PathBuf, missing: PathBuf },
    #[error("creating the mesh CA in {}: {reason}", dir.display())]
    CaCreate { dir: PathBuf, reason: String },
    #[error("minting a certificate for {name:?}: {reason}")]
    Mint { name: String, reason: String },
    #[error("{name:?} is neither a DNS name nor an IP address; no certificate can name it")]
    InvalidServerName { name: String },
    #[error("extra CA file {}: {reason}", path.display())]
    ExtraCa { path: PathBuf, reason: String },
    #[error("no trusted root certificates for upstream TLS: {detail}")]
    NoRoots { detail: String },
    #[error("building a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider every configuration here uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

#[cfg(test)]
mod test_dir {
    use std::{
        fs,
        path::PathBuf,
        time::{SystemTime, UNIX_EPOCH},
    };

    /// A unique directory under the system temp dir, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir =
                std::env::temp_dir().join(format!("mesh-tls-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}
