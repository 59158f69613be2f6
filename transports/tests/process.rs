//! Child processes: stdin/stdout round trip, stderr, exit codes and signals,
//! environment and directory, descriptors a child inherits, flow control,
//! the stop policy and panic isolation.

use std::cell::{Ref, RefCell};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;
use twistor_reactor::Reactor;
use twistor_transports::process::{
    spawn_command, spawn_process, ProcessOptions, ProcessProtocol, ProcessTransport,
};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default, Debug)]
struct Log {
    events: Vec<String>,
    out: Vec<u8>,
    err: Vec<u8>,
    exited: Option<ExitStatus>,
    ended: Option<ExitStatus>,
}

type Hook = Box<dyn FnMut(&mut dyn ProcessTransport, &mut Log)>;

/// Records every callback; `on_made` runs in `connection_made`,
/// `on_out` after each `out_received`.
struct Rec {
    log: Rc<RefCell<Log>>,
    on_made: Option<Hook>,
    on_out: Option<Hook>,
}

fn rec() -> (Rec, Rc<RefCell<Log>>) {
    let log = Rc::new(RefCell::new(Log::default()));
    let r = Rec {
        log: log.clone(),
        on_made: None,
        on_out: None,
    };
    (r, log)
}

impl ProcessProtocol for Rec {
    fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
        self.log.borrow_mut().events.push("made".into());
        if let Some(f) = self.on_made.as_mut() {
            f(t, &mut self.log.borrow_mut());
        }
    }
    fn out_received(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {
        self.log.borrow_mut().out.extend_from_slice(data);
        if let Some(f) = self.on_out.as_mut() {
            f(t, &mut self.log.borrow_mut());
        }
    }
    fn err_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
        self.log.borrow_mut().err.extend_from_slice(data);
    }
    fn in_connection_lost(&mut self, _: &mut dyn ProcessTransport) {
        self.log.borrow_mut().events.push("in_lost".into());
    }
    fn out_connection_lost(&mut self, _: &mut dyn ProcessTransport) {
        self.log.borrow_mut().events.push("out_lost".into());
    }
    fn err_connection_lost(&mut self, _: &mut dyn ProcessTransport) {
        self.log.borrow_mut().events.push("err_lost".into());
    }
    fn process_exited(&mut self, _: &mut dyn ProcessTransport, status: ExitStatus) {
        let mut l = self.log.borrow_mut();
        l.events.push("exited".into());
        l.exited = Some(status);
    }
    fn process_ended(&mut self, _: &mut dyn ProcessTransport, status: ExitStatus) {
        let mut l = self.log.borrow_mut();
        l.events.push("ended".into());
        l.ended = Some(status);
    }
}

fn run_to_end(r: &mut Reactor, log: &Rc<RefCell<Log>>) {
    assert!(
        r.run_until(WAIT, |_| log.borrow().ended.is_some()).unwrap(),
        "the child did not end: {:?}",
        log.borrow()
    );
}

fn count(log: &Log, e: &str) -> usize {
    log.events.iter().filter(|x| *x == e).count()
}

#[test]
fn cat_echoes_stdin_to_stdout_with_every_callback_once() {
    let mut r = Reactor::new().unwrap();
    let (mut p, log) = rec();
    p.on_made = Some(Box::new(|t, _| {
        t.write(b"hello ");
        t.write(b"cat\n");
        t.close_stdin();
    }));
    let child = spawn_process(&mut r, p, "cat", [""; 0], None, None).unwrap();
    assert!(child.pid() > 0);
    run_to_end(&mut r, &log);
    let log = log.borrow();
    assert_eq!(log.out, b"hello cat\n");
    assert!(log.err.is_empty());
    assert!(log.ended.unwrap().success());
    assert_eq!(log.events.first().map(String::as_str), Some("made"));
    assert_eq!(log.events.last().map(String::as_str), Some("ended"));
    for e in ["made", "in_lost", "out_lost", "err_lost", "exited", "ended"] {
        assert_eq!(count(&log, e), 1, "{e} in {:?}", log.events);
    }
    assert!(child.has_ended());
    assert_eq!(child.status(), log.exited);
}

#[test]
fn stderr_is_separate_from_stdout() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    spawn_process(
        &mut r,
        p,
        "sh",
        ["-c", "echo out; echo err >&2; echo out2"],
        None,
        None,
    )
    .unwrap();
    run_to_end(&mut r, &log);
    let log = log.borrow();
    assert_eq!(log.out, b"out\nout2\n");
    assert_eq!(log.err, b"err\n");
}

