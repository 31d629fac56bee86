//! The host-local CA that signs the leaves the proxy presents to agents:
//! created once in `data_dir/ca/` (never replaced silently), reloaded and
//! self-checked at start, and minting leaves on demand into a bounded cache.
use std::{
    collections::HashMap,
    fmt,
    fs::{self, OpenOptions},
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::{
    client::{danger::ServerCertVerifier as _, WebPkiServerVerifier},
    pki_types::{
        pem::PemObject as _, CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer,
        ServerName, UnixTime,
    },
    server::{ServerSessionMemoryCache, StoresServerSessions},
    sign::CertifiedKey,
    RootCertStore,
};
use tracing::warn;

use super::{provider, TlsError};
use crate::config::{
    CA_CERT_FILE, CA_COMMON_NAME, CA_KEY_FILE, CA_VALIDITY, LEAF_BACKDATE, LEAF_CACHE_MAX,
    LEAF_REMINT_BEFORE, LEAF_VALIDITY, TLS_SESSION_CACHE_SIZE,
};

/// The name a freshly loaded CA mints a test leaf for, to prove that leaves
/// will chain to the stored certificate.
const SELF_CHECK_NAME: &str = "mesh-ca-self-check.invalid";

/// The host-local CA that signs the leaves the proxy presents to agents.
pub struct MeshCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<LeafCache>,
    pub(super) sessions: Arc<dyn StoresServerSessions>,
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
            sessions: ServerSessionMemoryCache::new(TLS_SESSION_CACHE_SIZE),
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
    use std::time::Duration;

    use super::*;
    use crate::proxy::tls::test_dir::TempDir;

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
}
