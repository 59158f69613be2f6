//! Loading certificates and private keys from PEM: chains, PKCS#8, PKCS#1
//! and SEC1 keys, and passphrase-protected PKCS#8 keys (what `openssl req
//! -newkey rsa:2048 -keyout domain.key` writes), with the passphrase taken
//! from a prompt, a file, an environment variable or memory.
//!
//! twistor has one passphrase story, the same for the `twistor` command,
//! the examples and [`default_server_config`](super::default_server_config):
//! a file named on the command line (`--passphrase-file`) or by the
//! [`PASSPHRASE_FILE_VAR`] environment variable, or else a prompt on the
//! terminal that does not echo ([`Passphrase::from_env_or_prompt`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::prompt::read_passphrase;

/// The environment variable naming a file whose first line is the
/// passphrase of an encrypted key: `TWISTOR_PASSPHRASE_FILE`, honoured by
/// [`Passphrase::from_env_or_prompt`] (and so by the `twistor` command and
/// the examples). The variable holds a path, never the passphrase itself,
/// which would show in the process's environment.
pub const PASSPHRASE_FILE_VAR: &str = "TWISTOR_PASSPHRASE_FILE";

/// Where the passphrase of an encrypted key comes from.
///
/// ```
/// use twistor_transports::tls::Passphrase;
/// let p = Passphrase::Value("secret".into());
/// assert_eq!(p.get().unwrap(), "secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Passphrase {
    /// Ask on the terminal (`Enter PEM pass phrase:`, as OpenSSL asks);
    /// fails when standard input is not a terminal.
    Prompt,
    /// The first line of a file (like `openssl -passin file:PATH`).
    File(PathBuf),
    /// An environment variable (like `openssl -passin env:NAME`).
    Env(String),
    /// This value.
    Value(String),
    /// No passphrase is available: an encrypted key is an error.
    None,
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Passphrase::Prompt => f.write_str("Prompt"),
            Passphrase::File(p) => write!(f, "File({})", p.display()),
            Passphrase::Env(n) => write!(f, "Env({n})"),
            Passphrase::Value(_) => f.write_str("Value(<hidden>)"),
            Passphrase::None => f.write_str("None"),
        }
    }
}

impl Passphrase {
    /// twistor's usual source: the file named by [`PASSPHRASE_FILE_VAR`]
    /// (`TWISTOR_PASSPHRASE_FILE`) when it is set, else a prompt on the
    /// terminal. Either is used only when a key turns out to be encrypted.
    ///
    /// ```
    /// use twistor_transports::tls::{Passphrase, PASSPHRASE_FILE_VAR};
    /// match std::env::var_os(PASSPHRASE_FILE_VAR).filter(|f| !f.is_empty()) {
    ///     Some(f) => assert_eq!(Passphrase::from_env_or_prompt(), Passphrase::File(f.into())),
    ///     None => assert_eq!(Passphrase::from_env_or_prompt(), Passphrase::Prompt),
    /// }
    /// ```
    pub fn from_env_or_prompt() -> Passphrase {
        match std::env::var_os(PASSPHRASE_FILE_VAR) {
            Some(f) if !f.is_empty() => Passphrase::File(f.into()),
            _ => Passphrase::Prompt,
        }
    }

    /// Obtain the passphrase.
    pub fn get(&self) -> io::Result<String> {
        match self {
            Passphrase::Prompt => read_passphrase("Enter PEM pass phrase:"),
            Passphrase::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot read passphrase file {}: {e}", p.display()),
                    )
                })?;
                Ok(text.lines().next().unwrap_or("").to_string())
            }
            Passphrase::Env(name) => std::env::var(name).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the passphrase variable {name} is not set"),
                )
            }),
            Passphrase::Value(v) => Ok(v.clone()),
            Passphrase::None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the private key is encrypted and no passphrase was given \
                     (name a file holding it with {PASSPHRASE_FILE_VAR}, or run on a terminal to be asked)"
                ),
            )),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// All certificates in a PEM text, in order (leaf first for a chain).
///
/// ```
/// use twistor_transports::tls::{certs_from_pem, generate_self_signed_pem};
/// let (cert_pem, _key_pem) = generate_self_signed_pem(&["localhost"]).unwrap();
/// assert_eq!(certs_from_pem(cert_pem.as_bytes()).unwrap().len(), 1);
/// ```
pub fn certs_from_pem(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE found in the PEM text".into()));
    }
    Ok(certs)
}

