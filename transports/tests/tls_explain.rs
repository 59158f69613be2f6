//! A client's certificate refusals, said in words a student can act on:
//! which certificate the server showed (subject and fingerprint in
//! `openssl x509 -fingerprint -sha256` form), what was expected, what to do.
//! And the two ways to accept a self-signed certificate: its file or its
//! fingerprint. Over the in-memory pair: no sockets.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use twistor_transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor_transports::tls::{
    generate_self_signed_cert, openssl_fingerprint, sha256_fingerprint, ClientConfigBuilder,
    ServerConfigBuilder, TlsProtocol,
};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

/// A self-signed certificate with `basicConstraints CA:TRUE`, as the lab's
/// `openssl req -x509` makes: chain, key, and the certificate as PEM.
fn ca_true_cert() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert.pem(),
    )
}

/// Run a handshake; the client's failure, if any.
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Option<Reason> {
    let failed = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let cl = TlsProtocol::client(Box::new(Recorder::new().0), client, name)
        .unwrap()
        .with_failure_hook(move |r| *f.borrow_mut() = Some(r.clone()));
    let sl = TlsProtocol::server(Box::new(Echo), server).unwrap();
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    let r = failed.borrow().clone();
    r
}

fn failure(r: Option<Reason>) -> String {
    match r {
        Some(Reason::Tls(m)) => m,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[test]
fn a_self_signed_server_is_explained_with_its_fingerprint() {
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let fp = openssl_fingerprint(&sha256_fingerprint(&chain[0]));
    let server = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .build()
        .unwrap();
    let (other_ca, _) = generate_self_signed_cert(&["some other authority"]).unwrap();
    let client = ClientConfigBuilder::new().roots(other_ca).build().unwrap();
    let m = failure(handshake(server, client, "localhost"));
    assert!(m.contains("certificate verification failed"), "{m}");
    assert!(m.contains("CN=localhost"), "{m}");
    assert!(m.contains(&fp), "{m}");
    assert!(m.contains("self-signed"), "{m}");
    assert!(m.contains("trust its file or pin its fingerprint"), "{m}");
    assert!(m.contains("(UnknownIssuer)"), "{m}");
}

#[test]
fn a_ca_certificate_used_as_the_server_s_own_is_explained() {
    let (chain, key, _) = ca_true_cert();
    let fp = openssl_fingerprint(&sha256_fingerprint(&chain[0]));
    let server = ServerConfigBuilder::new()
        .cert(chain.clone(), key)
        .unwrap()
        .build()
        .unwrap();
    // Trusting the lab's certificate as an authority: refused by the web PKI.
    let client = ClientConfigBuilder::new().roots(chain).build().unwrap();
    let m = failure(handshake(server, client, "localhost"));
    assert!(m.contains("is a CA certificate (basicConstraints CA:TRUE"), "{m}");
    assert!(m.contains(&fp), "{m}");
    assert!(m.contains("pin its fingerprint"), "{m}");
    assert!(m.contains("(CaUsedAsEndEntity)"), "{m}");
}

#[test]
fn a_ca_certificate_is_explained_against_other_authorities_too() {
    // The lab's certificate met by a client trusting the usual authorities.
    let (chain, key, _) = ca_true_cert();
    let server = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .build()
        .unwrap();
    let (other_ca, _) = generate_self_signed_cert(&["some other authority"]).unwrap();
    let client = ClientConfigBuilder::new().roots(other_ca).build().unwrap();
    let m = failure(handshake(server, client, "localhost"));
    assert!(m.contains("trust its file or pin its fingerprint"), "{m}");
    assert!(m.contains("(CaUsedAsEndEntity)"), "{m}");
}

#[test]
fn trusting_the_file_of_a_ca_true_certificate_works() {
    let (chain, key, pem) = ca_true_cert();
    let file = std::env::temp_dir().join(format!("tls-explain-{}.crt", std::process::id()));
    std::fs::write(&file, pem).unwrap();
    let server = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .build()
        .unwrap();
    let client = ClientConfigBuilder::new()
        .trust_cert_file(&file)
        .unwrap()
        .build()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(handshake(server, client, "localhost").is_none());
}

#[test]
fn a_wrong_pin_names_both_fingerprints_in_openssl_form() {
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let shown = openssl_fingerprint(&sha256_fingerprint(&chain[0]));
    let server = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .build()
        .unwrap();
    let pin = "ab".repeat(32);
    let client = ClientConfigBuilder::new().pinned(&pin).build().unwrap();
    let m = failure(handshake(server, client, "localhost"));
    assert!(m.contains(&shown), "{m}");
    assert!(m.contains(&openssl_fingerprint(&pin)), "{m}");
}

#[test]
fn a_name_mismatch_lists_the_certificate_s_names() {
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let server = ServerConfigBuilder::new()
        .cert(chain.clone(), key)
        .unwrap()
        .build()
        .unwrap();
    let client = ClientConfigBuilder::new().roots(chain).build().unwrap();
    let m = failure(handshake(server, client, "127.0.0.1"));
    assert!(m.contains("is for localhost, not for 127.0.0.1"), "{m}");
    assert!(m.contains("(NotValidForName)"), "{m}");
}

#[test]
fn the_local_names_verify_as_names_and_as_addresses() {
    let (chain, key) = generate_self_signed_cert(twistor_transports::tls::LOCAL_NAMES).unwrap();
    let server = ServerConfigBuilder::new()
        .cert(chain.clone(), key)
        .unwrap()
        .build()
        .unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let client = ClientConfigBuilder::new().roots(chain.clone()).build().unwrap();
        let r = handshake(server.clone(), client, name);
        assert!(r.is_none(), "{name}: {r:?}");
    }
}
