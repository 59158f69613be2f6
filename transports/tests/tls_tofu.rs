//! Trust on first use through `ClientConfigBuilder::tofu`, over the
//! in-memory pair: pins by host and port with their dates (`KnownHosts`)
//! or by host name alone (`TofuStore`), a changed certificate refused with
//! both fingerprints, taken on request or when the pin has expired, and
//! remembered only once the server has proved its key; every decision
//! reported; the insecure mode. No sockets at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::{self, ClientConfig, ServerConfig};
use twistor_transports::tls::{
    generate_self_signed_cert, CertificateChanged, ClientConfigBuilder, KnownHost, KnownHosts, Replacement,
    ServerCert, ServerConfigBuilder, TlsProtocol, Tofu, TofuStore, TrustDecision,
};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

/// A server for `capsule.test` with a certificate of its own, and its
/// fingerprint.
fn server() -> (Arc<ServerConfig>, String) {
    ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap()
}

/// Connect to `server` as `name`: `None` if the handshake completed, the
/// TLS layer's message if it failed.
fn connect(client: &Arc<ClientConfig>, name: &str, server: &Arc<ServerConfig>) -> Option<String> {
    let (app, log) = Recorder::new();
    let failed = Arc::new(Mutex::new(None));
    let f = failed.clone();
    let cl = TlsProtocol::client(Box::new(app), client.clone(), name)
        .unwrap()
        .with_failure_hook(move |r| *f.lock().unwrap() = Some(r.clone()));
    let sl = TlsProtocol::server(Box::new(Echo), server.clone()).unwrap();
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    let failure = failed.lock().unwrap().take();
    match failure {
        None => {
            assert_eq!(log.borrow().made, 1, "neither made nor failed");
            None
        }
        Some(Reason::Tls(m)) => Some(m),
        Some(other) => panic!("expected a TLS failure, got {other:?}"),
    }
}

type Heard = Arc<Mutex<Vec<Result<ServerCert, Box<CertificateChanged>>>>>;

/// `tofu`, reporting its decisions to the returned list.
fn heard(tofu: Tofu) -> (Tofu, Heard) {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    let tofu = tofu.on_decision(move |outcome| {
        h.lock()
            .unwrap()
            .push(outcome.cloned().map_err(|c| Box::new(c.clone())))
    });
    (tofu, heard)
}

/// A client configuration that never resumes, so that every connection's
/// certificate is judged.
fn client(tofu: Tofu) -> Arc<ClientConfig> {
    ClientConfigBuilder::new()
        .tofu(tofu)
        .session_cache(0)
        .build()
        .unwrap()
}

fn last_decision(heard: &Heard) -> Result<TrustDecision, Box<CertificateChanged>> {
    let last = heard.lock().unwrap().last().cloned().expect("a decision");
    last.map(|cert| cert.decision)
}

#[test]
fn two_ports_of_one_host_are_remembered_apart() {
    let store = KnownHosts::in_memory();
    let (a, fa) = server();
    let (b, fb) = server();
    let at_1965 = client(Tofu::new(store.clone()).port(1965));
    let at_1966 = client(Tofu::new(store.clone()).port(1966));
    assert_eq!(connect(&at_1965, "capsule.test", &a), None);
    // Another certificate on another port: a first use there, not a change.
    assert_eq!(connect(&at_1966, "capsule.test", &b), None);
    assert_eq!(store.get("capsule.test", 1965).unwrap().fingerprint, fa);
    assert_eq!(store.get("capsule.test", 1966).unwrap().fingerprint, fb);
    // Each port keeps its own: b on 1965 is a change.
    let refused = connect(&at_1965, "capsule.test", &b).expect("refused");
    assert!(
        refused.contains("the certificate of capsule.test:1965 changed")
            && refused.contains(&fa)
            && refused.contains(&fb),
        "{refused}"
    );
    // A client that does not say its port keeps its pin under port 0.
    let anywhere = client(Tofu::new(store.clone()));
    assert_eq!(connect(&anywhere, "capsule.test", &b), None);
    assert_eq!(store.get("capsule.test", 0).unwrap().fingerprint, fb);
    assert_eq!(store.entries().len(), 3);
}

