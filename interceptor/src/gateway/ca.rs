//! The gateway's local certificate authority: created on first start under `records.dir/ca`,
//! it mints one leaf certificate per SNI the agents ask for, cached for the daemon's lifetime.
//!
//! Files: `ca.pem` (the CA certificate, world-readable: agents trust it), `ca.key` (mode 0600),
//! and `bundle.pem` (the system's trusted roots plus this CA, for runtimes such as Python that
//! replace rather than extend their store when told of a bundle).

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Subject of the CA. Leaves name it as their issuer, so it must stay the same across restarts.
const CA_COMMON_NAME: &str = "interceptor gateway CA";
const CA_ORGANIZATION: &str = "interceptor";
/// The CA outlives any session by far; leaves are re-minted at every start anyway.
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 7;
/// Where Debian-family systems keep the trusted roots; appended to `bundle.pem` when present.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing one of the CA files failed.
    #[error("ca file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The stored key or certificate could not be parsed, or a certificate could not be made.
    #[error("ca {what}: {source}")]
    Cert { what: String, source: rcgen::Error },
    /// rustls refused the minted key.
    #[error("leaf key for {sni}: {source}")]
    Key { sni: String, source: rustls::Error },
}

/// The CA and its cache of leaves.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    files: CaFiles,
    leaves: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// Paths of the CA's files.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self { cert: dir.join("ca.pem"), key: dir.join("ca.key"), bundle: dir.join("bundle.pem") }
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("files", &self.files).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, creating it (and the directory) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let files = CaFiles::in_dir(dir);
        fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.to_owned(), source })?;
        // Agents running as other users read ca.pem and bundle.pem; the key stays 0600.
        set_mode(dir, 0o755)?;

        let key = if files.key.exists() {
            let pem = read(&files.key)?;
            KeyPair::from_pem(&pem).map_err(|source| CaError::Cert {
                what: format!("key {}", files.key.display()),
                source,
            })?
        } else {
            let key = KeyPair::generate()
                .map_err(|source| CaError::Cert { what: "key generation".into(), source })?;
            write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
            key
        };

        let params = ca_params();
        let cert_pem = if files.cert.exists() {
            read(&files.cert)?
        } else {
            let cert = params
                .self_signed(&key)
                .map_err(|source| CaError::Cert { what: "self-signing".into(), source })?;
            write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
            cert.pem()
        };
        write_bundle(&files.bundle, &cert_pem)?;

        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            files,
            leaves: RwLock::new(HashMap::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn files(&self) -> &CaFiles {
        &self.files
    }

    /// The leaf for exactly this server name, minted on first use.
    pub fn leaf(&self, sni: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let sni = sni.to_ascii_lowercase();
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        if let Some(leaf) = self.leaves.read().unwrap_or_else(|e| e.into_inner()).get(&sni) {
            return Ok(leaf.clone());
        }
        let leaf = Arc::new(self.mint(&sni)?);
        self.leaves
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sni)
            .or_insert(leaf.clone());
        Ok(leaf)
    }

    fn mint(&self, sni: &str) -> Result<CertifiedKey, CaError> {
        let cert_err = |source| CaError::Cert { what: format!("leaf for {sni}"), source };
        let mut params = CertificateParams::new(vec![sni.to_owned()]).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, sni);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);

        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|source| CaError::Key { sni: sni.to_owned(), source })?;
        Ok(CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key))
    }
}

/// Serves the leaf for the ClientHello's SNI. A hello without SNI gets no certificate, so the
/// handshake fails: the gateway only terminates TLS for names it can classify.
#[derive(Debug)]
pub struct LeafResolver(pub Arc<CertificateAuthority>);

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        match self.0.leaf(sni) {
            Ok(leaf) => Some(leaf),
            Err(err) => {
                tracing::error!(%sni, error = %err, "cannot mint leaf certificate");
                None
            }
        }
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    params
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

/// Creates `path` with `mode` from the start, so the key is never readable by others.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io_err = |source| CaError::Io { path: path.to_owned(), source };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn write_bundle(path: &Path, ca_pem: &str) -> Result<(), CaError> {
    let mut bundle = fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    let tmp = path.with_extension("pem.tmp");
    fs::write(&tmp, bundle).map_err(|source| CaError::Io { path: tmp.clone(), source })?;
    set_mode(&tmp, 0o644)?;
    fs::rename(&tmp, path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CaError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| CaError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_with_a_private_key_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(&first.files().key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
        let bundle = fs::read_to_string(&second.files().bundle).unwrap();
        assert!(bundle.ends_with(second.cert_pem()));
    }

    #[test]
    fn leaves_are_cached_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let a = ca.leaf("ec2.us-east-1.amazonaws.com").unwrap();
        let b = ca.leaf("EC2.us-east-1.amazonaws.com").unwrap();
        let c = ca.leaf("s3.amazonaws.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
