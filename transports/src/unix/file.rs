//! The socket file of a listening Unix socket: binding it (with its mode
//! set safely), recognising and removing a stale one, and removing our own
//! when the listener goes.
//!
//! # The mode, without following a path
//! Setting the mode with `chmod(path)` after `bind` leaves a window in
//! which anyone who can write to the directory may replace the new file
//! with a symlink, and the `chmod` then changes the mode of whatever the
//! link names. So with a mode the socket is bound inside a fresh private
//! directory beside the target (`mkdtemp`: 0700, ours; nobody else can
//! add, remove or replace an entry in it), its mode is set there through
//! that directory's descriptor (`fchmodat`), and the finished file is
//! hard-linked into place (`linkat`, which never replaces an existing
//! file, so a live server's socket there still means "address in use").
//! The file appears at its path with its final mode, and nothing is ever
//! done to it through that path. (The socket's own bound name stays the
//! private one, `DIR/.twXXXXXX/s`, 11 bytes longer than `DIR/`, which must
//! fit the 107-byte limit of socket paths; clients connect through the
//! path all the same.)
//!
//! # Which file is ours
//! The listener removes the file when it goes only if the path still names
//! the same device and inode. That is enough, and the change time is not
//! needed (it changes with every `chmod` by anyone, which made a listener
//! leave its file behind): a bound socket holds a reference to its file's
//! inode for as long as the socket is open, so while the listener exists
//! no other file can be given that inode number on that device, and the
//! check is made before the listening socket is closed.
//!
//! A stale file (found, then probed, then removed) is not pinned by any
//! open socket, so there the change time stays part of the comparison:
//! a file system may give a new file the inode just freed (tmpfs does).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{UnixAddr, UnixListenOptions};

/// A file's identity while a bound socket pins it: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// The socket file a listener made, removed when it goes.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    id: FileId,
}

impl SocketFile {
    /// Remove the file if the path still names it (not a file someone put
    /// there since). Call it while the listening socket is still open.
    pub(super) fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if FileId::of(&m) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("cannot remove socket file {}: {e}", self.path.display());
                }
            }
            _ => log::debug!(
                "socket file {} is gone or replaced; left alone",
                self.path.display()
            ),
        }
    }
}

/// A bound, listening socket on `addr` (with its file, for a path),
/// dealing with a stale socket file. The mode is set before `listen`, so
/// nobody connects under the umask's permissions.
pub(super) fn bind(addr: &UnixAddr, opts: &UnixListenOptions) -> io::Result<(Socket, Option<SocketFile>)> {
    let UnixAddr::Path(path) = addr else {
        let sock = new_socket()?;
        sock.bind(&addr.sockaddr()?)?;
        sock.listen(opts.backlog)?;
        return Ok((sock, None));
    };
    let place = || match opts.mode {
        None => bind_in_place(path),
        Some(mode) => bind_with_mode(path, mode),
    };
    let (sock, id) = match place() {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let stale = check_stale(path)?;
            if !opts.remove_stale {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "stale socket file {} (nobody listens on it): remove it, or set remove_stale",
                        path.display()
                    ),
                ));
            }
            remove_stale(path, stale)?;
            place()?
        }
        other => other?,
    };
    placed(path);
    sock.listen(opts.backlog)?;
    let file = SocketFile {
        path: path.clone(),
        id,
    };
    Ok((sock, Some(file)))
}

/// socket2 opens sockets close-on-exec.
fn new_socket() -> io::Result<Socket> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Bind at `path` itself (no mode to set).
fn bind_in_place(path: &Path) -> io::Result<(Socket, FileId)> {
    let sock = new_socket()?;
    sock.bind(&SockAddr::unix(path)?)?;
    let id = FileId::of(&std::fs::symlink_metadata(path)?);
    Ok((sock, id))
}

