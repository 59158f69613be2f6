//! A small reader for a program's arguments, so every example takes its
//! port, mode word and options the same way and refuses a bad one with the
//! same words: a bad port is one line and exit status 2; a missing or
//! unknown mode word is a line and the usage, exit status 2; `-h` or
//! `--help` first prints the usage and exits 0.

use std::collections::VecDeque;

/// The port the lab's programs use when given none (the lab's 1234).
pub const DEFAULT_PORT: u16 = 1234;

/// The status a program exits with when its arguments are wrong (as clap,
/// getopt and the shell's builtins do).
const USAGE_STATUS: i32 = 2;

/// Check a port argument: a whole number from 0 to 65535. The error is the
/// one line every example prints for a bad port.
///
/// ```
/// use twistor::lab::parse_port;
/// assert_eq!(parse_port("8080"), Ok(8080));
/// assert_eq!(
///     parse_port("99999").unwrap_err(),
///     "not a port number: \"99999\" (a port is a whole number from 0 to 65535)"
/// );
/// ```
pub fn parse_port(text: &str) -> Result<u16, String> {
    text.parse()
        .map_err(|_| format!("not a port number: {text:?} (a port is a whole number from 0 to 65535)"))
}

/// A program's arguments, read in order: options first
/// ([`option`](Args::option)), then positional ones
/// ([`mode`](Args::mode), [`port`](Args::port), [`text_or`](Args::text_or),
/// [`rest`](Args::rest)).
///
/// A wrong argument ends the program: the reason on standard error
/// (`Error: ...`, as `main` prints its errors), then for a wrong mode the
/// usage line, and exit status 2.
///
/// ```
/// use twistor::lab::Args;
/// let mut args = Args::from_vec("client|server [--name NAME] [PORT]", ["client", "--name", "ann", "8080"]);
/// assert_eq!(args.option("--name").as_deref(), Some("ann"));
/// assert_eq!(args.mode(&["client", "server"]), "client");
/// assert_eq!(args.port(), 8080);
/// assert_eq!(args.text_or("hello"), "hello");
/// ```
#[derive(Debug, Clone)]
pub struct Args {
    program: String,
    usage: String,
    args: VecDeque<String>,
}

impl Args {
    /// This program's arguments. `usage` is what follows the program's name
    /// on its usage line, e.g. `"[PORT]"` or `"server|client [PORT]"`.
    /// `-h` or `--help` as the first argument prints the usage and exits 0
    /// (later on, it may belong to a command line the program runs).
    ///
    /// ```no_run
    /// let port = twistor::lab::Args::new("[PORT]").port();
    /// # let _ = port;
    /// ```
    pub fn new(usage: &str) -> Args {
        let mut all = std::env::args();
        let program = all
            .next()
            .as_deref()
            .and_then(|p| std::path::Path::new(p).file_name()?.to_str().map(String::from))
            .unwrap_or_else(|| "program".to_string());
        let args = Args {
            program,
            usage: usage.to_string(),
            args: all.collect(),
        };
        if args.args.front().is_some_and(|a| a == "-h" || a == "--help") {
            println!("{}", args.usage_line());
            std::process::exit(0);
        }
        args
    }

    /// Arguments given here rather than on the command line (for tests and
    /// examples).
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[PORT]", ["4321"]);
    /// assert_eq!(args.port(), 4321);
    /// ```
    pub fn from_vec<S: Into<String>>(usage: &str, args: impl IntoIterator<Item = S>) -> Args {
        Args {
            program: "program".to_string(),
            usage: usage.to_string(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// `usage: PROGRAM USAGE`.
    ///
    /// ```
    /// let args = twistor::lab::Args::from_vec("[PORT]", Vec::<String>::new());
    /// assert_eq!(args.usage_line(), "usage: program [PORT]");
    /// ```
    pub fn usage_line(&self) -> String {
        format!("usage: {} {}", self.program, self.usage)
    }

    fn fail(&self, message: &str, with_usage: bool) -> ! {
        eprintln!("Error: {message}");
        if with_usage {
            eprintln!("{}", self.usage_line());
        }
        std::process::exit(USAGE_STATUS)
    }

    /// The value of `--flag VALUE` or `--flag=VALUE`, wherever it is, taken
    /// out of the arguments; `None` if the flag is absent. A flag without a
    /// value is an error.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[--pin FP] [PORT]", ["--pin=ab:cd", "99"]);
    /// assert_eq!(args.option("--pin").as_deref(), Some("ab:cd"));
    /// assert_eq!(args.option("--trust"), None);
    /// assert_eq!(args.port(), 99);
    /// ```
    pub fn option(&mut self, flag: &str) -> Option<String> {
        let inline = format!("{flag}=");
        let i = self
            .args
            .iter()
            .position(|a| a == flag || a.starts_with(&inline))?;
        let arg = self.args.remove(i)?;
        if let Some(value) = arg.strip_prefix(&inline) {
            return Some(value.to_string());
        }
        match self.args.remove(i) {
            Some(value) => Some(value),
            None => self.fail(&format!("{flag} needs a value"), true),
        }
    }

    /// The next argument, which must be one of `modes` (such as `server` or
    /// `client`). Missing or anything else: the reason and the usage line,
    /// exit status 2.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("server|client [PORT]", ["server"]);
    /// assert_eq!(args.mode(&["server", "client"]), "server");
    /// ```
    pub fn mode(&mut self, modes: &[&'static str]) -> &'static str {
        let choices = modes.join(" or ");
        match self.args.pop_front() {
            Some(word) => match modes.iter().find(|m| **m == word) {
                Some(m) => m,
                None => self.fail(&format!("{word:?} is not a mode: say {choices}"), true),
            },
            None => self.fail(&format!("say which: {choices}"), true),
        }
    }

    /// The next argument as a port, or [`DEFAULT_PORT`] when there is none.
    /// Not a port (`abc`, `99999`): the line [`parse_port`] gives, exit
    /// status 2.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[PORT]", Vec::<String>::new());
    /// assert_eq!(args.port(), twistor::lab::DEFAULT_PORT);
    /// ```
    pub fn port(&mut self) -> u16 {
        self.port_or(DEFAULT_PORT)
    }

    /// The next argument as a port, or `default` when there is none.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[PORT] [TARGET_PORT]", ["1234"]);
    /// assert_eq!(args.port(), 1234);
    /// assert_eq!(args.port_or(8080), 8080);
    /// ```
    pub fn port_or(&mut self, default: u16) -> u16 {
        match self.args.pop_front() {
            Some(text) => parse_port(&text).unwrap_or_else(|e| self.fail(&e, false)),
            None => default,
        }
    }

    /// The next argument, or `default` when there is none.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[HOST]", ["example.org"]);
    /// assert_eq!(args.text_or("localhost"), "example.org");
    /// assert_eq!(args.text_or("localhost"), "localhost");
    /// ```
    pub fn text_or(&mut self, default: &str) -> String {
        self.args.pop_front().unwrap_or_else(|| default.to_string())
    }

    /// Every argument not read yet.
    ///
    /// ```
    /// let mut args = twistor::lab::Args::from_vec("[COMMAND...]", ["ls", "-l"]);
    /// assert_eq!(args.rest(), ["ls", "-l"]);
    /// assert!(args.rest().is_empty());
    /// ```
    pub fn rest(&mut self) -> Vec<String> {
        self.args.drain(..).collect()
    }
}
