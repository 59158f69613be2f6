//! The one certificate every TLS server of a run uses (twistor's, the
//! hand-written mio + rustls loop, tokio-rustls, Twisted, asyncio, agate,
//! jetforce): a self-signed ECDSA P-256 certificate for `localhost`, made
//! fresh for the run, as PEM files (and DER for agate). The Rust servers
//! load the PEM files into twistor's `ServerConfigBuilder` with its
//! defaults (see `tls-server`).

use std::io;
use std::path::PathBuf;

use twistor_transports::tls::generate_self_signed_pem;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The run's certificate, in every form a peer wants.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Where the files are.
    pub dir: PathBuf,
    /// PEM certificate.
    pub cert_pem: PathBuf,
    /// PEM private key (PKCS#8).
    pub key_pem: PathBuf,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// DER private key (PKCS#8).
    pub key_der: Vec<u8>,
    /// SHA-256 fingerprint (hex), for clients that pin it.
    pub fingerprint: String,
}

impl CertFiles {
    /// Make a certificate and write its files under the peers directory.
    pub fn make() -> io::Result<CertFiles> {
        let dir = super::dir().join("cert");
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = generate_self_signed_pem(&["localhost"])?;
        let cert_pem = dir.join("cert.pem");
        let key_pem = dir.join("key.pem");
        std::fs::write(&cert_pem, &cert)?;
        std::fs::write(&key_pem, &key)?;
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(io::Error::other)?;
        let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(io::Error::other)?;
        let fingerprint = twistor_transports::tls::sha256_fingerprint(&der);
        Ok(CertFiles {
            dir,
            cert_pem,
            key_pem,
            cert_der: der.to_vec(),
            key_der: key_der.secret_der().to_vec(),
            fingerprint,
        })
    }

    /// The mode arguments of a Python TLS echo script.
    pub fn script_args(&self) -> Vec<String> {
        vec![
            "tls".into(),
            self.cert_pem.display().to_string(),
            self.key_pem.display().to_string(),
        ]
    }
}