/// Bind in a private directory, set the mode there, link into place.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<(Socket, FileId)> {
    let dir = PrivateDir::beside(path)?;
    let sock = new_socket()?;
    sock.bind(&SockAddr::unix(dir.path.join(PrivateDir::ENTRY_NAME))?)?;
    // Found through our descriptor: certainly the file bind just made
    // (whatever happened to the directory's name meanwhile).
    let id = dir.stat_entry()?;
    dir.chmod_entry(mode)?;
    dir.link_entry_to(path)?;
    Ok((sock, id))
}

/// A fresh directory only we can write to, beside the socket's path, held
/// open by descriptor; removed (with what is in it) when dropped.
struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    /// The one entry made in it: the socket file.
    const ENTRY_NAME: &'static str = "s";
    const ENTRY: &'static CStr = c"s";

    fn beside(path: &Path) -> io::Result<PrivateDir> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut template = cstring(&parent.join(".twXXXXXX"))?.into_bytes_with_nul();
        // SAFETY: a NUL-terminated, writable template ending in XXXXXX.
        if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
            return Err(io::Error::last_os_error());
        }
        template.pop();
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&template));
        let c = cstring(&path)?;
        // SAFETY: a valid path; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let dir = PrivateDir {
            path,
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        // What we opened must be the directory mkdtemp made: ours, 0700.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and out-pointer.
        if unsafe { libc::fstat(dir.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: geteuid has no failure mode.
        let me = unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != me || st.st_mode & 0o777 != 0o700 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was replaced while being set up", dir.path.display()),
            ));
        }
        Ok(dir)
    }

    /// The entry's identity; it must be a socket.
    fn stat_entry(&self) -> io::Result<FileId> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, name and out-pointer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                Self::ENTRY.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(io::Error::other("the bound socket file is not a socket"));
        }
        Ok(FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }

    fn chmod_entry(&self, mode: u32) -> io::Result<()> {
        // SAFETY: a valid descriptor and name. The entry cannot be a
        // symlink: only we can write to this directory, and it was checked.
        let rc =
            unsafe { libc::fchmodat(self.fd.as_raw_fd(), Self::ENTRY.as_ptr(), mode as libc::mode_t, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Link the entry at `path`; an existing file there is never replaced
    /// (that is "address in use", as bind would say).
    fn link_entry_to(&self, path: &Path) -> io::Result<()> {
        let to = cstring(path)?;
        // SAFETY: valid descriptors and names; flags 0 never follows a
        // symlink.
        let rc = unsafe {
            libc::linkat(
                self.fd.as_raw_fd(),
                Self::ENTRY.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "the socket path exists"));
            }
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // SAFETY: a valid descriptor and name; a missing entry is fine.
        unsafe { libc::unlinkat(self.fd.as_raw_fd(), Self::ENTRY.as_ptr(), 0) };
        if let Err(e) = std::fs::remove_dir(&self.path) {
            log::debug!("cannot remove {}: {e}", self.path.display());
        }
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

#[cfg(test)]
type Hook = Box<dyn FnMut(&Path)>;

#[cfg(test)]
thread_local! {
    /// A test's stand-in for an attacker: runs the moment the socket file
    /// first appears at its path.
    static ON_PLACED: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// The socket file has just appeared at `path`.
fn placed(path: &Path) {
    #[cfg(test)]
    ON_PLACED.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f(path)
        }
    });
    let _ = path;
}

/// A socket file found stale: its identity, with its change time (nothing
/// pins a stale file's inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stale {
    id: FileId,
    ctime: (i64, i64),
}

impl Stale {
    fn of(m: &std::fs::Metadata) -> Stale {
        Stale {
            id: FileId::of(m),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Remove the stale socket file `path`, unless it is no longer the file
/// found stale: another server starting at the same time may have removed
/// it and bound its own, live socket there in the meantime.
pub(super) fn remove_stale(path: &Path, stale: Stale) -> io::Result<()> {
    let now = std::fs::symlink_metadata(path).map(|m| Stale::of(&m));
    match now {
        Ok(s) if s == stale => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        // Gone already: someone else cleaned it up; bind will tell.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} was replaced while being checked (another server starting?)",
                path.display()
            ),
        )),
    }
}

