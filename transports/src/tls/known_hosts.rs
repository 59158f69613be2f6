//! A TLS client's memory of the servers it trusts on first use, by host
//! and port: a known-hosts file with one line per server (what `twistor
//! fetch` and the Gemini client keep), and the user's data directory it
//! lives in by default.
//!
//! Each line is `HOST PORT SHA256 FIRST-SEEN EXPIRES`: the host as the
//! URL names it (a lowercase punycode name or an IP address without
//! brackets), the port, the SHA-256 fingerprint of the server's
//! certificate in lowercase hex, when it was first trusted, and when that
//! certificate expires (its notAfter), both in UTC as
//! `2025-01-31T12:00:00Z`. Blank lines and lines starting with `#` are
//! comments. A line that does not parse makes [`KnownHosts::open`] fail
//! with its line number: a damaged file must not quietly turn every server
//! into a first use.
//!
//! Changes are written to a temporary file that is then renamed over the
//! old one, after reading the file again, so a client running at the same
//! time loses nothing it recorded before.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::tofu::{Pin, PinStore};
use crate::utc::{format_time, parse_time};

/// The user's twistor data directory: `$XDG_DATA_HOME/twistor`, else
/// `$HOME/.local/share/twistor`, else `./.twistor`.
///
/// ```
/// let dir = twistor_transports::tls::default_data_dir();
/// assert!(dir.ends_with("twistor") || dir.ends_with(".twistor"));
/// ```
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match base {
        Some(b) => b.join("twistor"),
        None => PathBuf::from(".twistor"),
    }
}

/// The default known-hosts file: `known_hosts` in [`default_data_dir`].
///
/// ```
/// let file = twistor_transports::tls::default_known_hosts_path();
/// assert!(file.ends_with("known_hosts"));
/// ```
pub fn default_known_hosts_path() -> PathBuf {
    default_data_dir().join("known_hosts")
}

/// One server trusted on first use: the host as the URL names it (a
/// lowercase punycode name or an IP address without brackets), the port,
/// the SHA-256 fingerprint of its certificate in lowercase hex, when it was
/// first trusted, and when that certificate expires (its notAfter), both
/// in UTC as `2025-01-31T12:00:00Z`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use twistor_transports::tls::KnownHost;
/// let entry = KnownHost {
///     host: "example.org".into(),
///     port: 1965,
///     fingerprint: "ab".repeat(32),
///     first_seen: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
///     expires: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
/// };
/// assert!(entry.to_line().starts_with("example.org 1965 abab"));
/// assert_eq!(KnownHost::from_line(&entry.to_line()).unwrap(), entry);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// The host: a lowercase punycode name or an IP address.
    pub host: String,
    /// The port; 0 stands for any port: the pins of a client that does
    /// not say which port it connects to ([`Tofu::port`](super::Tofu::port)).
    pub port: u16,
    /// SHA-256 of the server's certificate, lowercase hex.
    pub fingerprint: String,
    /// When it was first trusted (whole seconds).
    pub first_seen: SystemTime,
    /// When the certificate expires (its notAfter, whole seconds).
    pub expires: SystemTime,
}

impl KnownHost {
    /// The line this entry is kept as (without a newline).
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.host,
            self.port,
            self.fingerprint,
            format_time(self.first_seen),
            format_time(self.expires)
        )
    }

    /// Parse one line of a known-hosts file.
    pub fn from_line(line: &str) -> Result<KnownHost, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [host, port, fingerprint, first_seen, expires] = fields[..] else {
            return Err(format!(
                "expected 5 fields (HOST PORT SHA256 FIRST-SEEN EXPIRES), found {}",
                fields.len()
            ));
        };
        if host.starts_with('#') {
            return Err(format!("{host:?} is not a host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        let fingerprint = fingerprint.to_ascii_lowercase();
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{fingerprint:?} is not a SHA-256 fingerprint (64 hex digits)"
            ));
        }
        Ok(KnownHost {
            host: host.to_ascii_lowercase(),
            port,
            fingerprint,
            first_seen: parse_time(first_seen)?,
            expires: parse_time(expires)?,
        })
    }

    /// Whether the certificate this entry remembers has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires < now
    }
}

