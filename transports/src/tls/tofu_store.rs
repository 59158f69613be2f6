//! The simplest pin store: one fingerprint per host name, whatever the
//! port, optionally kept in a `host fingerprint` file that is appended to.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::decision::changed_message;
use super::tofu::{Pin, PinStore};
use super::verify::normal_fingerprint;

/// Known server fingerprints for trust on first use, by host name,
/// optionally kept in a file (one `host fingerprint` pair per line, like
/// a Gemini client's known_hosts; a later line for a host replaces an
/// earlier one). Host names compare without regard to case; fingerprints
/// are SHA-256 in hex, with or without colons.
///
/// It keeps one certificate per host name, whatever the port, and no
/// dates, so its pins never expire. For one pin per host and port, with
/// the expiry that lets a renewed certificate replace an expired one, use
/// [`KnownHosts`](super::KnownHosts). Both are [`PinStore`]s, for
/// [`ClientConfigBuilder::tofu`](super::ClientConfigBuilder::tofu).
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
        self.lock().get(&host.to_ascii_lowercase()).cloned()
    }

    /// Check `fingerprint` for `host`: trusted if it is the one remembered,
    /// remembered and trusted if `host` is new, refused otherwise (the
    /// message names both fingerprints).
    pub fn check(&self, host: &str, fingerprint: &str) -> Result<(), String> {
        let (host, fingerprint) = (host.to_ascii_lowercase(), normal_fingerprint(fingerprint));
        let mut known = self.lock();
        match known.get(&host) {
            Some(f) if *f == fingerprint => Ok(()),
            Some(f) => Err(changed_message(&self.pin_of(&host, f), &fingerprint, None)),
            None => {
                if let Err(e) = self.record(&mut known, host.clone(), fingerprint) {
                    log::warn!("{e}; the certificate of {host} is trusted for now only");
                }
                Ok(())
            }
        }
    }

    fn pin_of(&self, host: &str, fingerprint: &str) -> Pin {
        Pin {
            host: host.to_string(),
            port: None,
            fingerprint: fingerprint.to_string(),
            first_seen: None,
            expires: None,
        }
    }

    /// Remember `fingerprint` for `host` (both in their normal forms),
    /// and append it to the file.
    fn record(
        &self,
        known: &mut HashMap<String, String>,
        host: String,
        fingerprint: String,
    ) -> io::Result<()> {
        let line = format!("{host} {fingerprint}\n");
        known.insert(host, fingerprint);
        let Some(path) = &self.file else {
            return Ok(());
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot record a pin in {}: {e}", path.display()),
                )
            })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the lock leaves a whole map behind: use it.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PinStore for TofuStore {
    /// The pin for `host`, whatever the port.
    fn pin(&self, host: &str, _port: Option<u16>) -> Option<Pin> {
        let host = host.to_ascii_lowercase();
        let fingerprint = self.lock().get(&host).cloned()?;
        Some(self.pin_of(&host, &fingerprint))
    }

    /// Remember the pin's fingerprint for its host (its port and dates
    /// are not kept).
    fn remember(&self, pin: Pin) -> io::Result<()> {
        let (host, fingerprint) = (
            pin.host.to_ascii_lowercase(),
            normal_fingerprint(&pin.fingerprint),
        );
        let mut known = self.lock();
        if known.get(&host) == Some(&fingerprint) {
            return Ok(());
        }
        self.record(&mut known, host, fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_pin_is_the_one_read_back() {
        let path = std::env::temp_dir().join(format!("twistor-tofu-store-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = TofuStore::open(&path).unwrap();
        let pin = |fp: &str| Pin {
            host: "Capsule.Test".into(),
            port: Some(1965),
            fingerprint: fp.repeat(32),
            first_seen: None,
            expires: None,
        };
        store.remember(pin("aa")).unwrap();
        store.remember(pin("bb")).unwrap();
        assert_eq!(
            store.pin("capsule.test", Some(1)).unwrap().fingerprint,
            "bb".repeat(32)
        );
        let again = TofuStore::open(&path).unwrap();
        assert_eq!(again.get("capsule.test"), Some("bb".repeat(32)));
        std::fs::remove_file(path).unwrap();
    }
}