#[test]
fn exit_code_is_reported() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    spawn_process(&mut r, p, "sh", ["-c", "exit 7"], None, None).unwrap();
    run_to_end(&mut r, &log);
    let status = log.borrow().ended.unwrap();
    assert_eq!(status.code(), Some(7));
    assert_eq!(status.signal(), None);
}

#[test]
fn death_by_signal_is_reported_and_a_reaped_child_is_not_signalled() {
    let mut r = Reactor::new().unwrap();
    let (mut p, log) = rec();
    p.on_made = Some(Box::new(|t, _| t.signal_process(libc::SIGTERM).unwrap()));
    let child = spawn_process(&mut r, p, "sleep", ["30"], None, None).unwrap();
    run_to_end(&mut r, &log);
    let status = log.borrow().ended.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(status.code(), None);
    let e = child.signal_process(libc::SIGTERM).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
}

#[test]
fn environment_and_directory_are_set() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    let env = [("GREETING", "bonjour")];
    let dir = std::env::temp_dir().canonicalize().unwrap();
    spawn_process(
        &mut r,
        p,
        "/bin/sh",
        ["-c", "echo \"$GREETING $HOME\"; pwd"],
        Some(&env),
        Some(&dir),
    )
    .unwrap();
    run_to_end(&mut r, &log);
    let expected = format!("bonjour \n{}\n", dir.display());
    assert_eq!(String::from_utf8_lossy(&log.borrow().out), expected);
}

#[test]
fn a_missing_program_is_an_error_at_spawn() {
    let mut r = Reactor::new().unwrap();
    let (p, _) = rec();
    let e = spawn_process(&mut r, p, "/nonexistent/program", [""; 0], None, None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(r.handler_count(), 0);
}

/// This process's descriptors that a child would inherit (not close-on-exec).
fn inheritable_fds() -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd: u32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
        // SAFETY: F_GETFD only reads flags; a closed fd just returns -1.
        let flags = unsafe { libc::fcntl(fd as i32, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            v.push(fd);
        }
    }
    v
}

#[test]
fn the_child_inherits_only_its_three_pipes() {
    // Whatever this test process itself inherited without close-on-exec
    // (from the shell or the test runner) is not twistor's doing.
    let before = inheritable_fds();
    let mut r = Reactor::new().unwrap();
    // Give the parent more descriptors to leak: a UDP port and a child.
    let _port = twistor_transports::listen_udp(&mut r, "127.0.0.1:0", twistor_transports::UdpEcho::new());
    let (p, log) = rec();
    // `ls` lists its own descriptors: 0, 1, 2, and 3 for the directory it reads.
    spawn_process(&mut r, p, "ls", ["/proc/self/fd"], None, None).unwrap();
    // Every descriptor the reactor, the port and the pipes opened is close-on-exec.
    let now = inheritable_fds();
    assert!(
        now.iter().all(|fd| before.contains(fd)),
        "not close-on-exec: {now:?} (before: {before:?})"
    );
    run_to_end(&mut r, &log);
    let out = String::from_utf8(log.borrow().out.clone()).unwrap();
    let fds: Vec<u32> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    let leaked: Vec<u32> = fds
        .iter()
        .copied()
        .filter(|fd| *fd > 3 && !before.contains(fd))
        .collect();
    assert!(leaked.is_empty(), "the child inherited {leaked:?} (all: {fds:?})");
    assert!(
        fds.contains(&0) && fds.contains(&1) && fds.contains(&2),
        "{fds:?}"
    );
}

