//! Child processes: `spawn_process` and the [`ProcessProtocol`].
//!
//! A child's stdin, stdout and stderr are non-blocking pipes, each run by the
//! reactor's stream machinery ([`open_stream`](twistor_reactor::open_stream)),
//! so reads follow the fairness budget, writes to stdin are buffered and
//! flushed after each callback with water marks, and
//! [`pause_reading`](ProcessTransport::pause_reading) really stops reading:
//! the pipe fills up and the child blocks, so memory stays bounded.
//!
//! The exit status is collected without blocking the loop: on Linux a pidfd
//! (`pidfd_open`) is registered with the reactor and the child is reaped with
//! `waitpid(WNOHANG)` when it becomes readable; elsewhere (or on kernels
//! before 5.3) `waitpid(WNOHANG)` is polled from a timer, starting at 1 ms
//! and backing off to 100 ms. Every child is reaped exactly once; none is
//! left a zombie.
//!
//! Every descriptor twistor opens is close-on-exec (pipes, sockets, the
//! pidfd, the poller), so a child inherits only its three pipes.
//!
//! # Children alive when the reactor stops
//! `Reactor::stop()` closes the child's pipes, sends it `SIGTERM`, waits up
//! to [`ProcessOptions::kill_grace`] (2 s by default) for it to exit, then
//! sends `SIGKILL` and reaps it. If the reactor's own shutdown deadline comes
//! first, or the reactor is dropped while the child runs, the child gets
//! `SIGKILL` at once and is reaped (waiting at most 100 ms for the kernel to
//! finish it off; a child stuck in uninterruptible sleep beyond that is
//! logged and left to init).
//!
//! Callbacks follow Twisted's `ProcessProtocol`: `connection_made` first;
//! `out_received` / `err_received` as output arrives; one
//! `in_connection_lost`, `out_connection_lost` and `err_connection_lost`
//! each; `process_exited` when the child exits; and `process_ended` last,
//! once it has exited and all three pipes are closed. A panic in a callback
//! closes the child's pipes and silences the protocol (no further
//! callbacks); the child is still reaped.

mod child;
mod pipes;
mod reaper;

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{ConnId, Reactor};

use child::Child;
use pipes::{Core, Info, Which};

/// Default time between `SIGTERM` and `SIGKILL` for children alive at
/// `stop()`.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// The application side of a child process (Twisted's `ProcessProtocol`).
/// Every method has a default that does nothing.
///
/// ```
/// use std::process::ExitStatus;
/// use twistor_transports::process::{ProcessProtocol, ProcessTransport};
///
/// /// Collects what the child prints, and stops the reactor at the end.
/// struct Collect(Vec<u8>);
/// impl ProcessProtocol for Collect {
///     fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
///         self.0.extend_from_slice(data);
///     }
///     fn process_ended(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {
///         println!("{status}: {}", String::from_utf8_lossy(&self.0));
///         t.reactor().stop();
///     }
/// }
/// ```
#[allow(unused_variables)]
pub trait ProcessProtocol: std::any::Any {
    /// The child is running and its pipes are open. Exactly once, first.
    fn connection_made(&mut self, t: &mut dyn ProcessTransport) {}

