//! Certificate verifiers beyond "chains to a trusted root": a server that
//! accepts any client certificate (the Gemini convention), and clients that
//! trust a pinned fingerprint or trust on first use (whose rules and pins
//! are in `tofu.rs`; this is where a certificate waits for the proof of its
//! key before it is remembered). All of them still verify the handshake
//! signature (`signatures.rs`), so the peer proves it holds the key.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerified;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerified;
use rustls::{CertificateError, Error};

use super::decision::Offered;
use super::info::{cert_facts, sha256_fingerprint};
use super::signatures::{ClientJudge, Judge, ServerJudge, Signed};
use super::tofu::Tofu;

fn parse_check(der: &CertificateDer<'_>) -> Result<(), Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|_| ())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Server side: accept any well-formed client certificate, self-signed
/// included, without checking who issued it; the handshake signature is
/// still verified. The application decides what a certificate means (by its
/// fingerprint, in `tls_info()`).
#[derive(Debug)]
pub(crate) struct AnyClientCert {
    mandatory: bool,
}

impl AnyClientCert {
    /// The verifier: this judge, with the handshake signature checked.
    pub(crate) fn new(provider: &CryptoProvider, mandatory: bool) -> Signed<AnyClientCert> {
        Signed::new(AnyClientCert { mandatory }, provider)
    }
}

impl Judge for AnyClientCert {}

impl ClientJudge for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        parse_check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }
}

/// A SHA-256 fingerprint in the one form compared: lowercase hex without
/// colons (`openssl x509 -fingerprint` prints uppercase with colons).
pub(crate) fn normal_fingerprint(fp: &str) -> String {
    fp.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A fingerprint in the form `openssl x509 -noout -fingerprint -sha256`
/// prints it: uppercase hex bytes joined by colons. It accepts either form
/// (what [`sha256_fingerprint`] returns, or this one), and
/// [`ClientConfigBuilder::pinned`](super::ClientConfigBuilder::pinned)
/// accepts both.
///
/// ```
/// use twistor_transports::tls::openssl_fingerprint;
/// assert_eq!(openssl_fingerprint("ab01cdef"), "AB:01:CD:EF");
/// assert_eq!(openssl_fingerprint("AB:01:CD:EF"), "AB:01:CD:EF");
/// ```
pub fn openssl_fingerprint(fp: &str) -> String {
    let hex = normal_fingerprint(fp).to_ascii_uppercase();
    let pairs: Vec<&str> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    pairs.join(":")
}

fn not_pinned(fp: &str, pins: &[String]) -> String {
    let pins: Vec<String> = pins.iter().map(|p| openssl_fingerprint(p)).collect();
    format!(
        "the server's certificate has SHA-256 fingerprint {}, which is not the one trusted ({}): \
         this is another server, or it has a new certificate",
        openssl_fingerprint(fp),
        pins.join(" or ")
    )
}

/// How a client that does not use CA roots decides to trust a server.
#[derive(Debug)]
pub(crate) enum Trust {
    /// One of these SHA-256 fingerprints (lowercase hex).
    Pinned(Vec<String>),
    /// Trust on first use (or, with no store, no check at all).
    Tofu(Tofu),
}

/// Client side: trust a server by its certificate's fingerprint.
///
/// With trust on first use, a certificate to remember (a new server's, or
/// one that replaces a pin) is remembered only once the handshake
/// signature made with its key has verified: a peer that shows a
/// certificate without holding its key is not remembered.
#[derive(Debug)]
pub(crate) struct FingerprintVerifier {
    trust: Trust,
    /// Certificates to remember, waiting for their handshake signature.
    pending: Mutex<Vec<Pending>>,
}

/// A certificate judged worth remembering for `host`, at `now`.
#[derive(Debug)]
struct Pending {
    host: String,
    offered: Offered,
    now: SystemTime,
}

/// At most this many certificates wait for their signature at once
/// (handshakes that never get that far leave theirs behind).
const MAX_PENDING: usize = 64;

/// A refusal with this message (what the TLS layer reports after
/// "certificate verification failed: ").
pub(crate) fn cert_error(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        io::Error::other(message),
    ))))
}

impl FingerprintVerifier {
    /// The verifier: this judge, with the handshake signature checked.
    pub(crate) fn new(trust: Trust, provider: &CryptoProvider) -> Signed<FingerprintVerifier> {
        let judge = FingerprintVerifier {
            trust,
            pending: Mutex::new(Vec::new()),
        };
        Signed::new(judge, provider)
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Pending>> {
        // A panic while holding the lock leaves a whole Vec behind: use it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Judge for FingerprintVerifier {
    /// The signature made with `cert`'s key verified: remember the
    /// certificate for the server it was shown by, judging it again
    /// against the store as it is now (another connection may have
    /// remembered another certificate meanwhile).
    fn proven(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let Trust::Tofu(tofu) = &self.trust else {
            return Ok(());
        };
        let fp = sha256_fingerprint(cert);
        let mine: Vec<Pending> = {
            let mut pending = self.pending();
            let (mine, rest) = pending.drain(..).partition(|p| p.offered.fingerprint == fp);
            *pending = rest;
            mine
        };
        for p in mine {
            match tofu.judge(&p.host, &p.offered, p.now) {
                Ok(decision) if decision.remembers() => tofu.remember(&p.host, &p.offered, p.now),
                Ok(_) => {}
                Err(changed) => {
                    let message = changed.to_string();
                    tofu.report(&p.offered, &Err(changed));
                    return Err(cert_error(message));
                }
            }
        }
        Ok(())
    }
}

/// The host as trust on first use keys it: a lowercase name, or an
/// address without brackets.
fn host_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

impl ServerJudge for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let facts = cert_facts(end_entity).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let tofu = match &self.trust {
            Trust::Pinned(pins) if pins.contains(&facts.sha256_fingerprint) => {
                return Ok(ServerCertVerified::assertion())
            }
            Trust::Pinned(pins) => return Err(cert_error(not_pinned(&facts.sha256_fingerprint, pins))),
            Trust::Tofu(tofu) => tofu,
        };
        let host = host_of(server_name);
        let offered = Offered {
            fingerprint: facts.sha256_fingerprint,
            not_before: facts.not_before,
            not_after: facts.not_after,
            subject_cn: facts.subject_cn,
        };
        let now = system_time(now);
        let outcome = tofu.judge(&host, &offered, now);
        tofu.report(&offered, &outcome);
        match outcome {
            Ok(decision) => {
                if decision.remembers() {
                    // Remembered once the handshake signature proves the
                    // server holds the key.
                    let mut pending = self.pending();
                    if pending.len() >= MAX_PENDING {
                        pending.remove(0);
                    }
                    pending.push(Pending { host, offered, now });
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(changed) => Err(cert_error(changed.to_string())),
        }
    }
}
