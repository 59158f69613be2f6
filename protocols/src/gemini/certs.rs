//! A capsule's own certificate when none is given: generated once for its
//! host names and kept in a state directory, so that it is the same on
//! every start and clients that trust it on first use keep trusting it.
//!
//! Files: `DIR/NAME.crt` and `DIR/NAME.key` (PEM; the key readable by its
//! owner only, the directory too), `NAME` being the first host name. They
//! are written to temporary files and renamed into place, so a crash never
//! leaves half a key behind.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use twistor_transports::tls::{
    certs_from_pem, generate_self_signed_pem, key_from_pem, sha256_fingerprint, Passphrase,
};

/// A certificate loaded from, or just generated into, a state directory.
#[derive(Debug)]
pub struct KeptCert {
    /// The chain (one self-signed certificate).
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 fingerprint of the certificate, lowercase hex.
    pub fingerprint: String,
    /// The certificate's file.
    pub cert_path: PathBuf,
    /// Whether it was generated now (false: loaded from a previous run).
    pub created: bool,
}

/// The default state directory: `$XDG_DATA_HOME/twistor/gemini`, else
/// `$HOME/.local/share/twistor/gemini`, else `./.twistor-gemini`.
///
/// ```
/// let dir = twistor_protocols::gemini::default_state_dir();
/// assert!(dir.ends_with("gemini"));
/// ```
pub fn default_state_dir() -> PathBuf {
    let data = super::default_data_dir();
    if data.ends_with(".twistor") {
        // Neither XDG_DATA_HOME nor HOME: a directory of the current one.
        return PathBuf::from(".twistor-gemini");
    }
    data.join("gemini")
}

/// Load the certificate kept in `dir` for `names` (the first name picks
/// the files), or generate one for all of `names` and keep it there.
///
/// ```
/// use twistor_protocols::gemini::load_or_generate_cert;
/// let dir = std::env::temp_dir().join(format!("twistor-doc-certs-{}", std::process::id()));
/// let first = load_or_generate_cert(&dir, &["localhost"]).unwrap();
/// let again = load_or_generate_cert(&dir, &["localhost"]).unwrap();
/// assert!(first.created && !again.created);
/// assert_eq!(first.fingerprint, again.fingerprint);
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn load_or_generate_cert(dir: &Path, names: &[&str]) -> io::Result<KeptCert> {
    let first = names.first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "no host name to make a certificate for",
        )
    })?;
    let stem: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let created = !(cert_path.exists() && key_path.exists());
    if created {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create the state directory {}: {e}", dir.display()),
                )
            })?;
        let (cert_pem, key_pem) = generate_self_signed_pem(names)?;
        // The key first: a certificate is never there without its key.
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
    }
    let read = |p: &Path| {
        fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))
    };
    let chain = certs_from_pem(&read(&cert_path)?)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cert_path.display())))?;
    let key = key_from_pem(&read(&key_path)?, &Passphrase::None)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", key_path.display())))?;
    let fingerprint = sha256_fingerprint(&chain[0]);
    Ok(KeptCert {
        chain,
        key,
        fingerprint,
        cert_path,
        created,
    })
}

fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}
