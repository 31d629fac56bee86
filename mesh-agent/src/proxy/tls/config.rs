//! The rustls configurations: the agent-facing server side, which presents
//! leaves minted by the [`MeshCa`] for the name the agent asked for, and the
//! upstream client side, which verifies the real server against the system
//! roots (and an optional extra CA file).
use std::{
    fmt, fs,
    path::Path,
    sync::{Arc, OnceLock},
};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer},
    server::ResolvesServerCert,
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig,
};
use tracing::{debug, warn};

use super::{provider, MeshCa, TlsError};

/// The application protocols the mesh can parse when it terminates TLS.
/// [`server_config`] negotiates only these, whatever the caller passes.
pub const SUPPORTED_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Picks the leaf for each handshake: the ClientHello's SNI, else the
/// fallback name (the original destination's IP), else none (the handshake
/// fails, as it would against a server with no certificate for it).
struct MintingResolver {
    ca: Arc<MeshCa>,
    fallback_name: Option<String>,
}

impl fmt::Debug for MintingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintingResolver")
            .field("fallback_name", &self.fallback_name)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().or(self.fallback_name.as_deref())?;
        match self.ca.leaf_for(name) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                warn!(error = %e, "no certificate for the agent's handshake");
                None
            }
        }
    }
}

/// A server configuration that presents minted leaves, for clients that send
/// SNI; a handshake without SNI fails. See [`server_config_for`].
pub fn server_config(ca: Arc<MeshCa>, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(ca, None, alpn)
}

/// A server configuration for one connection: the leaf names the SNI, or
/// `fallback_name` (the original destination's IP, as a string) when the
/// client sent none.
///
/// ALPN: `alpn` is what the agent offered (in its ClientHello, or better, what
/// the upstream server chose from it, so both legs speak the same protocol);
/// only the entries in [`SUPPORTED_ALPN`] are kept, in the given order, and
/// rustls picks the first of them the client offers. If none is left, no
/// protocol is negotiated (the client then speaks HTTP/1.1 by default).
pub fn server_config_for(
    ca: Arc<MeshCa>,
    fallback_name: String,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(ca, Some(fallback_name), alpn)
}

fn build_server_config(
    ca: Arc<MeshCa>,
    fallback_name: Option<String>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let sessions = ca.sessions.clone();
    let resolver = MintingResolver { ca, fallback_name };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn
        .into_iter()
        .filter(|p| SUPPORTED_ALPN.contains(&p.as_slice()))
        .collect();
    // Shared across per-connection configurations so resumption works.
    config.session_storage = sessions;
    Ok(Arc::new(config))
}

/// System roots, loaded once per process (reading the system store is slow).
struct NativeRoots {
    certs: Vec<CertificateDer<'static>>,
    errors: Vec<String>,
}

fn native_roots() -> &'static NativeRoots {
    static ROOTS: OnceLock<NativeRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        for e in &errors {
            warn!(error = %e, "some system root certificates could not be loaded");
        }
        debug!(
            count = result.certs.len(),
            "system root certificates loaded"
        );
        NativeRoots {
            certs: result.certs,
            errors,
        }
    })
}