/// Bytes the child has written so far, from `/proc/PID/io`.
fn wchar(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn pausing_stdout_keeps_memory_bounded() {
    pause_at_the_first_output(false);
}

/// The `Process` handle pauses too when it is used from inside the
/// process's own callback (a consumer's flow-control hook, say), where
/// the protocol's state is busy delivering the output.
#[test]
fn the_handle_pauses_from_inside_the_process_callbacks() {
    pause_at_the_first_output(true);
}

/// A child writes 100 MiB; reading pauses at its first output (through the
/// transport, or through the `Process` handle): nothing more arrives, the
/// child blocks on a full pipe, and resuming delivers everything.
fn pause_at_the_first_output(through_handle: bool) {
    const TOTAL: u64 = 100 * 1024 * 1024;
    if !Path::new("/proc/self/io").exists() {
        eprintln!("SKIPPED: no /proc/PID/io to watch the child with");
        return;
    }
    let mut r = Reactor::new().unwrap();
    let (mut p, log) = rec();
    let handle: Rc<RefCell<Option<twistor_transports::process::Process>>> = Rc::default();
    let h2 = handle.clone();
    // Pause at the first output, and hold what arrives.
    p.on_out = Some(Box::new(move |t, l| {
        if !l.events.iter().any(|e| e == "paused") {
            l.events.push("paused".into());
            if through_handle {
                h2.borrow()
                    .as_ref()
                    .expect("the handle")
                    .pause_reading(t.reactor());
            } else {
                t.pause_reading();
            }
        }
    }));
    let child = spawn_process(
        &mut r,
        p,
        "head",
        ["-c", &TOTAL.to_string(), "/dev/zero"],
        None,
        None,
    )
    .unwrap();
    let pid = child.pid();
    *handle.borrow_mut() = Some(child);
    let child = Ref::map(handle.borrow(), |h| h.as_ref().unwrap());
    assert!(r.run_until(WAIT, |_| !log.borrow().out.is_empty()).unwrap());
    let at_pause = log.borrow().out.len() as u64;
    // Wait (bounded) for the child to fill the pipe: it is then blocked in
    // write, since nobody reads.
    let mut full = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && !full {
        r.run_until(Duration::from_millis(5), |_| false).unwrap();
        full = wchar(pid).is_some_and(|w| w >= at_pause + 60 * 1024);
    }
    assert!(full, "the child never filled the pipe");
    for _ in 0..20 {
        r.run_pending().unwrap();
    }
    let written = wchar(pid).unwrap();
    let received = log.borrow().out.len() as u64;
    assert_eq!(received, at_pause, "data was delivered while paused");
    // Back-pressure reached the child: what it wrote is what we took plus
    // one pipe's worth, nowhere near the 100 MiB it wants to write.
    assert!(
        written - received <= 1024 * 1024,
        "{written} written, {received} received"
    );
    assert!(child.status().is_none());

    // Resume from outside the protocol: everything arrives, and the child
    // exits cleanly.
    child.resume_reading(&mut r);
    assert!(r
        .run_until(Duration::from_secs(60), |_| log.borrow().ended.is_some())
        .unwrap());
    assert_eq!(log.borrow().out.len() as u64, TOTAL);
    assert!(log.borrow().ended.unwrap().success());
}

#[test]
fn stop_terminates_then_kills_children() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let (a, log_a) = rec();
    let polite = spawn_process(&mut r, a, "sleep", ["30"], None, None).unwrap();
    let (b, log_b) = rec();
    let mut cmd = Command::new("sh");
    // Ignores SIGTERM (an ignored signal stays ignored across exec).
    cmd.args(["-c", "trap '' TERM; echo ready; exec sleep 30"]);
    let opts = ProcessOptions {
        kill_grace: Duration::from_millis(200),
        ..ProcessOptions::default()
    };
    let stubborn = spawn_command(&mut r, b, cmd, opts).unwrap();
    // Stop once the stubborn one ignores SIGTERM (a signal before its trap
    // would simply kill it).
    assert!(r.run_until(WAIT, |_| log_b.borrow().out == b"ready\n").unwrap());
    r.call_soon(|r| r.stop());
    let t0 = Instant::now();
    r.run().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(polite.status().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(stubborn.status().unwrap().signal(), Some(libc::SIGKILL));
    assert!(log_a.borrow().exited.is_some() && log_b.borrow().exited.is_some());
}

#[test]
fn dropping_the_reactor_kills_and_reaps_the_child() {
    let (p, _) = rec();
    let pid;
    {
        let mut r = Reactor::new().unwrap();
        pid = spawn_process(&mut r, p, "sleep", ["30"], None, None)
            .unwrap()
            .pid();
        r.run_pending().unwrap();
    }
    // Reaped: the pid is no longer our child.
    let n = unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(n, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ECHILD));
}

