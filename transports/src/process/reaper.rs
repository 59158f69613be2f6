//! Collects a child's exit status without blocking the loop (a pidfd on
//! Linux, a backing-off `waitpid(WNOHANG)` poll elsewhere), and applies the
//! stop policy: `SIGTERM`, then `SIGKILL` after a grace period, then reap.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::Interest;
use twistor_reactor::{ConnId, DelayedCall, Handler, Reactor, Ready};

use super::pipes::{self, Core};

const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Register the exit watcher for `pid`. Returns its id.
pub(super) fn start(
    r: &mut Reactor,
    pid: u32,
    core: Rc<RefCell<Core>>,
    grace: Duration,
) -> io::Result<ConnId> {
    start_with(r, pid, core, grace, pidfd_open(pid))
}

/// [`start`] with a given pidfd, or none to poll.
fn start_with(
    r: &mut Reactor,
    pid: u32,
    core: Rc<RefCell<Core>>,
    grace: Duration,
    pidfd: Option<OwnedFd>,
) -> io::Result<ConnId> {
    let polling = pidfd.is_none();
    let id = r.insert_with(move |r, id| {
        let mut reaper = Reaper {
            pid,
            pidfd,
            core,
            reaped: false,
            grace,
            kill_at: None,
            timer: None,
            poll_delay: POLL_FIRST,
        };
        if let Some(fd) = &reaper.pidfd {
            r.registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), id.token(), Interest::READABLE)?;
        }
        // Covers a child that exited before the pidfd existed, and starts
        // the polling fallback.
        reaper.wake_in(r, id, Duration::ZERO);
        Ok(Box::new(reaper))
    })?;
    if polling {
        log::debug!("pid {pid}: no pidfd here; polling waitpid for the exit status");
    }
    Ok(id)
}

/// A pidfd for `pid` (Linux 5.3+), close-on-exec as pidfds always are.
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_: u32) -> Option<OwnedFd> {
    None
}

/// `waitpid(pid, WNOHANG)`: the status if the child has exited.
fn try_reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid out-pointer.
        let n = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if n == 0 {
            return Ok(None);
        }
        if n > 0 {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

struct Reaper {
    pid: u32,
    pidfd: Option<OwnedFd>,
    core: Rc<RefCell<Core>>,
    reaped: bool,
    grace: Duration,
    /// Stopping: when `SIGKILL` follows the `SIGTERM`.
    kill_at: Option<Instant>,
    timer: Option<DelayedCall>,
    poll_delay: Duration,
}

impl Reaper {
    fn wake_in(&mut self, r: &mut Reactor, id: ConnId, d: Duration) {
        if let Some(t) = self.timer.take() {
            t.cancel(r);
        }
        self.timer = Some(r.call_later(d, move |r| r.requeue(id, Ready::NONE)));
    }

    fn finish(&mut self, r: &mut Reactor, id: ConnId, status: ExitStatus) {
        self.reaped = true;
        if let Some(t) = self.timer.take() {
            t.cancel(r);
        }
        if let Some(fd) = &self.pidfd {
            let _ = r.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        log::debug!("pid {}: {status}", self.pid);
        pipes::exited(r, &self.core, status);
        r.remove(id);
    }
}

impl Handler for Reaper {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, _: Ready) {
        if self.reaped {
            return;
        }
        match try_reap(self.pid) {
            Ok(Some(status)) => return self.finish(r, id, status),
            Ok(None) => {}
            Err(e) => {
                // Someone else reaped it (a SIGCHLD handler set to SIG_IGN...).
                log::error!("pid {}: cannot collect the exit status: {e}", self.pid);
                self.reaped = true;
                r.remove(id);
                return;
            }
        }
        if let Some(at) = self.kill_at {
            if r.now() >= at {
                log::warn!(
                    "pid {}: still running {:?} after SIGTERM; sending SIGKILL",
                    self.pid,
                    self.grace
                );
                // SAFETY: signalling our own unreaped child.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                self.kill_at = None;
            } else if self.pidfd.is_some() {
                self.wake_in(r, id, at - r.now());
            }
        }
        if self.pidfd.is_none() {
            self.wake_in(r, id, self.poll_delay);
            self.poll_delay = (self.poll_delay * 2).min(POLL_MAX);
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        if self.reaped || self.kill_at.is_some() {
            return;
        }
        log::info!("pid {}: reactor stopping; sending SIGTERM", self.pid);
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        self.kill_at = Some(r.now() + self.grace);
        self.wake_in(r, id, self.grace);
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        // Drop does the killing and reaping.
        r.remove(id);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The reactor is going away (or giving up) with the child alive:
        // kill it and reap it rather than leave a zombie.
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        for _ in 0..100 {
            match try_reap(self.pid) {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        log::error!(
            "pid {}: did not die within 100 ms of SIGKILL; left to init",
            self.pid
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::pipes::Info;
    use crate::process::ProcessProtocol;

    struct Quiet;
    impl ProcessProtocol for Quiet {}

    /// The fallback for systems without pidfds: polling finds the exit.
    #[test]
    #[allow(clippy::zombie_processes)] // the reaper under test waits for it
    fn polling_reaps_without_a_pidfd() {
        let mut r = Reactor::new().unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let core = Rc::new(RefCell::new(Core {
            proto: Box::new(Quiet),
            info: Info::new(pid),
        }));
        start_with(&mut r, pid, core.clone(), Duration::from_secs(1), None).unwrap();
        let done = r
            .run_until(Duration::from_secs(10), |_| core.borrow().info.status.is_some())
            .unwrap();
        assert!(done, "never reaped");
        assert_eq!(core.borrow().info.status.unwrap().code(), Some(5));
        assert_eq!(r.handler_count(), 0);
    }
}