#[test]
fn the_simple_store_keeps_one_pin_per_host_whatever_the_port() {
    let store = TofuStore::in_memory();
    let (a, fa) = server();
    let (b, _) = server();
    let at_1965 = client(Tofu::new(store.clone()).port(1965));
    let at_1966 = client(Tofu::new(store.clone()).port(1966));
    assert_eq!(connect(&at_1965, "capsule.test", &a), None);
    assert_eq!(connect(&at_1966, "capsule.test", &a), None);
    let refused = connect(&at_1966, "capsule.test", &b).expect("refused");
    assert!(
        refused.contains("the certificate of capsule.test changed"),
        "{refused}"
    );
    assert_eq!(store.get("capsule.test"), Some(fa));
}

#[test]
fn every_decision_is_reported_and_host_names_compare_without_case() {
    let dir = std::env::temp_dir().join(format!("twistor-tls-tofu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("known_hosts");
    let store = KnownHosts::open(&file).unwrap();
    let (tofu, heard) = heard(Tofu::new(store).port(1965));
    let cc = client(tofu);
    let (a, fa) = server();
    let (b, fb) = server();
    assert_eq!(connect(&cc, "Capsule.Test", &a), None);
    assert_eq!(last_decision(&heard), Ok(TrustDecision::FirstUse));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("capsule.test 1965 {fa} ")), "{text}");
    assert_eq!(connect(&cc, "capsule.test", &a), None);
    assert_eq!(last_decision(&heard), Ok(TrustDecision::Known));
    assert!(connect(&cc, "CAPSULE.test", &b).is_some());
    match last_decision(&heard) {
        Err(changed) => {
            assert_eq!(
                (changed.trusted.fingerprint.as_str(), changed.offered.as_str()),
                (fa.as_str(), fb.as_str())
            );
            assert_eq!(changed.trusted.port, Some(1965));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another client reading the file knows the server.
    let (tofu, heard) = heard_again(&file);
    assert_eq!(connect(&client(tofu), "capsule.test", &a), None);
    assert_eq!(last_decision(&heard), Ok(TrustDecision::Known));
    std::fs::remove_dir_all(dir).unwrap();
}

fn heard_again(file: &std::path::Path) -> (Tofu, Heard) {
    heard(Tofu::new(KnownHosts::open(file).unwrap()).port(1965))
}

#[test]
fn a_changed_certificate_is_taken_on_request_and_replaces_the_pin() {
    let store = KnownHosts::in_memory();
    let (a, fa) = server();
    let (b, fb) = server();
    let plain = client(Tofu::new(store.clone()).port(1965));
    assert_eq!(connect(&plain, "capsule.test", &a), None);
    let (tofu, heard) = heard(Tofu::new(store.clone()).port(1965).trust_new(true));
    assert_eq!(connect(&client(tofu), "capsule.test", &b), None);
    assert_eq!(
        last_decision(&heard),
        Ok(TrustDecision::Replaced {
            old: fa,
            why: Replacement::TrustNew
        })
    );
    assert_eq!(store.get("capsule.test", 1965).unwrap().fingerprint, fb);
    assert!(
        connect(&plain, "capsule.test", &a).is_some(),
        "the old pin is gone"
    );
    assert_eq!(connect(&plain, "capsule.test", &b), None);
}

fn pinned_until(expires: SystemTime) -> Arc<KnownHosts> {
    let store = KnownHosts::in_memory();
    store
        .record(KnownHost {
            host: "capsule.test".into(),
            port: 1965,
            fingerprint: "ab".repeat(32),
            first_seen: UNIX_EPOCH,
            expires,
        })
        .unwrap();
    store
}

#[test]
fn an_expired_pin_is_replaced_but_a_valid_one_is_not() {
    let (b, fb) = server();
    let expired = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let store = pinned_until(expired);
    let (tofu, heard) = heard(Tofu::new(store.clone()).port(1965));
    let before = SystemTime::now() - Duration::from_secs(1);
    assert_eq!(connect(&client(tofu), "capsule.test", &b), None);
    assert_eq!(
        last_decision(&heard),
        Ok(TrustDecision::Replaced {
            old: "ab".repeat(32),
            why: Replacement::Expired(expired)
        })
    );
    let pin = store.get("capsule.test", 1965).unwrap();
    assert_eq!(pin.fingerprint, fb);
    assert!(
        pin.first_seen >= before && pin.expires > SystemTime::now(),
        "{pin:?}"
    );

    let valid = pinned_until(SystemTime::now() + Duration::from_secs(86_400));
    let refused = connect(&client(Tofu::new(valid.clone()).port(1965)), "capsule.test", &b).expect("refused");
    assert!(
        refused.contains(&"ab".repeat(32)) && refused.contains(&fb),
        "{refused}"
    );
    assert_eq!(
        valid.get("capsule.test", 1965).unwrap().fingerprint,
        "ab".repeat(32)
    );
}

/// A server that shows `chain` but signs with another key.
fn impostor(chain: Vec<rustls::pki_types::CertificateDer<'static>>) -> Arc<ServerConfig> {
    let (_, other_key) = generate_self_signed_cert(&["other"]).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&other_key).unwrap();
    let (sc, _) = server();
    let mut sc: ServerConfig = (*sc).clone();
    sc.cert_resolver = Arc::new(rustls::sign::SingleCertAndKey::from(
        rustls::sign::CertifiedKey::new(chain, signer),
    ));
    Arc::new(sc)
}

#[test]
fn a_replacement_waits_for_the_proof_of_the_key() {
    let store = KnownHosts::in_memory();
    let (a, fa) = server();
    assert_eq!(
        connect(&client(Tofu::new(store.clone()).port(1965)), "capsule.test", &a),
        None
    );
    // Told to take a new certificate, the client meets one whose key the
    // server does not hold: refused, and the pin stays.
    let (chain, _) = generate_self_signed_cert(&["capsule.test"]).unwrap();
    let trust_new = client(Tofu::new(store.clone()).port(1965).trust_new(true));
    assert!(connect(&trust_new, "capsule.test", &impostor(chain)).is_some());
    assert_eq!(store.get("capsule.test", 1965).unwrap().fingerprint, fa);
    // The genuine new server replaces it.
    let (b, fb) = server();
    assert_eq!(connect(&trust_new, "capsule.test", &b), None);
    assert_eq!(store.get("capsule.test", 1965).unwrap().fingerprint, fb);
}

#[test]
fn insecure_takes_any_certificate_and_remembers_nothing() {
    let (tofu, heard) = heard(Tofu::insecure());
    let cc = client(tofu);
    let (a, fa) = server();
    let (b, fb) = server();
    assert_eq!(connect(&cc, "capsule.test", &a), None);
    assert_eq!(connect(&cc, "capsule.test", &b), None);
    let seen: Vec<(String, TrustDecision)> = heard
        .lock()
        .unwrap()
        .iter()
        .map(|o| {
            let c = o.as_ref().unwrap();
            (c.fingerprint.clone(), c.decision.clone())
        })
        .collect();
    assert_eq!(
        seen,
        vec![(fa, TrustDecision::Unchecked), (fb, TrustDecision::Unchecked)]
    );
    // Still, the server must hold its certificate's key.
    let (chain, _) = generate_self_signed_cert(&["capsule.test"]).unwrap();
    assert!(connect(&cc, "capsule.test", &impostor(chain)).is_some());
}
