//! One call from a certificate and key in PEM files to a server
//! configuration, the way a lab needs it (Twisted's
//! `ssl.DefaultOpenSSLContextFactory`): the key's passphrase is asked for
//! only if the key is encrypted, and a missing file is named, with the
//! command that makes both.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use super::keys::Passphrase;
use super::server_config::load_server_config;

/// The server configuration for the certificate chain in `cert` and the
/// private key in `key` (PEM files, such as the `domain.crt` and
/// `domain.key` that `openssl req -newkey rsa:2048 -keyout domain.key
/// -x509 -days 365 -out domain.crt` writes).
///
/// When the key is encrypted, its passphrase comes from
/// [`Passphrase::from_env_or_prompt`]: the file named by
/// `TWISTOR_PASSPHRASE_FILE`, or else `Enter PEM pass phrase:` on the
/// terminal, without echo. Every error says which file it is about; when a
/// file is missing, it also gives the `openssl` command that makes both.
/// For another passphrase source, use
/// [`load_server_config`] or [`ServerConfigBuilder`](super::ServerConfigBuilder).
///
/// ```no_run
/// use twistor_reactor::{Address, Protocol, Reactor, Transport};
/// use twistor_transports::tls::{default_server_config, listen_tls};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
///         t.write(data);
///     }
/// }
///
/// let config = default_server_config("domain.crt", "domain.key")?;
/// let mut reactor = Reactor::new()?;
/// listen_tls(&mut reactor, 1234, |_: &Address| Echo, config)?;
/// reactor.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn default_server_config(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Arc<ServerConfig>> {
    let (cert, key) = (cert.as_ref(), key.as_ref());
    for file in [cert, key] {
        if !file.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not found; make a certificate and its key with: \
                     openssl req -newkey rsa:2048 -keyout {} -x509 -days 365 -out {}",
                    file.display(),
                    key.display(),
                    cert.display()
                ),
            ));
        }
    }
    load_server_config(cert, key, &Passphrase::from_env_or_prompt())
}