/// The upstream (mesh → real server) client configuration: the system roots
/// plus, optionally, the CA certificates in the PEM file `extra_ca`; ALPN as
/// given. Fails only when no root at all would be trusted, or `extra_ca` is
/// unreadable or holds no usable certificate. Build once per (extra_ca, alpn)
/// and keep the `Arc`.
pub fn client_config(
    extra_ca: Option<&Path>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = native_roots();
    let (added, ignored) = roots.add_parsable_certificates(native.certs.iter().cloned());
    if ignored > 0 {
        debug!(
            added,
            ignored, "unparsable system root certificates ignored"
        );
    }
    if let Some(path) = extra_ca {
        let extra_err = |reason: String| TlsError::ExtraCa {
            path: path.to_path_buf(),
            reason,
        };
        let pem = fs::read(path).map_err(|source| TlsError::Io {
            action: "reading the extra CA file",
            path: path.to_path_buf(),
            source,
        })?;
        let mut count = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| extra_err(format!("bad PEM ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| extra_err(format!("certificate {} is not usable ({e})", count + 1)))?;
            count += 1;
        }
        if count == 0 {
            return Err(extra_err("holds no PEM certificate".into()));
        }
    }
    if roots.is_empty() {
        let detail = if native.errors.is_empty() {
            "the system store holds none and no extra CA file was given".to_owned()
        } else {
            format!(
                "the system store yielded none ({}) and no extra CA file was given",
                native.errors.join("; ")
            )
        };
        return Err(TlsError::NoRoots { detail });
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::{TcpListener, TcpStream},
    };
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::proxy::tls::test_dir::TempDir;

    fn h2_h1() -> Vec<Vec<u8>> {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    }

    fn trusting(ca: &MeshCa, alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Arc::new(config)
    }

    /// Serves one TLS connection on loopback: reads a line, answers "pong".
    async fn tls_server(config: Arc<ServerConfig>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 4];
                        if tls.read_exact(&mut buf).await.is_ok() {
                            let _ = tls.write_all(b"pong").await;
                            let _ = tls.shutdown().await;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn handshake(
        addr: std::net::SocketAddr,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ping").await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        assert_eq!(buf, b"pong");
        Ok(alpn)
    }

    #[tokio::test]
    async fn terminates_for_the_requested_name_with_h2() {
        let dir = TempDir::new("handshake");
        let ca = Arc::new(MeshCa::load_or_create(&dir.0).unwrap());
        let addr = tls_server(server_config(ca.clone(), h2_h1()).unwrap()).await;
        let alpn = handshake(addr, trusting(&ca, h2_h1()), "api.example.test")
            .await
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        // A client offering only HTTP/1.1 gets it.
        let alpn = handshake(
            addr,
            trusting(&ca, vec![b"http/1.1".to_vec()]),
            "api.example.test",
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        // Unsupported protocols are not negotiated.
        let cfg = server_config(ca.clone(), vec![b"spdy/3".to_vec()]).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_refuses() {
        let dir = TempDir::new("trust");
        let other_dir = TempDir::new("trust-other");
        let ca = Arc::new(MeshCa::load_or_create(&dir.0).unwrap());
        let other = MeshCa::load_or_create(&other_dir.0).unwrap();
        let addr = tls_server(server_config(ca, h2_h1()).unwrap()).await;
        let e = handshake(addr, trusting(&other, h2_h1()), "api.example.test")
            .await
            .unwrap_err();
        // Each CA has its own subject, so the other CA is not even a candidate.
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[tokio::test]
    async fn without_sni_the_fallback_ip_is_named() {
        let dir = TempDir::new("fallback");
        let ca = Arc::new(MeshCa::load_or_create(&dir.0).unwrap());
        // rustls sends no SNI for an IP address.
        let addr =
            tls_server(server_config_for(ca.clone(), "127.0.0.1".into(), vec![]).unwrap()).await;
        let alpn = handshake(addr, trusting(&ca, vec![]), "127.0.0.1")
            .await
            .unwrap();
        assert_eq!(alpn, None);
        // Without a fallback there is nothing to name: the handshake fails.
        let addr = tls_server(server_config(ca.clone(), vec![]).unwrap()).await;
        assert!(handshake(addr, trusting(&ca, vec![]), "127.0.0.1")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_upstream_config_trusts_an_extra_ca_file() {
        let dir = TempDir::new("upstream");
        let ca = Arc::new(MeshCa::load_or_create(&dir.0).unwrap());
        let addr = tls_server(server_config(ca.clone(), h2_h1()).unwrap()).await;
        let client = client_config(Some(ca.cert_path()), h2_h1()).unwrap();
        let alpn = handshake(addr, client, "api.example.test").await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        let bad = dir.0.join("bad.pem");
        fs::write(&bad, b"nothing here").unwrap();
        let e = client_config(Some(&bad), vec![]).unwrap_err().to_string();
        assert!(
            e.contains("bad.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let missing = dir.0.join("missing.pem");
        let e = client_config(Some(&missing), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
