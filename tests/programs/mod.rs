//! Running the examples and the `twistor` command as a user does: built if
//! missing or older than their source, their output read line by line as
//! it comes, every wait bounded, and every child stopped when the test
//! ends, however it ends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// The bound on every wait: generous for a loaded machine, finite so a bug
/// fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

/// The example binary `name`. The examples are built (`cargo build
/// --examples`) once per test process before the first is used, so a test
/// never runs a binary older than its source or the libraries under it:
/// `cargo test` builds its own copies of the examples, under other names.
pub fn example(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILD.call_once(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--examples", "--manifest-path"])
            .arg(root.join("Cargo.toml"));
        // What cargo set for this test is not the environment of a build
        // from the shell: with it, the two would rebuild each other's files.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "RUST_RECURSION_COUNT" {
                cargo.env_remove(key);
            }
        }
        let status = cargo.status().unwrap();
        assert!(status.success(), "cannot build the examples");
    });
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// The `twistor` command.
pub fn twistor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twistor"));
    c.env_remove("RUST_LOG").env_remove("TWISTOR_PASSPHRASE_FILE");
    c
}

/// An example, with the environment a student's shell would have.
pub fn example_command(name: &str) -> Command {
    let mut c = Command::new(example(name));
    c.env_remove("RUST_LOG").env_remove("TWISTOR_PASSPHRASE_FILE");
    c
}

/// Whether `program --version` (or `-V`) runs; says so when it does not,
/// so a skipped check is visible.
pub fn have(program: &str, arg: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {program} is not installed (install it to run this check)");
    }
    ok
}

/// What a finished program said and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Run a program that should end by itself, with stdin closed; kill it
/// and fail if it does not end within [`WAIT`].
pub fn run(mut cmd: Command) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait_bounded(child).unwrap_or_else(|| panic!("{cmd:?} did not end within {WAIT:?}"));
    Finished {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Wait for `child` to exit, at most [`WAIT`]: a thread waits, the test
/// waits on its answer. `None` (the child killed and reaped) on timeout.
fn wait_bounded(child: Child) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait().expect("wait for the program"));
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => Some(status),
        Err(_) => {
            // SAFETY: kill(2) on our child, not reaped yet (its waiter is
            // still blocked), so the pid is still its own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(WAIT);
            None
        }
    }
}

/// A running program whose output (stdout and stderr, merged in arrival
/// order per stream) is read line by line. Killed when dropped.
pub struct Running {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    all: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Start `cmd` with stdin closed.
    pub fn start(mut cmd: Command) -> Running {
        Running::start_with_stdin(cmd.stdin(Stdio::null()))
    }

    /// Start `cmd` with whatever stdin it was given.
    pub fn start_with_stdin(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the program");
        let (tx, lines) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let (tx, all) = (tx.clone(), all.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    all.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child: Some(child),
            lines,
            all,
        }
    }

    /// The first line, seen already or still to come, that satisfies
    /// `pred`; fails after [`WAIT`].
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.output().into_iter().find(|l| pred(l)) {
            return line;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {what} within {WAIT:?}; output: {:?}", self.output()),
            }
        }
    }

    /// The port of the `listening on ...`, `... echo on ...` or similar
    /// line containing `marker`: the number after the last colon.
    pub fn wait_port(&self, marker: &str) -> u16 {
        let line = self.wait_line(marker, |l| l.contains(marker));
        let tail = line.rsplit(':').next().unwrap();
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("no port in {line:?}"))
    }

    /// Write to the program's standard input (started with a piped one).
    pub fn write_stdin(&mut self, data: &[u8]) {
        use std::io::Write;
        let stdin = self
            .child
            .as_mut()
            .unwrap()
            .stdin
            .as_mut()
            .expect("a piped stdin");
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }

    /// Every line seen so far.
    pub fn output(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait for the program to end by itself; its status and whole output.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let child = self.child.take().unwrap();
        let status = wait_bounded(child).unwrap_or_else(|| {
            panic!(
                "the program did not end within {WAIT:?}; output: {:?}",
                self.output()
            )
        });
        (status, self.settled_output())
    }

    /// SIGTERM, then wait for the program to end; its status and output.
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on the child this value owns, which has not been
        // waited for, so its pid is still its own.
        unsafe { libc::kill(self.id() as libc::pid_t, libc::SIGTERM) };
        self.wait()
    }

    /// The output once both readers have seen end of file (the program has
    /// exited, so they are about to).
    fn settled_output(&self) -> Vec<String> {
        // Each reader sends its lines before finishing; when the channel's
        // senders are all gone, every line is in.
        while self.lines.recv_timeout(WAIT).is_ok() {}
        self.output()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
