//! Collects a child's exit status without blocking the loop (a pidfd on
//! Linux, a backing-off `waitpid(WNOHANG)` poll elsewhere), and applies the
//! stop policy: `SIGTERM`, then `SIGKILL` after a grace period, then reap.

use std::cell::RefCell;
use std::io;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::Interest;
use twistor_reactor::{ConnId, DelayedCall, Handler, Reactor, Ready};

use super::child::Child;
use super::pipes::{self, Core};

const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Register the exit watcher for `child`. Returns its id.
pub(super) fn start(
    r: &mut Reactor,
    child: Rc<Child>,
    core: Rc<RefCell<Core>>,
    grace: Duration,
) -> io::Result<ConnId> {
    let pid = child.pid();
    let polling = child.pidfd().is_none();
    let id = r.insert_with(move |r, id| {
        let mut reaper = Reaper {
            child,
            core,
            grace,
            kill_at: None,
            timer: None,
            poll_delay: POLL_FIRST,
        };
        if let Some(fd) = reaper.child.pidfd() {
            r.registry()
                .register(&mut SourceFd(&fd), id.token(), Interest::READABLE)?;
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

struct Reaper {
    child: Rc<Child>,
    core: Rc<RefCell<Core>>,
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
        if let Some(t) = self.timer.take() {
            t.cancel(r);
        }
        if let Some(fd) = self.child.pidfd() {
            let _ = r.registry().deregister(&mut SourceFd(&fd));
        }
        log::debug!("pid {}: {status}", self.child.pid());
        pipes::exited(r, &self.core, status);
        r.remove(id);
    }
}

impl Handler for Reaper {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, _: Ready) {
        if self.child.is_reaped() {
            return;
        }
        match self.child.try_reap() {
            Ok(Some(status)) => return self.finish(r, id, status),
            Ok(None) => {}
            Err(e) => {
                // Someone else reaped it (a SIGCHLD handler set to SIG_IGN...).
                log::error!("pid {}: cannot collect the exit status: {e}", self.child.pid());
                r.remove(id);
                return;
            }
        }
        if let Some(at) = self.kill_at {
            if r.now() >= at {
                log::warn!(
                    "pid {}: still running {:?} after SIGTERM; sending SIGKILL",
                    self.child.pid(),
                    self.grace
                );
                let _ = self.child.signal(libc::SIGKILL);
                self.kill_at = None;
            } else if self.child.pidfd().is_some() {
                self.wake_in(r, id, at - r.now());
            }
        }
        if self.child.pidfd().is_none() {
            self.wake_in(r, id, self.poll_delay);
            self.poll_delay = (self.poll_delay * 2).min(POLL_MAX);
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        if self.child.is_reaped() || self.kill_at.is_some() {
            return;
        }
        log::info!("pid {}: reactor stopping; sending SIGTERM", self.child.pid());
        let _ = self.child.signal(libc::SIGTERM);
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
        if self.child.is_reaped() {
            return;
        }
        // The reactor is going away (or giving up) with the child alive:
        // kill it and reap it rather than leave a zombie.
        let _ = self.child.signal(libc::SIGKILL);
        for _ in 0..100 {
            match self.child.try_reap() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        log::error!(
            "pid {}: did not die within 100 ms of SIGKILL; left to init",
            self.child.pid()
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
        let child = Rc::new(Child::with_pidfd(child.id(), None));
        let core = Rc::new(RefCell::new(Core {
            proto: Box::new(Quiet),
            info: Info::new(child.clone()),
        }));
        start(&mut r, child, core.clone(), Duration::from_secs(1)).unwrap();
        let done = r
            .run_until(Duration::from_secs(10), |_| core.borrow().info.status.is_some())
            .unwrap();
        assert!(done, "never reaped");
        assert_eq!(core.borrow().info.status.unwrap().code(), Some(5));
        assert_eq!(r.handler_count(), 0);
    }
}