    /// The child wrote to its stdout. `data` borrows the reactor's shared
    /// buffer.
    fn out_received(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {}

    /// The child wrote to its stderr.
    fn err_received(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {}

    /// The child's stdin is closed (by `close_stdin`, or because the child
    /// closed its end). Exactly once.
    fn in_connection_lost(&mut self, t: &mut dyn ProcessTransport) {}

    /// The child's stdout is closed. Exactly once.
    fn out_connection_lost(&mut self, t: &mut dyn ProcessTransport) {}

    /// The child's stderr is closed. Exactly once.
    fn err_connection_lost(&mut self, t: &mut dyn ProcessTransport) {}

    /// The child exited (its pipes may still hold output). Exactly once.
    fn process_exited(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {}

    /// The child exited and all three pipes are closed: the very last
    /// callback. Exactly once.
    fn process_ended(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {}

    /// The stdin buffer went over its high-water mark: stop writing until
    /// `resume_writing`.
    fn pause_writing(&mut self, t: &mut dyn ProcessTransport) {}

    /// The stdin buffer drained below its low-water mark.
    fn resume_writing(&mut self, t: &mut dyn ProcessTransport) {}
}

impl dyn ProcessProtocol {
    /// Downcast to the concrete protocol type (e.g. in [`Process::call`]).
    pub fn downcast_mut<T: ProcessProtocol>(&mut self) -> Option<&mut T> {
        (self as &mut dyn std::any::Any).downcast_mut::<T>()
    }

    /// Downcast to the concrete protocol type.
    pub fn downcast_ref<T: ProcessProtocol>(&self) -> Option<&T> {
        (self as &dyn std::any::Any).downcast_ref::<T>()
    }
}

/// The child process as seen from a [`ProcessProtocol`] callback (Twisted's
/// `IProcessTransport`).
///
/// Operations on a pipe other than the one whose event is being delivered
/// take effect right after the callback returns, in the order they were made.
///
/// ```
/// use twistor_transports::process::{ProcessProtocol, ProcessTransport};
///
/// /// Feeds the child one line, then stops its output once it has answered.
/// struct Ask;
/// impl ProcessProtocol for Ask {
///     fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
///         t.write(b"2+2\n");
///         t.close_stdin();
///     }
///     fn out_received(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {
///         println!("pid {} says {}", t.pid(), String::from_utf8_lossy(data));
///         t.pause_reading();
///     }
/// }
/// ```
pub trait ProcessTransport {
    /// Queue bytes for the child's stdin (flushed after the callback).
    fn write(&mut self, data: &[u8]);

    /// Flush what is queued, then close the child's stdin (it sees EOF).
    fn close_stdin(&mut self);

    /// Close our end of the child's stdout (it gets `SIGPIPE` or `EPIPE` if
    /// it writes more).
    fn close_stdout(&mut self);

    /// Close our end of the child's stderr.
    fn close_stderr(&mut self);

    /// Close all three pipes (Twisted's `loseConnection`).
    fn lose_connection(&mut self) {
        self.close_stdin();
        self.close_stdout();
        self.close_stderr();
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) to the child, through its
    /// pidfd where the system has them. Fails with `ESRCH` once the child
    /// has been reaped, so a recycled pid is never signalled.
    fn signal_process(&mut self, signal: i32) -> io::Result<()>;

    /// The child's process id.
    fn pid(&self) -> u32;

    /// The exit status, once the child has exited.
    fn status(&self) -> Option<ExitStatus>;

    /// Stop reading the child's stdout and stderr: the pipes fill and the
    /// child blocks on its next write.
    fn pause_reading(&mut self);

    /// Read stdout and stderr again.
    fn resume_reading(&mut self);

    /// The reactor.
    fn reactor(&mut self) -> &mut Reactor;
}

/// Knobs for [`spawn_command`].
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::process::ProcessOptions;
/// let o = ProcessOptions { kill_grace: Duration::from_millis(500), ..Default::default() };
/// assert!(o.stdin_high_water > o.stdin_low_water);
/// ```
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// At `stop()`: time between `SIGTERM` and `SIGKILL`.
    pub kill_grace: Duration,
    /// The stdin buffer's high-water mark (raises `pause_writing`).
    pub stdin_high_water: usize,
    /// The stdin buffer's low-water mark (raises `resume_writing`).
    pub stdin_low_water: usize,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            kill_grace: DEFAULT_KILL_GRACE,
            stdin_high_water: twistor_reactor::DEFAULT_HIGH_WATER,
            stdin_low_water: twistor_reactor::DEFAULT_LOW_WATER,
        }
    }
}

/// The handle [`spawn_process`] returns. The child lives on in the reactor
/// whether or not this handle is kept.
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// use twistor_transports::process::{spawn_process, ProcessProtocol};
///
/// struct Quiet;
/// impl ProcessProtocol for Quiet {}
///
/// let mut r = Reactor::new().unwrap();
/// let child = spawn_process(&mut r, Quiet, "sleep", ["30"], None, None).unwrap();
/// child.signal_process(libc::SIGTERM).unwrap();
/// r.run_until(Duration::from_secs(10), |_| child.has_ended()).unwrap();
/// assert_eq!(child.status().unwrap().signal(), Some(libc::SIGTERM));
/// ```
pub struct Process {
    child: Rc<Child>,
    core: Rc<RefCell<Core>>,
    /// The pipes' stream ids, readable while the protocol is busy.
    ids: Rc<Cell<[Option<ConnId>; 3]>>,
}

impl Process {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The exit status, once the child has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        self.core.try_borrow().ok().and_then(|c| c.info.status)
    }

