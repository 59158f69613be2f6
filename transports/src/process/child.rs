//! Which process a child is, and the only ways twistor touches it:
//! signalling it and reaping it.
//!
//! A pid names a process only until that process is reaped; after that the
//! number may be given to any new process, and `kill(pid)` would signal a
//! stranger. A pidfd (Linux 5.3+) names the one process it was opened for:
//! signals go through it (`pidfd_send_signal`), which fails with `ESRCH`
//! once the child is gone, whoever reaped it. Beyond that, a child known to
//! be reaped is never signalled at all (the rule that remains where there
//! is no pidfd).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A child process: its pid, its pidfd where the system has them, and
/// whether it has been reaped.
#[derive(Debug)]
pub(super) struct Child {
    pid: u32,
    pidfd: Option<OwnedFd>,
    reaped: Cell<bool>,
}

impl Child {
    /// The child with process id `pid`, just spawned (not reaped yet).
    pub(super) fn new(pid: u32) -> Child {
        Child::with_pidfd(pid, pidfd_open(pid))
    }

    /// The child `pid`, named by `pidfd` (or by its pid alone, without).
    pub(super) fn with_pidfd(pid: u32, pidfd: Option<OwnedFd>) -> Child {
        Child {
            pid,
            pidfd,
            reaped: Cell::new(false),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd, to wait on: it becomes readable when the child exits.
    pub(super) fn pidfd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub(super) fn is_reaped(&self) -> bool {
        self.reaped.get()
    }

    /// Send `sig` to this child and no other process: through the pidfd
    /// where there is one, and never once the child is known to be reaped
    /// (`ESRCH`, as for a process that does not exist).
    pub(super) fn signal(&self, sig: i32) -> io::Result<()> {
        if self.reaped.get() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let rc = match &self.pidfd {
            Some(fd) => pidfd_send_signal(fd.as_raw_fd(), sig),
            // SAFETY: signalling our own child, which is not reaped yet.
            None => unsafe { libc::kill(self.pid as libc::pid_t, sig) },
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `waitpid(pid, WNOHANG)`: the status if the child has exited (it is
    /// then reaped). An error means it cannot be waited for any more
    /// (someone else reaped it): it counts as reaped too.
    pub(super) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        if self.reaped.get() {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        let mut status = 0;
        loop {
            // SAFETY: waitpid with a valid out-pointer.
            let n = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if n == 0 {
                return Ok(None);
            }
            if n > 0 {
                self.reaped.set(true);
                return Ok(Some(ExitStatus::from_raw(status)));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                self.reaped.set(true);
                return Err(e);
            }
        }
    }
}

/// A pidfd for `pid` (Linux 5.3+), close-on-exec as pidfds always are.
#[cfg(target_os = "linux")]
pub(super) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
pub(super) fn pidfd_open(_: u32) -> Option<OwnedFd> {
    None
}

/// `pidfd_send_signal(fd, sig, NULL, 0)`: 0, or -1 with errno set.
#[cfg(target_os = "linux")]
fn pidfd_send_signal(fd: RawFd, sig: i32) -> i32 {
    // SAFETY: a plain syscall on a descriptor we own; no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc as i32
}

#[cfg(not(target_os = "linux"))]
fn pidfd_send_signal(_: RawFd, _: i32) -> i32 {
    unreachable!("pidfds exist only on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` (our child) is still running, without reaping it.
    fn running(pid: u32) -> bool {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only looks; a valid out-pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: reading the pid field waitid filled in (0 if nothing exited).
        rc == 0 && unsafe { info.si_pid() } == 0
    }

    /// Wait (bounded) for the child to exit, and reap it.
    fn reap(pid: u32) -> ExitStatus {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; the child was sent
        // SIGKILL or SIGTERM, so this returns promptly.
        let n = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        assert_eq!(n as u32, pid);
        ExitStatus::from_raw(status)
    }

    /// A pid that now names another process (as a reaped child's pid may,
    /// once reused) is never signalled: the signal goes to the process the
    /// pidfd names, and once that one is reaped, to nobody.
    #[test]
    fn a_signal_reaches_the_child_and_never_a_process_that_took_its_pid() {
        let mut ours = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut stranger = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let Some(fd) = pidfd_open(ours.id()) else {
            eprintln!("no pidfds on this system; nothing to check");
            let _ = (ours.kill(), stranger.kill(), ours.wait(), stranger.wait());
            return;
        };
        // Our child as a reused pid would leave it: the number now names
        // the stranger.
        let child = Child::with_pidfd(stranger.id(), Some(fd));
        child.signal(libc::SIGTERM).unwrap();
        assert_eq!(reap(ours.id()).signal(), Some(libc::SIGTERM));
        assert!(running(stranger.id()), "the stranger got our signal");
        // Reaped behind our back: the pidfd knows it is gone.
        let err = child.signal(libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert!(running(stranger.id()), "the stranger got our signal");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    /// Once reaped through `try_reap`, a child is never signalled again,
    /// pidfd or not.
    #[test]
    #[allow(clippy::zombie_processes)] // try_reap, under test, waits for it
    fn a_reaped_child_is_never_signalled() {
        for with_pidfd in [true, false] {
            let c = std::process::Command::new("sh")
                .args(["-c", "exit 4"])
                .spawn()
                .unwrap();
            let fd = if with_pidfd { pidfd_open(c.id()) } else { None };
            let child = Child::with_pidfd(c.id(), fd);
            let mut p = libc::pollfd {
                fd: child.pidfd().unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            };
            let mut status = None;
            // Up to 20 s: wait for the exit on the pidfd (a 10 ms tick without).
            for _ in 0..2000 {
                status = child.try_reap().unwrap();
                if status.is_some() {
                    break;
                }
                // SAFETY: one pollfd; a negative fd is ignored by poll.
                unsafe { libc::poll(&mut p, 1, 10) };
            }
            assert_eq!(status.expect("the child never exited").code(), Some(4));
            assert!(child.is_reaped());
            let err = child.signal(libc::SIGTERM).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        }
    }
}
