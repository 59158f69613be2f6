//! Generating temporary self-signed certificates (for `twistor echo --tls`
//! without a certificate, for Gemini capsules, and for tests).

use std::io;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names of this machine as a local client reaches it: `localhost`,
/// `127.0.0.1` and `::1`. A certificate for all three verifies whichever a
/// client that checks host names connects to (an address becomes an IP
/// address entry of the subjectAltName, a name a DNS entry).
///
/// ```
/// use twistor_transports::tls::{generate_self_signed_cert, LOCAL_NAMES};
/// let (chain, _key) = generate_self_signed_cert(LOCAL_NAMES).unwrap();
/// # let _ = chain;
/// assert_eq!(LOCAL_NAMES, ["localhost", "127.0.0.1", "::1"]);
/// ```
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// The subject CN is the first name, so tools such as `openssl s_client`
/// show what the certificate is for.
fn gen(names: &[&str]) -> io::Result<rcgen::CertifiedKey> {
    let err = |e: rcgen::Error| io::Error::other(format!("cannot generate a certificate: {e}"));
    let alt: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(alt).map_err(err)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("twistor"),
    );
    params.distinguished_name = dn;
    let key_pair = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key_pair).map_err(err)?;
    Ok(rcgen::CertifiedKey { cert, key_pair })
}

/// A new self-signed certificate (ECDSA P-256) for `names` and its key.
/// Each name that parses as an IP address is an IP address entry of the
/// subjectAltName, every other one a DNS entry.
///
/// ```
/// use twistor_transports::tls::generate_self_signed_cert;
/// let (chain, _key) = generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
/// assert_eq!(chain.len(), 1);
/// let facts = twistor_transports::tls::cert_facts(&chain[0]).unwrap();
/// assert_eq!(facts.subject_cn.as_deref(), Some("localhost"));
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