/// What identifies `path` if it is a socket file nobody listens on; an
/// error saying why not otherwise.
pub(super) fn check_stale(path: &Path) -> io::Result<Stale> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    // A non-blocking probe: a hung server with a full backlog must not
    // block the caller.
    let probe = new_socket()?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Stale::of(&m)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EINPROGRESS) => {
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another server is listening on {} (its backlog is full)",
                    path.display()
                ),
            ))
        }
        Err(e) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use ({e})", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use twistor_reactor::{Address, Protocol, Reactor, Transport};

    use super::*;
    use crate::unix::listen_unix_with;

    struct Quiet;
    impl Protocol for Quiet {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }

    /// A stale file replaced by another server's live socket between the
    /// check and the removal is left alone: that server keeps its socket.
    #[test]
    fn a_stale_file_replaced_meanwhile_is_not_removed() {
        let path = std::env::temp_dir().join(format!("twistor-unit-stale-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let stale = check_stale(&path).unwrap();
        // Another server gets there first: its socket takes the path (a
        // rename, so that its inode is certainly not the stale one's).
        let aside = path.with_extension("new");
        let _ = std::fs::remove_file(&aside);
        let live = std::os::unix::net::UnixListener::bind(&aside).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        let err = remove_stale(&path, stale).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(path.exists(), "the live server's socket file was removed");
        std::os::unix::net::UnixStream::connect(&path).expect("the live server is still reachable");
        drop(live);
        // The genuinely stale file is removed.
        let stale = check_stale(&path).unwrap();
        remove_stale(&path, stale).unwrap();
        assert!(!path.exists());
    }

    /// The mode is never set through the path: someone who can write to
    /// the directory and swaps the socket file for a symlink the moment it
    /// appears (to a file of the server's user, say) must not have that
    /// file's mode changed.
    #[test]
    fn the_mode_is_not_set_through_a_swapped_path() {
        let dir = std::env::temp_dir().join(format!("twistor-unit-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let v2 = victim.clone();
        ON_PLACED.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |p: &Path| {
                std::fs::rename(p, p.with_extension("moved")).unwrap();
                std::os::unix::fs::symlink(&v2, p).unwrap();
            }))
        });
        let mut r = Reactor::new().unwrap();
        let opts = UnixListenOptions {
            mode: Some(0o600),
            ..UnixListenOptions::default()
        };
        let path = dir.join("s.sock");
        let res = listen_unix_with(&mut r, &path, |_: &Address| Quiet, opts);
        ON_PLACED.with(|h| h.borrow_mut().take());
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o644,
            "the victim's mode was changed through the swapped path"
        );
        // The socket itself did get its mode, before anyone could see it.
        let moved = std::fs::symlink_metadata(path.with_extension("moved")).unwrap();
        assert_eq!(moved.permissions().mode() & 0o777, 0o600);
        res.unwrap().stop_listening(&mut r);
        // The file is not ours any more (a symlink took its place): left alone.
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        // And the private directory is gone.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tw"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// With a mode, a live server's socket at the path is still "address
    /// in use", and a stale one is still replaced.
    #[test]
    fn with_a_mode_a_live_socket_is_kept_and_a_stale_one_replaced() {
        let path = std::env::temp_dir().join(format!("twistor-unit-modelive-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let opts = UnixListenOptions {
            mode: Some(0o600),
            ..UnixListenOptions::default()
        };
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind(&UnixAddr::Path(path.clone()), &opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);
        let (sock, file) = bind(&UnixAddr::Path(path.clone()), &opts).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::os::unix::net::UnixStream::connect(&path).expect("the new socket listens at the path");
        file.unwrap().remove();
        drop(sock);
        assert!(!path.exists());
    }
}
