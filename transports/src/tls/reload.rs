//! Replacing a listener's TLS configuration while it serves: renewed
//! certificates without a restart.
//!
//! A [`ReloadableServerConfig`] is what a TLS listener's factory holds: each
//! new connection takes the configuration current when it is accepted,
//! and keeps it (rustls's connection holds its own `Arc`), so connections
//! in flight finish on the certificates they started with while new ones
//! get the new certificates. [`reload_on_signal`](ReloadableServerConfig::reload_on_signal)
//! ties a reload to a signal (SIGHUP, by custom); a load that fails keeps
//! the configuration in place and logs why.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use libc::c_int;
use rustls::ServerConfig;
use twistor_reactor::Reactor;

/// A server configuration that can be replaced while listeners use it.
/// Cheap to clone (the clones share one slot); `Send + Sync`, so reactors
/// on several threads can share it.
///
/// Every TLS listener takes one ([`listen_tls`](super::listen_tls) and
/// [`TlsServerFactory`](super::TlsServerFactory) accept an
/// `Arc<ServerConfig>` too, which makes a slot nobody else holds). Keep a
/// clone to replace what the listener uses.
///
/// A replaced configuration brings its own session tickets and cache
/// (a [`ServerConfigBuilder`](super::ServerConfigBuilder) makes new ones):
/// clients then do one full handshake with the new certificate, which is
/// what a key replacement asks for.
///
/// ```no_run
/// use twistor_reactor::{Address, Protocol, Reactor, Transport, SIGHUP};
/// use twistor_transports::tls::{listen_tls, load_server_config, Passphrase, ReloadableServerConfig};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let load = || load_server_config("domain.crt", "domain.key", &Passphrase::None);
/// let certs = ReloadableServerConfig::new(load()?);
/// let mut r = Reactor::new()?;
/// listen_tls(&mut r, 1234, |_: &Address| Echo, certs.clone())?;
/// // `kill -HUP PID` after renewing the files: new connections get them.
/// certs.reload_on_signal(&mut r, SIGHUP, load)?;
/// r.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ReloadableServerConfig {
    slot: Arc<Slot>,
}

struct Slot {
    current: RwLock<Arc<ServerConfig>>,
    /// How many times the configuration was replaced.
    replaced: AtomicU64,
}

impl fmt::Debug for ReloadableServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableServerConfig")
            .field("replaced", &self.replacements())
            .finish_non_exhaustive()
    }
}

impl From<Arc<ServerConfig>> for ReloadableServerConfig {
    fn from(config: Arc<ServerConfig>) -> Self {
        ReloadableServerConfig::new(config)
    }
}

impl ReloadableServerConfig {
    /// A slot holding `config`.
    ///
    /// ```
    /// use twistor_transports::tls::{ReloadableServerConfig, ServerConfigBuilder};
    /// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let certs = ReloadableServerConfig::new(config.clone());
    /// assert!(std::sync::Arc::ptr_eq(&certs.current(), &config));
    /// ```
    pub fn new(config: Arc<ServerConfig>) -> ReloadableServerConfig {
        ReloadableServerConfig {
            slot: Arc::new(Slot {
                current: RwLock::new(config),
                replaced: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration a connection accepted now gets.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a whole Arc: keep serving with it.
        self.slot
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put `config` in place for the connections accepted from now on;
    /// those already open keep theirs.
    ///
    /// ```
    /// use twistor_transports::tls::{ReloadableServerConfig, ServerConfigBuilder};
    /// let (old, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let (new, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let certs = ReloadableServerConfig::new(old);
    /// certs.replace(new.clone());
    /// assert!(std::sync::Arc::ptr_eq(&certs.current(), &new));
    /// assert_eq!(certs.replacements(), 1);
    /// ```
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.slot.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.slot.replaced.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the configuration was replaced.
    pub fn replacements(&self) -> u64 {
        self.slot.replaced.load(Ordering::Relaxed)
    }

    /// Replace the configuration with what `load` makes, or, if it fails,
    /// keep the current one and return the error.
    ///
    /// ```
    /// use std::io;
    /// use twistor_transports::tls::{ReloadableServerConfig, ServerConfigBuilder};
    /// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let certs = ReloadableServerConfig::new(config.clone());
    /// let broken = certs.reload(|| Err(io::Error::new(io::ErrorKind::InvalidData, "bad PEM")));
    /// assert!(broken.is_err());
    /// assert!(std::sync::Arc::ptr_eq(&certs.current(), &config)); // kept
    /// ```
    pub fn reload(&self, load: impl FnOnce() -> io::Result<Arc<ServerConfig>>) -> io::Result<()> {
        let config = load()?;
        self.replace(config);
        Ok(())
    }

    /// Reload with `load` each time the process receives `signal` (see
    /// [`Reactor::add_signal_handler`]; by custom SIGHUP). `load` runs on
    /// the loop: reading a few PEM files is quick, but a key encrypted
    /// with a passphrase must not ask for it on a terminal then (give it
    /// in a file). Each reload is numbered and logged: `TLS configuration
    /// reloaded (reload N)` at info level, or `reload N failed, keeping
    /// the previous TLS configuration: WHY` as an error.
    ///
    /// With several reactors sharing this configuration, add the handler
    /// to one of them: one load serves all.
    ///
    /// ```
    /// use twistor_reactor::{Reactor, SIGUSR2};
    /// use twistor_transports::tls::{ReloadableServerConfig, ServerConfigBuilder};
    /// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let certs = ReloadableServerConfig::new(config);
    /// let mut r = Reactor::new().unwrap();
    /// certs
    ///     .reload_on_signal(&mut r, SIGUSR2, || Ok(ServerConfigBuilder::self_signed(&["localhost"])?.0))
    ///     .unwrap();
    /// // SAFETY: kill(2) on this process, whose SIGUSR2 is handled now.
    /// unsafe { libc::kill(libc::getpid(), SIGUSR2) };
    /// r.run_until(std::time::Duration::from_secs(10), |_| certs.replacements() == 1).unwrap();
    /// assert_eq!(certs.replacements(), 1);
    /// ```
    pub fn reload_on_signal(
        &self,
        r: &mut Reactor,
        signal: c_int,
        mut load: impl FnMut() -> io::Result<Arc<ServerConfig>> + 'static,
    ) -> io::Result<()> {
        let certs = self.clone();
        let mut n = 0u64;
        r.add_signal_handler(signal, move |_| {
            n += 1;
            match certs.reload(&mut load) {
                Ok(()) => log::info!("TLS configuration reloaded (reload {n})"),
                Err(e) => log::error!("reload {n} failed, keeping the previous TLS configuration: {e}"),
            }
        })
    }
}