/// The servers trusted on first use, by host and port, optionally kept in
/// a file. Shared by the connections that use it; safe to use from
/// several threads.
///
/// The file has one line per server, `HOST PORT SHA256 FIRST-SEEN
/// EXPIRES` (see [`KnownHost`]); blank lines and lines starting with `#`
/// are comments. A line that does not parse makes [`open`](Self::open)
/// fail with its line number, rather than quietly trusting every server
/// anew. Changes are merged with what is in the file at that moment and
/// renamed into place, so a client running at the same time loses nothing.
///
/// ```
/// use std::time::SystemTime;
/// use twistor_transports::tls::{KnownHost, KnownHosts};
/// let file = std::env::temp_dir().join(format!("known-hosts-doc-{}", std::process::id()));
/// let store = KnownHosts::open(&file).unwrap(); // no file yet: empty
/// assert!(store.get("example.org", 1965).is_none());
/// let now = SystemTime::now();
/// store.record(KnownHost {
///     host: "example.org".into(), port: 1965, fingerprint: "ab".repeat(32),
///     first_seen: now, expires: now,
/// }).unwrap();
/// let again = KnownHosts::open(&file).unwrap();
/// assert_eq!(again.get("Example.ORG", 1965).unwrap().fingerprint, "ab".repeat(32));
/// assert!(again.get("example.org", 1966).is_none());
/// # std::fs::remove_file(file).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct KnownHosts {
    path: Option<PathBuf>,
    entries: Mutex<Vec<KnownHost>>,
}

impl KnownHosts {
    /// A store that is not kept anywhere (forgotten when dropped).
    pub fn in_memory() -> Arc<KnownHosts> {
        Arc::new(KnownHosts::default())
    }

    /// The store kept in `path`: read now if it exists (a missing file is
    /// an empty store; the file and its directory are created at the first
    /// [`record`](Self::record)).
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Arc<KnownHosts>> {
        let path = path.into();
        let entries = read_file(&path)?;
        Ok(Arc::new(KnownHosts {
            path: Some(path),
            entries: Mutex::new(entries),
        }))
    }

    /// The store in [`default_known_hosts_path`].
    pub fn open_default() -> io::Result<Arc<KnownHosts>> {
        KnownHosts::open(default_known_hosts_path())
    }

    /// The file this store is kept in, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The entry for `host` (any case) and `port`.
    pub fn get(&self, host: &str, port: u16) -> Option<KnownHost> {
        let host = host.to_ascii_lowercase();
        self.lock()
            .iter()
            .find(|e| e.host == host && e.port == port)
            .cloned()
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<KnownHost> {
        self.lock().clone()
    }

    /// Remember `entry`, replacing any entry for its host and port, and
    /// write the file (if this store has one). An entry the file could not
    /// read back (a fingerprint that is not 64 hex digits, a host that is
    /// empty, holds a space or starts with `#`) is refused.
    pub fn record(&self, entry: KnownHost) -> io::Result<()> {
        // Kept as the file would give it back: lowercase, whole seconds.
        let entry = KnownHost::from_line(&entry.to_line()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot keep {:?} as a known host: {e}", entry.host),
            )
        })?;
        let mut entries = self.lock();
        if let Some(path) = &self.path {
            // Whatever another client wrote since we read the file stays.
            let mut merged = read_file(path)?;
            upsert(&mut merged, entry.clone());
            write_file(path, &merged)?;
            *entries = merged;
        } else {
            upsert(&mut entries, entry);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<KnownHost>> {
        // A panic while holding the lock leaves a whole Vec behind: use it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Trust on first use keeps its pins here by host and port (a client
/// that does not say its port, under port 0), with their dates.
impl PinStore for KnownHosts {
    fn pin(&self, host: &str, port: Option<u16>) -> Option<Pin> {
        self.get(host, port.unwrap_or(0)).map(Pin::from)
    }

    /// Remember `pin`; it must have its dates.
    fn remember(&self, pin: Pin) -> io::Result<()> {
        self.record(KnownHost::try_from(pin)?)
    }
}

impl From<KnownHost> for Pin {
    fn from(e: KnownHost) -> Pin {
        Pin {
            host: e.host,
            port: (e.port != 0).then_some(e.port),
            fingerprint: e.fingerprint,
            first_seen: Some(e.first_seen),
            expires: Some(e.expires),
        }
    }
}

/// A pin as a known-hosts entry: refused without its dates, which the
/// file always has.
impl TryFrom<Pin> for KnownHost {
    type Error = io::Error;

    fn try_from(pin: Pin) -> io::Result<KnownHost> {
        let (Some(first_seen), Some(expires)) = (pin.first_seen, pin.expires) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the pin of {} has no first-seen or expiry date, which a known-hosts file keeps",
                    pin.server()
                ),
            ));
        };
        Ok(KnownHost {
            host: pin.host,
            port: pin.port.unwrap_or(0),
            fingerprint: pin.fingerprint,
            first_seen,
            expires,
        })
    }
}

