//! TLS client settings shared by every outbound connection the daemon makes: the IdP (OIDC
//! discovery and keys), STS, and the gateway's upstream to AWS.
//!
//! Trust is the Mozilla root set compiled in (webpki-roots), so the daemon behaves the same on
//! every host whatever its system store holds, plus one optional extra CA file (PEM) for private
//! IdPs and the test peers. The crypto provider is ring, as everywhere else in the daemon.

use std::{
    fs,
    io::BufReader,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::RootCertStore;

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The extra CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    ReadCa { path: PathBuf, source: std::io::Error },
    /// The extra CA file holds no `CERTIFICATE` PEM block (a key or DER file, say).
    #[error("CA file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    /// A certificate in the extra CA file is not a usable trust anchor.
    #[error("CA file {path}: certificate {index} is not a usable trust anchor: {source}")]
    BadCertificate { path: PathBuf, index: usize, source: rustls::Error },
    /// rustls refused the protocol settings (a build without TLS 1.2/1.3 support).
    #[error("cannot set up the TLS client: {0}")]
    Setup(rustls::Error),
}

/// A client configuration trusting the webpki roots plus the certificates in `extra_ca`.
///
/// ALPN is left empty: the caller (hyper-rustls, the gateway) sets the protocols it speaks.
/// ring, with AES-128-GCM first. rustls's default order puts AES-256-GCM first; on the agent
/// side the gateway (the server) picks, and every byte of a transfer is encrypted once more
/// there than on a direct connection, so the cheaper suite matters (~30% less AES work per
/// byte). AES-128-GCM is what AWS endpoints themselves prefer. Nothing is removed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: &rustls::SupportedCipherSuite| match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    };
    // A stable sort: within each rank the default order stays.
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        add_pem_file(&mut roots, path)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Adds every certificate of a PEM file; a file without any is refused rather than ignored, so a
/// wrong path in the config shows at start-up instead of as a handshake failure later.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let read_err = |source| TlsError::ReadCa { path: path.to_owned(), source };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut added = 0;
    for (index, cert) in rustls_pemfile::certs(&mut BufReader::new(file)).enumerate() {
        let cert = cert.map_err(read_err)?;
        roots.add(cert).map_err(|source| TlsError::BadCertificate {
            path: path.to_owned(),
            index,
            source,
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_ca_is_added_to_the_webpki_roots() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, ca.cert.pem()).unwrap();

        assert!(client_config(Some(&path)).is_ok());
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn file_without_certificate_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "not a certificate\n").unwrap();

        let err = client_config(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("empty.pem") && err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn missing_file_is_refused_by_path() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