    /// Whether `process_ended` has been delivered (or would have been).
    pub fn has_ended(&self) -> bool {
        self.core.try_borrow().map(|c| c.info.ended).unwrap_or(false)
    }

    /// Send `signal` to the child: through its pidfd where the system has
    /// them, so never to another process that got its pid after it was
    /// reaped; `ESRCH` once it has been reaped.
    pub fn signal_process(&self, signal: i32) -> io::Result<()> {
        self.child.signal(signal)
    }

    /// Run `f` against the protocol and its transport after the current
    /// callback returns (the process version of [`Reactor::call_on`]).
    /// Dropped once the process has ended.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_reactor::Reactor;
    /// use twistor_transports::process::{spawn_process, ProcessProtocol, ProcessTransport};
    ///
    /// #[derive(Default)]
    /// struct Lines(usize);
    /// impl ProcessProtocol for Lines {
    ///     fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
    ///         self.0 += data.iter().filter(|&&b| b == b'\n').count();
    ///     }
    /// }
    ///
    /// let mut r = Reactor::new().unwrap();
    /// let child = spawn_process(&mut r, Lines::default(), "cat", [""; 0], None, None).unwrap();
    /// child.write(&mut r, b"one\ntwo\n");
    /// // Ask the protocol how many lines it has seen, until it has both.
    /// let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    /// r.run_until(Duration::from_secs(10), |r| {
    ///     let s = seen.clone();
    ///     child.call(r, move |p, _| s.set(p.downcast_mut::<Lines>().unwrap().0));
    ///     seen.get() == 2
    /// })
    /// .unwrap();
    /// assert_eq!(seen.get(), 2);
    /// child.close_stdin(&mut r);
    /// r.run_until(Duration::from_secs(10), |_| child.has_ended()).unwrap();
    /// assert!(child.status().unwrap().success());
    /// ```
    pub fn call(
        &self,
        r: &mut Reactor,
        f: impl FnOnce(&mut dyn ProcessProtocol, &mut dyn ProcessTransport) + 'static,
    ) {
        let core = self.core.clone();
        r.call_soon(move |r| pipes::call(r, &core, f));
    }

    /// The id of the stream that runs pipe `which`, while it is open.
    fn pipe_id(&self, which: Which) -> Option<ConnId> {
        self.ids.get()[which as usize]
    }

    /// The id of the stream that runs the child's stdin, while it is open:
    /// `reactor.write_to(id, ..)` and `reactor.close(id)` work on it.
    pub fn stdin_id(&self) -> Option<ConnId> {
        self.pipe_id(Which::In)
    }

    /// Queue `data` for the child's stdin (from outside the protocol;
    /// delivered after the current callback). Ignored once stdin is closed.
    pub fn write(&self, r: &mut Reactor, data: &[u8]) {
        if let Some(id) = self.stdin_id() {
            let _ = r.write_to(id, data.to_vec());
        }
    }

    /// Flush, then close the child's stdin.
    pub fn close_stdin(&self, r: &mut Reactor) {
        if let Some(id) = self.stdin_id() {
            let _ = r.close(id);
        }
    }

    /// Stop reading the child's stdout and stderr.
    pub fn pause_reading(&self, r: &mut Reactor) {
        for w in [Which::Out, Which::Err] {
            if let Some(id) = self.pipe_id(w) {
                let _ = r.call_on(id, |_, t| t.pause_reading());
            }
        }
    }