fn upsert(entries: &mut Vec<KnownHost>, entry: KnownHost) {
    match entries
        .iter_mut()
        .find(|e| e.host == entry.host && e.port == entry.port)
    {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
}

fn read_file(path: &Path) -> io::Result<Vec<KnownHost>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read the known-hosts file {}: {e}", path.display()),
            ))
        }
    };
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = KnownHost::from_line(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        upsert(&mut entries, entry);
    }
    Ok(entries)
}

const HEADER: &str = "# twistor known hosts (trust on first use): HOST PORT SHA256 FIRST-SEEN EXPIRES\n";

fn write_file(path: &Path, entries: &[KnownHost]) -> io::Result<()> {
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot write the known-hosts file {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let mut text = String::from(HEADER);
    for e in entries {
        text.push_str(&e.to_line());
        text.push('\n');
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn lines() {
        let line = format!(
            "Example.org 1965 {} 2024-01-01T00:00:00Z 2030-01-01T00:00:00Z",
            "AB".repeat(32)
        );
        let e = KnownHost::from_line(&line).unwrap();
        assert_eq!(e.host, "example.org");
        assert_eq!(e.fingerprint, "ab".repeat(32));
        assert!(!e.is_expired(parse_time("2029-12-31T23:59:59Z").unwrap()));
        assert!(e.is_expired(parse_time("2030-01-01T00:00:01Z").unwrap()));
        assert!(KnownHost::from_line("example.org 1965").is_err());
        assert!(KnownHost::from_line(&line.replace("1965", "70000")).is_err());
        assert!(KnownHost::from_line(&line.replace(&"AB".repeat(32), "abc")).is_err());
    }

    #[test]
    fn an_entry_that_would_not_read_back_is_refused() {
        let path = std::env::temp_dir().join(format!("twistor-kh-unreadable-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let store = KnownHosts::open(&path).unwrap();
        let entry = |host: &str, fp: &str| KnownHost {
            host: host.into(),
            port: 1965,
            fingerprint: fp.into(),
            first_seen: UNIX_EPOCH,
            expires: UNIX_EPOCH,
        };
        assert!(store.record(entry("a.example", "ab")).is_err());
        assert!(store.record(entry("two words", &"ab".repeat(32))).is_err());
        assert!(store.record(entry("", &"ab".repeat(32))).is_err());
        assert!(store.record(entry("#comment", &"ab".repeat(32))).is_err());
        assert!(store.entries().is_empty());
        store.record(entry("a.example", &"AB".repeat(32))).unwrap();
        let again = KnownHosts::open(&path).unwrap();
        assert_eq!(again.get("a.example", 1965).unwrap().fingerprint, "ab".repeat(32));
        fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_line() {
        let path = std::env::temp_dir().join(format!("twistor-kh-damaged-{}", std::process::id()));
        fs::write(&path, "# comment\n\nexample.org 1965 nothex\n").unwrap();
        let err = KnownHosts::open(&path).unwrap_err().to_string();
        assert!(err.contains(":3: "), "{err}");
        fs::remove_file(path).unwrap();
    }

    #[test]
    fn record_merges_with_what_another_client_wrote() {
        let path = std::env::temp_dir().join(format!("twistor-kh-merge-{}/known_hosts", std::process::id()));
        let _ = fs::remove_dir_all(path.parent().unwrap());
        let entry = |host: &str, fp: &str| KnownHost {
            host: host.into(),
            port: 1965,
            fingerprint: fp.repeat(32),
            first_seen: UNIX_EPOCH,
            expires: UNIX_EPOCH,
        };
        let a = KnownHosts::open(&path).unwrap();
        let b = KnownHosts::open(&path).unwrap();
        a.record(entry("a.example", "aa")).unwrap();
        b.record(entry("b.example", "bb")).unwrap();
        b.record(entry("b.example", "cc")).unwrap();
        let again = KnownHosts::open(&path).unwrap();
        assert_eq!(again.entries().len(), 2);
        assert_eq!(again.get("a.example", 1965).unwrap().fingerprint, "aa".repeat(32));
        assert_eq!(again.get("b.example", 1965).unwrap().fingerprint, "cc".repeat(32));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# twistor known hosts"), "{text}");
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
