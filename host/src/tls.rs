//! HTTPS for the app listener, from PEM files, as `spin up --tls-cert
//! --tls-key` serves it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the acceptor; HTTP/2 and HTTP/1.1 are offered through ALPN.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid TLS certificate {}", cert_path.display()))?;
    if certs.is_empty() {
        bail!("no certificate found in {}", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a TLS private key from {}", key_path.display()))?;

    // The crypto provider is the one rustls is built with here: ring.
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and private key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