    /// Read the child's stdout and stderr again.
    pub fn resume_reading(&self, r: &mut Reactor) {
        for w in [Which::Out, Which::Err] {
            if let Some(id) = self.pipe_id(w) {
                let _ = r.call_on(id, |_, t| t.resume_reading());
            }
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Process({})", self.child.pid())
    }
}

/// Start `program` with `args` and run `protocol` over its stdin, stdout and
/// stderr (Twisted's `reactor.spawnProcess`).
///
/// `env`: `None` inherits this process's environment; `Some(vars)` gives the
/// child exactly `vars`. `cwd`: `None` keeps the current directory.
///
/// ```
/// use std::process::ExitStatus;
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// use twistor_transports::process::{spawn_process, ProcessProtocol, ProcessTransport};
///
/// struct Upper(Vec<u8>);
/// impl ProcessProtocol for Upper {
///     fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
///         t.write(b"hello");
///         t.close_stdin();
///     }
///     fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
///         self.0.extend_from_slice(data);
///     }
///     fn process_ended(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {
///         assert!(status.success());
///         assert_eq!(self.0, b"HELLO");
///         t.reactor().stop();
///     }
/// }
///
/// let mut r = Reactor::new().unwrap();
/// let child = spawn_process(&mut r, Upper(Vec::new()), "tr", ["a-z", "A-Z"], None, None).unwrap();
/// r.run_until(Duration::from_secs(10), |_| child.has_ended()).unwrap();
/// assert!(child.status().unwrap().success());
/// ```
pub fn spawn_process<P, I, S>(
    r: &mut Reactor,
    protocol: P,
    program: impl AsRef<OsStr>,
    args: I,
    env: Option<&[(&str, &str)]>,
    cwd: Option<&Path>,
) -> io::Result<Process>
where
    P: ProcessProtocol,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(vars) = env {
        cmd.env_clear();
        cmd.envs(vars.iter().copied());
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    spawn_command(r, protocol, cmd, ProcessOptions::default())
}

/// Start a prepared [`Command`] (any of its settings: environment, working
/// directory, `uid`, `pre_exec`...) under `protocol`. Its stdin, stdout and
/// stderr are replaced with pipes.
///
/// ```
/// use std::process::Command;
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// use twistor_transports::process::{spawn_command, ProcessOptions, ProcessProtocol};
///
/// struct Quiet;
/// impl ProcessProtocol for Quiet {}
///
/// let mut r = Reactor::new().unwrap();
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "exit 3"]);
/// let child = spawn_command(&mut r, Quiet, cmd, ProcessOptions::default()).unwrap();
/// r.run_until(Duration::from_secs(10), |_| child.has_ended()).unwrap();
/// assert_eq!(child.status().unwrap().code(), Some(3));
/// ```
pub fn spawn_command<P: ProcessProtocol>(
    r: &mut Reactor,
    protocol: P,
    mut cmd: Command,
    opts: ProcessOptions,
) -> io::Result<Process> {
    // std creates the pipes close-on-exec; the child gets them as 0, 1, 2.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let (stdin, stdout, stderr) = (
        child.stdin.take().expect("piped stdin"),
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    // From here on the reaper owns the child: `Child` neither waits nor
    // kills on drop.
    drop(child);
    let child = Rc::new(Child::new(pid));
    let core = Rc::new(RefCell::new(Core {
        proto: Box::new(protocol),
        info: Info::new(child.clone()),
    }));
    // The reaper goes first so that whatever fails below, the child is
    // still killed and reaped.
    let reaper = reaper::start(r, child.clone(), core.clone(), opts.kill_grace)?;
    let opened = pipes::open(r, &core, stdin, stdout, stderr, &opts);
    if let Err(e) = opened {
        r.remove(reaper);
        return Err(e);
    }
    let ids = core.borrow().info.ids.clone();
    Ok(Process { child, core, ids })
}
