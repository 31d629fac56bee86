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
use std::{
    collections::HashMap,
    fmt,
    fs::{self, OpenOptions},
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::{
    client::{danger::ServerCertVerifier as _, WebPkiServerVerifier},
    crypto::CryptoProvider,
    pki_types::{
        pem::PemObject as _, CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer,
        ServerName, UnixTime,
    },
    server::{ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig,
};
use tracing::{debug, warn};

/// The CA certificate, relative to the data directory.
pub const CA_CERT_FILE: &str = "ca/mesh-ca.pem";
/// The CA private key (PKCS#8 PEM), relative to the data directory.
pub const CA_KEY_FILE: &str = "ca/mesh-ca.key";
/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "mesh agent CA";
/// How long a new CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A leaf is valid from this long before it is minted, so that a client whose
/// clock is somewhat behind still accepts it.
pub const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf is valid for this long after it is minted. Short, because leaves are
/// cheap to mint and never revoked.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf this close to its expiry is minted anew, so that no handshake
/// is served a certificate about to expire mid-connection.
pub const LEAF_REMINT_BEFORE: Duration = Duration::from_secs(3600);
/// How many leaves are kept; when full, expiring ones go first, then the
/// oldest.
pub const LEAF_CACHE_MAX: usize = 1024;
/// How many TLS sessions the terminating side keeps for resumption, shared by
/// all server configurations built from one [`MeshCa`].
const SESSION_CACHE_SIZE: usize = 4096;

/// The application protocols the mesh can parse when it terminates TLS.
/// [`server_config`] negotiates only these, whatever the caller passes.
pub const SUPPORTED_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The name a freshly loaded CA mints a test leaf for, to prove that leaves
/// will chain to the stored certificate.
const SELF_CHECK_NAME: &str = "mesh-ca-self-check.invalid";

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

/// The host-local CA that signs the leaves the proxy presents to agents.
pub struct MeshCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<LeafCache>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("MeshCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// The CA's parameters. Only the subject, the key usages and the key
/// identifier method go into the leaves it signs, and those are derived the
/// same way on every start, so a reloaded CA signs leaves that chain to the
/// stored certificate (checked at load).
///
/// The subject is `CN=mesh agent CA, OU=<key id>`, the key id being the first
/// 8 bytes (hex) of the key identifier of `key`: CAs of different hosts thus
/// have different subjects, so a client trusting several of them finds the
/// right one by name (with one shared name, path building may pick the wrong
/// CA and fail with a bad signature).
fn ca_params(key: &KeyPair, now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let key_id: String = params
        .key_identifier(key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationalUnitName, key_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now.checked_sub(LEAF_BACKDATE).unwrap_or(now).into();
    params.not_after = now.checked_add(CA_VALIDITY).unwrap_or(now).into();
    params
}

impl MeshCa {
    /// Loads the CA from `data_dir/ca/`, or creates it there on first start.
    /// An existing CA is never replaced: if only one of the two files exists,
    /// or they are unreadable or do not match, this fails and says which.
    pub fn load_or_create(data_dir: &Path) -> Result<MeshCa, TlsError> {
        let cert_path = data_dir.join(CA_CERT_FILE);
        let key_path = data_dir.join(CA_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) => Self::create(data_dir, cert_path, key_path),
            (true, false) => Err(TlsError::CaIncomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(TlsError::CaIncomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    fn create(data_dir: &Path, cert_path: PathBuf, key_path: PathBuf) -> Result<MeshCa, TlsError> {
        let dir = key_path.parent().unwrap_or(data_dir).to_path_buf();
        fs::create_dir_all(data_dir).map_err(|source| TlsError::Io {
            action: "creating the data directory",
            path: data_dir.to_path_buf(),
            source,
        })?;
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(TlsError::Io {
                    action: "creating the CA directory",
                    path: dir,
                    source,
                })
            }
        }
        // Also when the directory existed: it is about to hold the key.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
            TlsError::Io {
                action: "restricting the CA directory to its owner",
                path: dir.clone(),
                source,
            }
        })?;
        let create_err = |e: rcgen::Error| TlsError::CaCreate {
            dir: dir.clone(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(create_err)?;
        let cert = ca_params(&key, SystemTime::now())
            .self_signed(&key)
            .map_err(create_err)?;
        let cert_pem = cert.pem();
        // The key first: a crash between the two leaves a key without a
        // certificate, which the next start reports instead of guessing.
        write_new_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        sync_dir(&dir)?;
        tracing::info!(cert = %cert_path.display(), "created the mesh CA");
        Self::assemble(cert_pem, cert.der().clone(), cert_path, key_path, key)
    }

    fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<MeshCa, TlsError> {
        let cert_pem = fs::read_to_string(&cert_path).map_err(|source| TlsError::Io {
            action: "reading the mesh CA certificate",
            path: cert_path.clone(),
            source,
        })?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::CaCert {
                path: cert_path.clone(),
                reason: format!("no PEM certificate could be read ({e})"),
            })?;
        let key_file = fs::File::open(&key_path).map_err(|source| TlsError::Io {
            action: "opening the mesh CA key",
            path: key_path.clone(),
            source,
        })?;
        if let Ok(meta) = key_file.metadata() {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(
                    key = %key_path.display(),
                    mode = format!("{mode:o}"),
                    "the mesh CA key is readable by others than its owner; chmod 600 it"
                );
            }
        }
        let key_pem = io::read_to_string(key_file).map_err(|source| TlsError::Io {
            action: "reading the mesh CA key",
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::CaKey {
            path: key_path.clone(),
            reason: format!("not a PEM private key this build can use ({e})"),
        })?;
        // The stored certificate must carry this key's public half.
        CertifiedKey::from_der(
            vec![cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            &provider(),
        )
        .map_err(|e| TlsError::CaMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason: e.to_string(),
        })?;
        Self::assemble(cert_pem, cert_der, cert_path, key_path, key)
    }

    fn assemble(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        cert_path: PathBuf,
        key_path: PathBuf,
        key: KeyPair,
    ) -> Result<MeshCa, TlsError> {
        let ca = MeshCa {
            cert_pem,
            cert_der,
            issuer: Issuer::new(ca_params(&key, SystemTime::now()), key),
            cert_path,
            key_path,
            leaves: Mutex::new(LeafCache::new(LEAF_CACHE_MAX)),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// Mints a leaf and verifies it against the stored certificate the way a
    /// client would, so that a CA whose leaves would not be accepted fails at
    /// start rather than at every handshake.
    fn self_check(&self) -> Result<(), TlsError> {
        let mismatch = |reason: String| TlsError::CaMismatch {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| TlsError::CaCert {
                path: self.cert_path.clone(),
                reason: format!("not usable as a trust anchor ({e})"),
            })?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| mismatch(e.to_string()))?;
        let (leaf, _) = self.mint(SELF_CHECK_NAME, SystemTime::now())?;
        let name = ServerName::try_from(SELF_CHECK_NAME).map_err(|e| mismatch(e.to_string()))?;
        verifier
            .verify_server_cert(leaf.end_entity_cert()?, &[], &name, &[], UnixTime::now())
            .map_err(|e| mismatch(format!("a leaf signed with the key does not verify ({e})")))?;
        Ok(())
    }

    /// The CA certificate in PEM, for agents' trust stores.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Where the CA certificate is stored (`data_dir/ca/mesh-ca.pem`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Where the CA key is stored (`data_dir/ca/mesh-ca.key`).
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// A leaf for `server_name` (a DNS name, or an IP address for an IP SAN),
    /// valid from [`LEAF_BACKDATE`] before now to [`LEAF_VALIDITY`] after;
    /// served from the cache until it is within [`LEAF_REMINT_BEFORE`] of
    /// expiry. Minting happens outside the cache lock, so a slow mint does not
    /// hold up lookups of other names (two concurrent first lookups of one
    /// name may both mint; one result is kept).
    pub fn leaf_for(&self, server_name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let name = server_name.to_ascii_lowercase();
        let now = SystemTime::now();
        let fresh_until = now + LEAF_REMINT_BEFORE;
        if let Some(leaf) = self.cache().get(&name, fresh_until) {
            return Ok(leaf);
        }
        let (leaf, not_after) = self.mint(&name, now)?;
        Ok(self.cache().insert(name, leaf, not_after, fresh_until))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LeafCache> {
        // The cache is consistent after any panic elsewhere: keep using it.
        self.leaves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mint(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), TlsError> {
        let mint_err = |reason: String| TlsError::Mint {
            name: name.to_owned(),
            reason,
        };
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if DnsName::try_from(name).is_err() || name.ends_with('.') {
                    return Err(TlsError::InvalidServerName {
                        name: name.to_owned(),
                    });
                }
                let ia5 = name
                    .try_into()
                    .map_err(|e: rcgen::Error| mint_err(e.to_string()))?;
                SanType::DnsName(ia5)
            }
        };
        let not_after = now + LEAF_VALIDITY;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // X.520 bounds a common name at 64 characters; clients use the SAN.
        if name.len() <= 64 {
            dn.push(DnType::CommonName, name);
        } else {
            dn.push(DnType::CommonName, "mesh leaf");
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now.checked_sub(LEAF_BACKDATE).unwrap_or(now).into();
        params.not_after = not_after.into();
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| mint_err(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| mint_err(e.to_string()))?;
        let certified = CertifiedKey::from_der(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            &provider(),
        )
        .map_err(|e| mint_err(e.to_string()))?;
        Ok((Arc::new(certified), not_after))
    }
}

/// Leaves by lowercased name, bounded.
struct LeafCache {
    max: usize,
    map: HashMap<String, CachedLeaf>,
}

struct CachedLeaf {
    leaf: Arc<CertifiedKey>,
    not_after: SystemTime,
}

impl LeafCache {
    fn new(max: usize) -> LeafCache {
        LeafCache {
            max: max.max(1),
            map: HashMap::new(),
        }
    }

    /// The cached leaf if it is still valid past `fresh_until`.
    fn get(&self, name: &str, fresh_until: SystemTime) -> Option<Arc<CertifiedKey>> {
        self.map
            .get(name)
            .filter(|c| c.not_after > fresh_until)
            .map(|c| c.leaf.clone())
    }

    /// Keeps `leaf` unless a fresh one was inserted meanwhile (then returns
    /// that one, so that all callers share one leaf per name).
    fn insert(
        &mut self,
        name: String,
        leaf: Arc<CertifiedKey>,
        not_after: SystemTime,
        fresh_until: SystemTime,
    ) -> Arc<CertifiedKey> {
        if let Some(existing) = self.get(&name, fresh_until) {
            return existing;
        }
        if !self.map.contains_key(&name) && self.map.len() >= self.max {
            self.map.retain(|_, c| c.not_after > fresh_until);
            while self.map.len() >= self.max {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, c)| c.not_after)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        self.map.remove(&k);
                    }
                    None => break,
                }
            }
        }
        self.map.insert(
            name,
            CachedLeaf {
                leaf: leaf.clone(),
                not_after,
            },
        );
        leaf
    }
}

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

fn exists(path: &Path) -> Result<bool, TlsError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(TlsError::Io {
            action: "checking",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `contents` to `path` atomically and without replacing anything: a
/// temporary file in the same directory (created with `mode`), synced, then
/// hard-linked to `path` (which fails if `path` appeared meanwhile) and
/// removed. On a filesystem without hard links, a rename after a last check.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TlsError::Io {
            action,
            path: p,
            source,
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    // A leftover from a crashed start of this same pid number.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        file.write_all(contents).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        drop(file);
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(io_err("refusing to replace", path)(e))
            }
            Err(_) => {
                if exists(path)? {
                    return Err(io_err("refusing to replace", path)(io::Error::from(
                        io::ErrorKind::AlreadyExists,
                    )));
                }
                fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TlsError::Io {
            action: "syncing",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::{TcpListener, TcpStream},
    };
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
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

    #[test]
    fn the_ca_is_created_once_and_reloaded() {
        let dir = TempDir::new("create");
        let ca = MeshCa::load_or_create(&dir.0).unwrap();
        assert_eq!(ca.cert_path(), dir.0.join("ca/mesh-ca.pem"));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(ca.key_path()), 0o600);
        assert_eq!(mode(&dir.0.join("ca")), 0o700);
        assert_eq!(fs::read_to_string(ca.cert_path()).unwrap(), ca.cert_pem());
        let leftovers: Vec<_> = fs::read_dir(dir.0.join("ca"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");

        let again = MeshCa::load_or_create(&dir.0).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert_eq!(again.cert_der(), ca.cert_der());
        // A leaf from the reloaded CA verifies against the original cert.
        let leaf = again.leaf_for("api.example.test").unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                leaf.end_entity_cert().unwrap(),
                &[],
                &ServerName::try_from("api.example.test").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }

    #[test]
    fn a_damaged_ca_is_an_error_never_replaced() {
        let dir = TempDir::new("damaged");
        let ca = MeshCa::load_or_create(&dir.0).unwrap();
        let key_path = ca.key_path().to_path_buf();
        let cert_path = ca.cert_path().to_path_buf();
        let good_key = fs::read(&key_path).unwrap();

        fs::write(
            &key_path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = MeshCa::load_or_create(&dir.0).unwrap_err().to_string();
        assert!(
            e.contains("mesh CA key") && e.contains(&*key_path.to_string_lossy()),
            "{e}"
        );

        // Another CA's key with this certificate.
        let other = TempDir::new("other");
        let other_ca = MeshCa::load_or_create(&other.0).unwrap();
        fs::copy(other_ca.key_path(), &key_path).unwrap();
        let e = MeshCa::load_or_create(&dir.0).unwrap_err();
        assert!(matches!(e, TlsError::CaMismatch { .. }), "{e}");

        fs::write(&key_path, &good_key).unwrap();
        fs::write(&cert_path, b"not a certificate").unwrap();
        let e = MeshCa::load_or_create(&dir.0).unwrap_err().to_string();
        assert!(
            e.contains("mesh CA certificate") && e.contains("mesh-ca.pem"),
            "{e}"
        );

        fs::remove_file(&cert_path).unwrap();
        let e = MeshCa::load_or_create(&dir.0).unwrap_err();
        assert!(matches!(e, TlsError::CaIncomplete { .. }), "{e}");
        assert!(e.to_string().contains("mesh-ca.pem does not"), "{e}");
        assert_eq!(
            fs::read(&key_path).unwrap(),
            good_key,
            "the key is untouched"
        );
    }

    #[test]
    fn leaves_are_cached_bounded_and_reminted_near_expiry() {
        let dir = TempDir::new("cache");
        let ca = MeshCa::load_or_create(&dir.0).unwrap();
        let a = ca.leaf_for("api.example.test").unwrap();
        let b = ca.leaf_for("API.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = ca.leaf_for("other.example.test").unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        let ip = ca.leaf_for("127.0.0.1").unwrap();
        assert!(!Arc::ptr_eq(&a, &ip));
        assert!(matches!(
            ca.leaf_for("not a name"),
            Err(TlsError::InvalidServerName { .. })
        ));

        // About to expire: minted anew.
        ca.cache()
            .map
            .get_mut("api.example.test")
            .unwrap()
            .not_after = SystemTime::now() + Duration::from_secs(60);
        let c = ca.leaf_for("api.example.test").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));

        // Bounded.
        *ca.cache() = LeafCache::new(3);
        for i in 0..10 {
            ca.leaf_for(&format!("n{i}.example.test")).unwrap();
            assert!(ca.cache().map.len() <= 3);
        }
        assert!(ca.cache().map.contains_key("n9.example.test"));
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
