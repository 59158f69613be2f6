//! The certificate of a TLS server started from the command line: the
//! files it was given, or a new self-signed one for the local names (and
//! the host it listens on), written to a file so clients can trust it.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use twistor::transports::tls::rustls::ServerConfig;
use twistor::transports::tls::{
    self, certs_from_pem, key_from_pem, openssl_fingerprint, sha256_fingerprint, Passphrase,
    ServerConfigBuilder, LOCAL_NAMES,
};

/// A server's TLS configuration, and the certificate to write for clients
/// when it was generated here.
pub struct ServerCert {
    pub config: Arc<ServerConfig>,
    generated: Option<String>,
}

impl ServerCert {
    /// The certificate and key in these PEM files.
    pub fn from_files(cert: &Path, key: &Path, passphrase: &Passphrase) -> io::Result<ServerCert> {
        Ok(ServerCert {
            config: tls::load_server_config(cert, key, passphrase)?,
            generated: None,
        })
    }

    /// A new self-signed certificate for `localhost`, `127.0.0.1`, `::1`
    /// and, when given, the host listened on (its name and addresses).
    pub fn generate(host: Option<&str>, addrs: &[IpAddr]) -> io::Result<ServerCert> {
        let names = names_for(host, addrs);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (cert_pem, key_pem) = tls::generate_self_signed_pem(&names)?;
        let chain = certs_from_pem(cert_pem.as_bytes())?;
        let fingerprint = sha256_fingerprint(&chain[0]);
        let key = key_from_pem(key_pem.as_bytes(), &Passphrase::None)?;
        let config = ServerConfigBuilder::new().cert(chain, key)?.build()?;
        log::info!("generated a self-signed certificate for {}", names.join(", "));
        log::info!(
            "its SHA-256 fingerprint: {} (hex {fingerprint})",
            openssl_fingerprint(&fingerprint)
        );
        Ok(ServerCert {
            config,
            generated: Some(cert_pem),
        })
    }

    /// Write a generated certificate (never its key) to `out`, or to
    /// `twistor-echo-PORT.crt` in the temporary directory, and log where.
    /// A failure to write where asked is an error; a failure to write the
    /// default file is only logged.
    pub fn write_for_clients(&self, out: Option<&Path>, port: u16) -> io::Result<()> {
        let Some(pem) = &self.generated else {
            return Ok(());
        };
        let path = match out {
            Some(p) => p.to_path_buf(),
            None => std::env::temp_dir().join(format!("twistor-echo-{port}.crt")),
        };
        match write_new(&path, pem.as_bytes()) {
            Ok(()) => {
                log::info!(
                    "certificate written to {}: clients can trust that file \
                     (e.g. openssl s_client -CAfile FILE, echo_tls_client --trust FILE)",
                    path.display()
                );
                Ok(())
            }
            Err(e) => {
                let e = io::Error::new(
                    e.kind(),
                    format!("cannot write the certificate to {}: {e}", path.display()),
                );
                if out.is_some() {
                    return Err(e);
                }
                log::warn!("{e} (choose a file with --cert-out)");
                Ok(())
            }
        }
    }
}

/// The names a generated certificate is for: the local ones, then the
/// host name listened on and its addresses, unless unspecified (`0.0.0.0`,
/// `::`: every interface) or already there.
fn names_for(host: Option<&str>, addrs: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
    let host = host.filter(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().is_err());
    let specific = addrs
        .iter()
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string());
    for name in host.map(str::to_string).into_iter().chain(specific) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Write `data` to `path` through a new file renamed into place: in a
/// shared directory such as /tmp, nobody else's file or symbolic link at
/// `path` is written through, and a reader never sees half a certificate.
fn write_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("certificate");
    let tmp: PathBuf = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data));
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_host_and_its_addresses_are_named_too() {
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            names_for(Some("capsule.test"), &[lan, "::1".parse().unwrap()]),
            ["localhost", "127.0.0.1", "::1", "capsule.test", "192.0.2.7"]
        );
        assert_eq!(
            names_for(Some("[2001:db8::1]"), &["2001:db8::1".parse().unwrap()]),
            ["localhost", "127.0.0.1", "::1", "2001:db8::1"]
        );
    }

    #[test]
    fn every_interface_adds_no_name() {
        assert_eq!(
            names_for(Some("0.0.0.0"), &["0.0.0.0".parse().unwrap()]),
            LOCAL_NAMES
        );
        assert_eq!(names_for(None, &[]), LOCAL_NAMES);
    }

    #[test]
    fn the_written_file_replaces_an_old_one_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("twistor-cert-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("echo.crt");
        std::fs::write(&path, "old").unwrap();
        write_new(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symbolic_link_at_the_path_is_replaced_not_written_through() {
        let dir = std::env::temp_dir().join(format!("twistor-cert-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("echo.crt");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_new(&path, b"certificate").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "certificate");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
