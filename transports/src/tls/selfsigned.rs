//! Generating temporary self-signed certificates (for `twistor echo --tls`
//! without a certificate, for Gemini capsules, and for tests).

use std::io;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn gen(names: &[&str]) -> io::Result<rcgen::CertifiedKey> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    rcgen::generate_simple_self_signed(names)
        .map_err(|e| io::Error::other(format!("cannot generate a certificate: {e}")))
}

/// A new self-signed certificate (ECDSA P-256) for `names` and its key.
///
/// ```
/// use twistor_transports::tls::generate_self_signed_cert;
/// let (chain, _key) = generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
/// assert_eq!(chain.len(), 1);
/// ```
pub fn generate_self_signed_cert(
    names: &[&str],
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let ck = gen(names)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}

/// A new self-signed certificate for `names` as PEM text: `(certificate,
/// private key)`, ready to write to `domain.crt` and `domain.key`.
///
/// ```
/// let (cert, key) = twistor_transports::tls::generate_self_signed_pem(&["localhost"]).unwrap();
/// assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(key.contains("PRIVATE KEY"));
/// ```
pub fn generate_self_signed_pem(names: &[&str]) -> io::Result<(String, String)> {
    let ck = gen(names)?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}
