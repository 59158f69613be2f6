//! Facts about a TLS session and a certificate: what `Transport::tls_info`
//! returns (version, cipher suite, ALPN, SNI, whether the session was
//! resumed, the peer's chain and its leaf's fingerprint, subject CN,
//! validity and serial).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{Connection, HandshakeKind, ProtocolVersion};
use twistor_reactor::{CertFacts, TlsInfo};

/// SHA-256 of `der`, lowercase hex (the form `openssl x509 -fingerprint
/// -sha256` prints, without the colons).
///
/// ```
/// use twistor_transports::tls::sha256_fingerprint;
/// assert_eq!(
///     sha256_fingerprint(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    hex(digest.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Parse the facts of one DER certificate, or `None` if it is not a valid
/// X.509 certificate.
///
/// ```
/// use twistor_transports::tls::{cert_facts, generate_self_signed_cert};
/// let (chain, _key) = generate_self_signed_cert(&["example.org"]).unwrap();
/// let facts = cert_facts(&chain[0]).unwrap();
/// assert_eq!(facts.sha256_fingerprint.len(), 64);
/// assert!(facts.not_before < facts.not_after);
/// ```
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let validity = cert.validity();
    Some(CertFacts {
        sha256_fingerprint: sha256_fingerprint(der),
        subject_cn,
        not_before: to_system_time(validity.not_before),
        not_after: to_system_time(validity.not_after),
        serial: hex(cert.raw_serial()),
    })
}

fn version_name(v: Option<ProtocolVersion>) -> String {
    match v {
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Collect the facts of an established session. `asked_sni` is the name a
/// client asked for (a server reads it from the session).
pub(crate) fn session_info(conn: &Connection, asked_sni: Option<&str>) -> TlsInfo {
    let peer_chain: Vec<Vec<u8>> = conn
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
        .unwrap_or_default();
    let sni = match conn {
        Connection::Server(s) => s.server_name().map(str::to_string),
        // No SNI is sent for an address.
        Connection::Client(_) => asked_sni
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(str::to_string),
    };
    TlsInfo {
        version: version_name(conn.protocol_version()),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        sni,
        peer_cert: peer_chain.first().and_then(|d| cert_facts(d)),
        peer_chain,
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}
