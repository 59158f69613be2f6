//! Certificate verifiers beyond "chains to a trusted root": a server that
//! accepts any client certificate (the Gemini convention), and clients that
//! trust a pinned fingerprint or trust on first use. All of them still
//! verify the handshake signature, so the peer proves it holds the key.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::ServerCertVerified;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerified;
use rustls::{CertificateError, Error};

use super::info::sha256_fingerprint;
use super::signatures::{ClientJudge, Judge, ServerJudge, Signed};

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

/// Known server fingerprints for trust on first use, by host name,
/// optionally kept in a file (one `host fingerprint` pair per line, like
/// a Gemini client's known_hosts). Host names compare without regard to
/// case; fingerprints are SHA-256 in hex, with or without colons.
///
/// ```
/// use twistor_transports::tls::TofuStore;
/// let store = TofuStore::in_memory();
/// assert!(store.check("example.org", "aa").is_ok()); // first use: trusted
/// assert!(store.check("example.org", "aa").is_ok());
/// assert!(store.check("example.org", "bb").is_err()); // changed: refused
/// ```
#[derive(Debug, Default)]
pub struct TofuStore {
    known: Mutex<HashMap<String, String>>,
    file: Option<PathBuf>,
}

impl TofuStore {
    /// A store that forgets everything when dropped.
    pub fn in_memory() -> Arc<TofuStore> {
        Arc::new(TofuStore::default())
    }

    /// A store kept in `path` (read now, appended to on each first use).
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Arc<TofuStore>> {
        let path = path.into();
        let mut known = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.split_whitespace();
                    if let (Some(h), Some(f)) = (parts.next(), parts.next()) {
                        known.insert(h.to_ascii_lowercase(), normal_fingerprint(f));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Arc::new(TofuStore {
            known: Mutex::new(known),
            file: Some(path),
        }))
    }

    /// The fingerprint remembered for `host`.
    pub fn get(&self, host: &str) -> Option<String> {
        self.known.lock().ok()?.get(&host.to_ascii_lowercase()).cloned()
    }

    /// Whether `fingerprint` may be trusted for `host`, without remembering
    /// anything: `Ok(true)` if it is the one remembered, `Ok(false)` if
    /// `host` is new, an error if `host` has another one.
    pub(crate) fn lookup(&self, host: &str, fingerprint: &str) -> Result<bool, String> {
        let (host, fingerprint) = (host.to_ascii_lowercase(), normal_fingerprint(fingerprint));
        let known = self.known.lock().map_err(|_| "TOFU store poisoned".to_string())?;
        match known.get(&host) {
            Some(f) if *f == fingerprint => Ok(true),
            Some(f) => Err(changed(&host, f, &fingerprint)),
            None => Ok(false),
        }
    }

    /// Check `fingerprint` for `host`: trusted if it is the one remembered,
    /// remembered and trusted if `host` is new, refused otherwise.
    pub fn check(&self, host: &str, fingerprint: &str) -> Result<(), String> {
        let (host, fingerprint) = (host.to_ascii_lowercase(), normal_fingerprint(fingerprint));
        let (host, fingerprint) = (host.as_str(), fingerprint.as_str());
        let mut known = self.known.lock().map_err(|_| "TOFU store poisoned".to_string())?;
        match known.get(host) {
            Some(f) if f == fingerprint => Ok(()),
            Some(f) => Err(changed(host, f, fingerprint)),
            None => {
                known.insert(host.to_string(), fingerprint.to_string());
                if let Some(path) = &self.file {
                    let line = format!("{host} {fingerprint}\n");
                    let res = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(line.as_bytes()));
                    if let Err(e) = res {
                        log::warn!("cannot record {host} in {}: {e}", path.display());
                    }
                }
                Ok(())
            }
        }
    }
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

fn changed(host: &str, trusted: &str, offered: &str) -> String {
    format!("the certificate of {host} changed: trusted {trusted}, offered {offered} (trust on first use)")
}

/// How a client that does not use CA roots decides to trust a server.
#[derive(Debug)]
pub(crate) enum Trust {
    /// One of these SHA-256 fingerprints (lowercase hex).
    Pinned(Vec<String>),
    /// Trust on first use.
    Tofu(Arc<TofuStore>),
}

/// Client side: trust a server by its certificate's fingerprint.
///
/// With trust on first use, a new host's certificate is remembered only
/// once the handshake signature made with its key has verified: a peer
/// that shows a certificate without holding its key is not remembered.
#[derive(Debug)]
pub(crate) struct FingerprintVerifier {
    trust: Trust,
    /// New hosts' certificates (fingerprint, host) waiting for their
    /// handshake signature.
    pending: Mutex<Vec<(String, String)>>,
}

/// At most this many first-use certificates wait for their signature at
/// once (handshakes that never get that far leave theirs behind).
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
}

impl Judge for FingerprintVerifier {
    /// The signature made with `cert`'s key verified: remember the
    /// certificate for the new host it was shown for.
    fn proven(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let Trust::Tofu(store) = &self.trust else {
            return Ok(());
        };
        let fp = sha256_fingerprint(cert);
        let hosts: Vec<String> = match self.pending.lock() {
            Ok(mut pending) => {
                let (mine, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(f, _)| *f == fp);
                *pending = rest;
                mine.into_iter().map(|(_, h)| h).collect()
            }
            Err(_) => return Err(cert_error("TOFU store poisoned".into())),
        };
        for host in hosts {
            store.check(&host, &fp).map_err(cert_error)?;
        }
        Ok(())
    }
}

fn host_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

impl ServerJudge for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        parse_check(end_entity)?;
        let fp = sha256_fingerprint(end_entity);
        match &self.trust {
            Trust::Pinned(pins) if pins.contains(&fp) => Ok(ServerCertVerified::assertion()),
            Trust::Pinned(pins) => Err(cert_error(not_pinned(&fp, pins))),
            Trust::Tofu(store) => {
                let host = host_of(server_name);
                if !store.lookup(&host, &fp).map_err(cert_error)? {
                    // New: remembered once the handshake signature proves
                    // the server holds the key.
                    if let Ok(mut pending) = self.pending.lock() {
                        if pending.len() >= MAX_PENDING {
                            pending.remove(0);
                        }
                        pending.push((fp, host));
                    }
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }
}
