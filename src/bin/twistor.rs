//! The `twistor` command line: ready-made servers on sensible defaults.
//!
//! This file is only the list of subcommands and the dispatch; each
//! subcommand lives in its own file under `src/bin/twistor/`, with what
//! they share (logging, clean error printing, passphrases) in `common.rs`.
//! Every subcommand stops gracefully on Ctrl-C / SIGTERM and logs through
//! `RUST_LOG`.
//!
//! To add a subcommand `NAME`: write `src/bin/twistor/NAME.rs` with a
//! `clap::Args` struct and `pub fn run(args) -> std::io::Result<()>`, then
//! add `#[path = "twistor/NAME.rs"] mod NAME;`, a variant to [`Command`]
//! and an arm to `main`'s match.

// The crate root is `src/bin/`, so each module names its file.
#[path = "twistor/certificate.rs"]
mod certificate;
#[path = "twistor/common.rs"]
mod common;
#[path = "twistor/echo.rs"]
mod echo;
#[path = "twistor/fetch.rs"]
mod fetch;
#[path = "twistor/gemini.rs"]
mod gemini;
#[path = "twistor/gemini_capsule.rs"]
mod gemini_capsule;
#[path = "twistor/gemini_config.rs"]
mod gemini_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "twistor",
    version,
    about = "A Twisted-style networking toolkit: ready-made servers.",
    after_help = "Logging: RUST_LOG, e.g. RUST_LOG=debug [default: info, and only errors from rustls]."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve echo: every byte (or datagram) received is sent back.
    ///
    /// With no flags: TCP on port 1234, every interface (IPv6 and IPv4).
    Echo(echo::EchoArgs),
    /// Serve Gemini: a directory (with CGI), virtual hosts from a config
    /// file, or, with no flags, a built-in capsule on port 1965.
    Gemini(Box<gemini::GeminiArgs>),
    /// Fetch a Gemini URL (or upload to a Titan one): the body to stdout,
    /// `STATUS META` to stderr, servers trusted on first use.
    Fetch(Box<fetch::FetchArgs>),
}

fn main() -> ExitCode {
    // A usage error is one line, clap's own "error: ..." sentence, and
    // status 2 (--help and --version print as usual).
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let text = e.to_string();
        let first: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        eprintln!("{} (see --help)", first.join(" "));
        std::process::exit(2);
    });
    common::init_logging();
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Gemini(args) => gemini::run(*args),
        Command::Fetch(args) => return fetch::run(*args),
    };
    common::exit_code(result)
}