/// All certificates in a PEM file.
///
/// ```no_run
/// let chain = twistor_transports::tls::load_certs("domain.crt").unwrap();
/// println!("{} certificate(s)", chain.len());
/// ```
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    certs_from_pem(&pem).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// Whether a PEM text holds an encrypted private key (PKCS#8 or the legacy
/// OpenSSL form).
///
/// ```
/// use twistor_transports::tls::is_encrypted_key;
/// assert!(is_encrypted_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
/// assert!(!is_encrypted_key(b"-----BEGIN PRIVATE KEY-----\n"));
/// ```
pub fn is_encrypted_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// The private key in a PEM text: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or an
/// encrypted PKCS#8 key decrypted with the passphrase from `passphrase`
/// (asked for only when the key is encrypted).
///
/// ```
/// use twistor_transports::tls::{generate_self_signed_pem, key_from_pem, Passphrase};
/// let (_cert_pem, key_pem) = generate_self_signed_pem(&["localhost"]).unwrap();
/// assert!(key_from_pem(key_pem.as_bytes(), &Passphrase::None).is_ok());
/// ```
pub fn key_from_pem(pem: &[u8], passphrase: &Passphrase) -> io::Result<PrivateKeyDer<'static>> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(invalid(
            "the key is encrypted in the legacy OpenSSL format (Proc-Type: 4,ENCRYPTED), which is not \
             supported; convert it to encrypted PKCS#8 with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.key -out new.key`"
                .into(),
        ));
    }
    if let Some(start) = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
        let end = text[start..]
            .find(end_marker)
            .map(|i| start + i + end_marker.len())
            .ok_or_else(|| invalid("unterminated ENCRYPTED PRIVATE KEY block".into()))?;
        return decrypt_pkcs8(&text[start..end], passphrase);
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            invalid("no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found".into())
        }
        other => invalid(format!("bad PEM private key: {other}")),
    })
}

fn decrypt_pkcs8(block: &str, passphrase: &Passphrase) -> io::Result<PrivateKeyDer<'static>> {
    use pkcs8::der::Decode;
    let (_label, doc) =
        pkcs8::SecretDocument::from_pem(block).map_err(|e| invalid(format!("bad encrypted key PEM: {e}")))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| {
        invalid(format!(
            "unsupported or damaged encrypted PKCS#8 key ({e}); convert it with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.key -out new.key`"
        ))
    })?;
    let pass = passphrase.get()?;
    let plain = info.decrypt(pass.as_bytes()).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. })
        | pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::NoPbes1CryptSupport)
        | pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::AlgorithmParametersInvalid { .. }) => {
            invalid(format!(
                "the key's encryption scheme is not supported ({e}); convert it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.key -out new.key`"
            ))
        }
        _ => io::Error::new(
            io::ErrorKind::PermissionDenied,
            "cannot decrypt the private key: wrong passphrase (or a damaged key)",
        ),
    })?;
    // A wrong passphrase can pass the padding check by chance: make sure
    // what came out is a key.
    let der = plain.as_bytes().to_vec();
    if pkcs8::PrivateKeyInfo::from_der(&der).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "cannot decrypt the private key: wrong passphrase (or a damaged key)",
        ));
    }
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
}

/// The private key in a PEM file (see [`key_from_pem`]).
///
/// ```no_run
/// use twistor_transports::tls::{load_key, Passphrase};
/// // Asks "Enter PEM pass phrase:" if the key is encrypted.
/// let key = load_key("domain.key", &Passphrase::Prompt).unwrap();
/// # let _ = key;
/// ```
pub fn load_key(path: impl AsRef<Path>, passphrase: &Passphrase) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    key_from_pem(&pem, passphrase).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// CA certificates from a PEM bundle file, or from every `*.pem` / `*.crt`
/// file of a directory (like jetforce's `--tls-cafile` / `--tls-capath`).
///
/// ```no_run
/// use twistor_transports::tls::{load_ca, ClientAuth};
/// let mode = ClientAuth::Required(load_ca("/etc/my-ca/").unwrap());
/// # let _ = mode;
/// ```
pub fn load_ca(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    if !path.is_dir() {
        return load_certs(path);
    }
    let mut all = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let is_cert = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"))
            || p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".0"));
        if is_cert && p.is_file() {
            if let Ok(pem) = std::fs::read(&p) {
                all.extend(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
            }
        }
    }
    if all.is_empty() {
        return Err(invalid(format!("no certificates found in {}", path.display())));
    }
    Ok(all)
}

/// The system's trusted roots, read from the usual bundle locations
/// (`SSL_CERT_FILE` first, then Debian/Ubuntu, Fedora/RHEL, openSUSE and
/// Alpine paths, then `SSL_CERT_DIR` or `/etc/ssl/certs`).
///
/// ```no_run
/// let roots = twistor_transports::tls::system_roots().unwrap();
/// println!("{} trusted roots", roots.len());
/// ```
pub fn system_roots() -> io::Result<Vec<CertificateDer<'static>>> {
    let mut files: Vec<PathBuf> = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    files.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem",
        ]
        .map(PathBuf::from),
    );
    for f in files {
        if f.is_file() {
            if let Ok(certs) = load_certs(&f) {
                return Ok(certs);
            }
        }
    }
    let dir = std::env::var_os("SSL_CERT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs"));
    load_ca(&dir)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("no system CA bundle found: {e}")))
}
