//! Loading keys and certificates written by the real `openssl` tool: the
//! lab's encrypted key (`openssl req -newkey rsa:2048 -keyout domain.key
//! ...`), PKCS#1, SEC1 and PKCS#8 keys, legacy and PBES1 encryption, CA
//! directories. Skipped, with a message, only when openssl is absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use twistor_transports::tls::{load_ca, load_certs, load_key, load_server_config, Passphrase};

static N: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "twistor-tls-keys-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: openssl is not installed (install it to run this test)");
    }
    ok
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lab's command, with the passphrase given on the command line.
fn lab_cert(dir: &Path, pass: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "domain.key",
            "-x509",
            "-days",
            "365",
            "-out",
            "domain.crt",
            "-subj",
            "/CN=localhost",
            "-passout",
            &format!("pass:{pass}"),
        ],
    );
}

#[test]
fn lab_encrypted_key_loads_from_a_passphrase_file() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    lab_cert(&dir, "s3cret pass");
    let key_text = std::fs::read_to_string(dir.join("domain.key")).unwrap();
    assert!(key_text.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    std::fs::write(dir.join("pass.txt"), "s3cret pass\n").unwrap();
    let config = load_server_config(
        dir.join("domain.crt"),
        dir.join("domain.key"),
        &Passphrase::File(dir.join("pass.txt")),
    );
    assert!(config.is_ok(), "{:?}", config.err());
    // From memory and from the environment too.
    assert!(load_key(dir.join("domain.key"), &Passphrase::Value("s3cret pass".into())).is_ok());
    let var = format!("TWISTOR_TEST_PASS_{}", std::process::id());
    std::env::set_var(&var, "s3cret pass");
    assert!(load_key(dir.join("domain.key"), &Passphrase::Env(var)).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    lab_cert(&dir, "right");
    std::fs::write(dir.join("pass.txt"), "wrong\n").unwrap();
    let err = load_key(dir.join("domain.key"), &Passphrase::File(dir.join("pass.txt"))).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    // No passphrase source at all: says how to give one.
    let err = load_key(dir.join("domain.key"), &Passphrase::None).unwrap_err();
    assert!(err.to_string().contains("passphrase"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn legacy_and_pbes1_encryption_say_how_to_convert() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    openssl(
        &dir,
        &[
            "genrsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            "legacy.key",
            "2048",
        ],
    );
    let err = load_key(dir.join("legacy.key"), &Passphrase::Value("x".into())).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    openssl(&dir, &["genrsa", "-out", "plain.key", "2048"]);
    openssl(
        &dir,
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-3DES",
            "-in",
            "plain.key",
            "-out",
            "pbes1.key",
            "-passout",
            "pass:x",
        ],
    );
    let err = load_key(dir.join("pbes1.key"), &Passphrase::Value("x".into())).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pkcs1_sec1_and_pkcs8_keys_load() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    openssl(&dir, &["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
    assert!(std::fs::read_to_string(dir.join("rsa1.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    openssl(
        &dir,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    assert!(std::fs::read_to_string(dir.join("ec.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    openssl(&dir, &["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    for k in ["rsa1.key", "ec.key", "ed.key"] {
        let key = load_key(dir.join(k), &Passphrase::None);
        assert!(key.is_ok(), "{k}: {:?}", key.err());
    }
    // A certificate with the wrong key is refused with a clear message.
    openssl(
        &dir,
        &[
            "req", "-x509", "-key", "ec.key", "-subj", "/CN=ec", "-days", "1", "-out", "ec.crt",
        ],
    );
    let err = load_server_config(dir.join("ec.crt"), dir.join("rsa1.key"), &Passphrase::None).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(load_server_config(dir.join("ec.crt"), dir.join("ec.key"), &Passphrase::None).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ca_bundles_from_a_file_or_a_directory() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    let cas = dir.join("cas");
    std::fs::create_dir_all(&cas).unwrap();
    for name in ["one", "two"] {
        openssl(
            &cas,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "1",
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
    assert_eq!(load_ca(&cas).unwrap().len(), 2);
    assert_eq!(load_ca(cas.join("one.pem")).unwrap().len(), 1);
    let bundle = [
        std::fs::read_to_string(cas.join("one.pem")).unwrap(),
        std::fs::read_to_string(cas.join("two.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    assert_eq!(load_certs(dir.join("bundle.pem")).unwrap().len(), 2);
    assert!(load_certs(dir.join("missing.pem")).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn certificate_facts_match_what_openssl_says() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    lab_cert(&dir, "x");
    let der = load_certs(dir.join("domain.crt")).unwrap().remove(0);
    let facts = twistor_transports::tls::cert_facts(&der).unwrap();
    assert_eq!(facts.subject_cn.as_deref(), Some("localhost"));
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-serial",
            "-fingerprint",
            "-sha256",
            "-in",
            "domain.crt",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let serial = text
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .unwrap()
        .trim()
        .to_string();
    let fp: String = text
        .lines()
        .find_map(|l| l.split_once("fingerprint=").map(|(_, f)| f.replace(':', "")))
        .unwrap();
    assert_eq!(
        facts.serial.trim_start_matches('0'),
        serial.trim_start_matches('0')
    );
    assert_eq!(facts.sha256_fingerprint, fp.trim());
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let span = facts.not_after.duration_since(facts.not_before).unwrap();
    assert!(
        span >= year - std::time::Duration::from_secs(60)
            && span <= year + std::time::Duration::from_secs(60)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn system_roots_load_where_the_system_has_a_bundle() {
    if !Path::new("/etc/ssl/certs/ca-certificates.crt").exists()
        && std::env::var_os("SSL_CERT_FILE").is_none()
    {
        eprintln!("SKIPPED: no system CA bundle on this machine");
        return;
    }
    let roots = twistor_transports::tls::system_roots().unwrap();
    assert!(roots.len() > 10, "only {} roots", roots.len());
    assert!(twistor_transports::tls::ClientConfigBuilder::new()
        .build()
        .is_ok());
}
