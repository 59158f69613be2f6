//! Certificate failures a client can act on, said in words: which
//! certificate the server showed (its subject and SHA-256 fingerprint),
//! what was expected of it, and what to do about it.
//!
//! rustls reports "UnknownIssuer" or "CaUsedAsEndEntity"; a student facing
//! the lab's self-signed certificate needs to hear that the certificate is
//! self-signed, that no authority they trust vouches for it, and that they
//! can trust its file or pin its fingerprint. [`ExplainingVerifier`] wraps
//! the usual web PKI verifier (every decision stays rustls's) and rewrites
//! only the message of a refusal; rustls's own name for the failure ends
//! the message, in parentheses.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error};
use x509_parser::extensions::GeneralName;

use super::info::sha256_fingerprint;
use super::signatures::{Judge, ServerJudge, Signed};
use super::verify::{cert_error, openssl_fingerprint};

/// The web PKI verifier (roots, names, dates), with refusals explained.
#[derive(Debug)]
pub(crate) struct ExplainingVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ExplainingVerifier {
    /// The verifier: `inner`'s decisions explained, with the handshake
    /// signature checked by `provider`'s algorithms (those `inner` was
    /// built with).
    pub(crate) fn new(
        inner: Arc<WebPkiServerVerifier>,
        provider: &CryptoProvider,
    ) -> Signed<ExplainingVerifier> {
        Signed::new(ExplainingVerifier { inner }, provider)
    }
}

impl Judge for ExplainingVerifier {}

impl ServerJudge for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| explain(e, end_entity, server_name))
    }
}

/// What a refusal's explanation needs to know about the certificate.
struct Facts {
    /// `CN=localhost, SHA-256 AB:CD:...`
    who: String,
    self_signed: bool,
    issuer: String,
    names: Vec<String>,
    not_before: String,
    not_after: String,
}

fn facts(der: &CertificateDer<'_>) -> Facts {
    let fingerprint = openssl_fingerprint(&sha256_fingerprint(der));
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Facts {
            who: format!("SHA-256 {fingerprint}"),
            self_signed: false,
            issuer: String::new(),
            names: Vec::new(),
            not_before: String::new(),
            not_after: String::new(),
        };
    };
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(b) => ip_text(b),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Facts {
        who: format!("{}, SHA-256 {fingerprint}", cert.subject()),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        issuer: cert.issuer().to_string(),
        names,
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

fn asked(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "the name asked for".to_string(),
    }
}

/// Rewrite the message of a refusal a person can act on; leave the others.
pub(crate) fn explain(e: Error, cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Error {
    let Error::InvalidCertificate(ce) = &e else {
        return e;
    };
    let f = || facts(cert);
    let text = match ce {
        CertificateError::UnknownIssuer => {
            let f = f();
            if f.self_signed {
                format!(
                    "the server's certificate ({}) is self-signed, and this client trusts only \
                     certificates issued by an authority it knows: if it is the certificate you \
                     expect, trust its file or pin its fingerprint (UnknownIssuer)",
                    f.who
                )
            } else {
                format!(
                    "the server's certificate ({}) was issued by {}, an authority this client does \
                     not trust: trust that authority's certificate, or pin the server's \
                     fingerprint (UnknownIssuer)",
                    f.who, f.issuer
                )
            }
        }
        CertificateError::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => format!(
            "the server's certificate ({}) is a CA certificate (basicConstraints CA:TRUE, as \
             `openssl req -x509` makes), which is refused as a server's own certificate whoever \
             issued it: to accept this one, trust its file or pin its fingerprint (both compare \
             the certificate itself), or give the server a certificate without CA:TRUE \
             (CaUsedAsEndEntity)",
            f().who
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let f = f();
            let names = if f.names.is_empty() {
                "no name at all (it has no subjectAltName)".to_string()
            } else {
                f.names.join(", ")
            };
            format!(
                "the server's certificate ({}) is for {names}, not for {}: connect with one of \
                 those names, or give the server a certificate for this one (NotValidForName)",
                f.who,
                asked(name)
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            let f = f();
            format!(
                "the server's certificate ({}) expired on {} (Expired)",
                f.who, f.not_after
            )
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let f = f();
            format!(
                "the server's certificate ({}) is not valid before {}: check this machine's \
                 clock (NotValidYet)",
                f.who, f.not_before
            )
        }
        _ => return e,
    };
    cert_error(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::generate_self_signed_cert;

    fn message(e: Error) -> String {
        match e {
            Error::InvalidCertificate(CertificateError::Other(o)) => o.to_string(),
            other => panic!("not explained: {other:?}"),
        }
    }

    #[test]
    fn a_self_signed_certificate_is_named_with_its_fingerprint() {
        let (chain, _) = generate_self_signed_cert(&["localhost"]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let text = message(explain(
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
            &chain[0],
            &name,
        ));
        let fp = openssl_fingerprint(&sha256_fingerprint(&chain[0]));
        assert!(text.contains("self-signed"), "{text}");
        assert!(text.contains(&fp), "{text}");
        assert!(text.contains("CN=localhost"), "{text}");
        assert!(text.ends_with("(UnknownIssuer)"), "{text}");
    }

    #[test]
    fn a_name_mismatch_lists_the_names_the_certificate_has() {
        let (chain, _) = generate_self_signed_cert(&["localhost", "::1"]).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let text = message(explain(
            Error::InvalidCertificate(CertificateError::NotValidForName),
            &chain[0],
            &name,
        ));
        assert!(
            text.contains("is for localhost, ::1, not for 127.0.0.1"),
            "{text}"
        );
    }

    #[test]
    fn other_failures_are_left_as_they_are() {
        let (chain, _) = generate_self_signed_cert(&["localhost"]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let e = explain(
            Error::InvalidCertificate(CertificateError::BadSignature),
            &chain[0],
            &name,
        );
        assert_eq!(e, Error::InvalidCertificate(CertificateError::BadSignature));
    }
}