#[test]
fn a_panicking_protocol_closes_the_pipes_and_the_child_is_still_reaped() {
    let mut r = Reactor::new().unwrap();
    let (mut p, log) = rec();
    p.on_out = Some(Box::new(|_, _| panic!("bad protocol")));
    p.on_made = Some(Box::new(|t, _| t.write(b"line\n")));
    // cat echoes the line, the protocol panics, its pipes close, cat sees
    // EOF and exits.
    let child = spawn_process(&mut r, p, "cat", [""; 0], None, None).unwrap();
    assert!(r.run_until(WAIT, |_| child.status().is_some()).unwrap());
    r.run_pending().unwrap();
    let log = log.borrow();
    assert_eq!(log.events, vec!["made".to_string()], "callbacks after the panic");
    assert!(child.has_ended());
}

#[test]
fn stdin_water_marks_raise_pause_and_resume_writing() {
    /// Writes 1 MiB to a stopped child (so the pipe must fill), and lets the
    /// child run once told to pause.
    struct Pump {
        state: Rc<RefCell<(usize, usize, Vec<u8>)>>,
    }
    impl ProcessProtocol for Pump {
        fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
            // 1 MiB at once: far over the 64 KiB high-water mark.
            t.write(&vec![b'x'; 1 << 20]);
            t.close_stdin();
        }
        fn pause_writing(&mut self, t: &mut dyn ProcessTransport) {
            self.state.borrow_mut().0 += 1;
            t.signal_process(libc::SIGCONT).unwrap();
        }
        fn resume_writing(&mut self, _: &mut dyn ProcessTransport) {
            self.state.borrow_mut().1 += 1;
        }
        fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
            self.state.borrow_mut().2.extend_from_slice(data);
        }
    }
    let mut r = Reactor::new().unwrap();
    let state = Rc::new(RefCell::new((0, 0, Vec::new())));
    let pump = Pump { state: state.clone() };
    let child = spawn_process(&mut r, pump, "wc", ["-c"], None, None).unwrap();
    // Stopped before the loop runs (and so before anything is written): it
    // cannot read until pause_writing lets it go.
    child.signal_process(libc::SIGSTOP).unwrap();
    assert!(r.run_until(WAIT, |_| child.has_ended()).unwrap());
    assert!(child.status().unwrap().success());
    let (paused, resumed, out) = &*state.borrow();
    assert_eq!((*paused, *resumed), (1, 1));
    assert_eq!(String::from_utf8_lossy(out).trim(), (1 << 20).to_string());
}

#[test]
fn a_child_closing_its_stdin_is_noticed_while_it_runs() {
    let mut r = Reactor::new().unwrap();
    struct KillWhenStdinCloses(Rc<RefCell<Log>>);
    impl ProcessProtocol for KillWhenStdinCloses {
        fn in_connection_lost(&mut self, t: &mut dyn ProcessTransport) {
            self.0.borrow_mut().events.push("in_lost".into());
            // Still running: only now is it told to go.
            assert!(t.status().is_none());
            t.signal_process(libc::SIGTERM).unwrap();
        }
        fn process_ended(&mut self, _: &mut dyn ProcessTransport, status: ExitStatus) {
            self.0.borrow_mut().ended = Some(status);
        }
    }
    let log = Rc::new(RefCell::new(Log::default()));
    // The shell closes its stdin, then waits (30 s) to be killed.
    spawn_process(
        &mut r,
        KillWhenStdinCloses(log.clone()),
        "sh",
        ["-c", "exec 0<&-; exec sleep 30"],
        None,
        None,
    )
    .unwrap();
    run_to_end(&mut r, &log);
    assert_eq!(log.borrow().events, vec!["in_lost".to_string()]);
    assert_eq!(log.borrow().ended.unwrap().signal(), Some(libc::SIGTERM));
}

/// A child reaped behind the reactor's back (by a stray `waitpid`) is
/// never signalled again: its pid may already name another process.
#[test]
fn a_child_reaped_elsewhere_is_not_signalled() {
    let mut r = Reactor::new().unwrap();
    let (p, _log) = rec();
    let child = spawn_process(&mut r, p, "sleep", ["30"], None, None).unwrap();
    let pid = child.pid() as libc::pid_t;
    let mut status = 0;
    // SAFETY: killing and reaping our own child, which is certainly alive
    // (the reactor has not turned yet, so nothing reaped it).
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGKILL), 0);
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
    }
    // The reactor finds it gone.
    let done = r.run_until(WAIT, |r| r.handler_count() == 0).unwrap();
    assert!(done, "the reaper and the pipes did not go");
    let e = child.signal_process(libc::SIGTERM).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
}
