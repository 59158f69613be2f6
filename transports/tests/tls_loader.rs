//! `default_server_config`: the lab's one call from `domain.crt` and
//! `domain.key` to a server configuration, and the errors a student meets
//! first (a missing file, named, with the command that makes both).

use std::path::PathBuf;

use twistor_transports::tls::{default_server_config, generate_self_signed_pem};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tls-loader-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_plain_key_loads_without_asking() {
    let d = dir("plain");
    let (cert, key) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(d.join("domain.crt"), cert).unwrap();
    std::fs::write(d.join("domain.key"), key).unwrap();
    let config = default_server_config(d.join("domain.crt"), d.join("domain.key"));
    std::fs::remove_dir_all(&d).unwrap();
    assert!(config.is_ok(), "{:?}", config.err());
}

#[test]
fn a_missing_file_is_named_with_the_command_that_makes_it() {
    let d = dir("missing");
    let (cert, _) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(d.join("domain.crt"), cert).unwrap();
    let key = d.join("domain.key");
    let err = default_server_config(d.join("domain.crt"), &key).unwrap_err();
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{} not found", key.display())), "{msg}");
    assert!(msg.contains("openssl req -newkey rsa:2048 -keyout"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn a_certificate_file_that_is_not_pem_is_named() {
    let d = dir("garbage");
    let (_, key) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(d.join("domain.crt"), "not a certificate").unwrap();
    std::fs::write(d.join("domain.key"), key).unwrap();
    let err = default_server_config(d.join("domain.crt"), d.join("domain.key")).unwrap_err();
    std::fs::remove_dir_all(&d).unwrap();
    assert!(err.to_string().contains("domain.crt"), "{err}");
}
