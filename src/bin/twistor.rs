//! The `twistor` command line: ready-made servers on sensible defaults.
//!
//! Every subcommand stops gracefully on Ctrl-C / SIGTERM and logs through
//! `RUST_LOG` (default `info`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "twistor/gemini.rs"]
mod gemini;
#[path = "twistor/gemini_capsule.rs"]
mod gemini_capsule;
#[path = "twistor/gemini_config.rs"]
mod gemini_config;
use twistor::prelude::*;
use twistor::protocols::Echo;
use twistor::transports::tls::{self, Passphrase};
use twistor::transports::{listen_udp, ListenAddr, UdpEcho};

#[derive(Parser)]
#[command(
    name = "twistor",
    version,
    about = "A Twisted-style networking toolkit: ready-made servers."
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
    Echo(EchoArgs),
    /// Serve Gemini: a directory (with CGI), virtual hosts from a config
    /// file, or, with no flags, a built-in capsule on port 1965.
    Gemini(Box<gemini::GeminiArgs>),
}

#[derive(clap::Args)]
struct EchoArgs {
    /// Interface to listen on [default: every interface, IPv6 and IPv4]
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on, for TCP and UDP alike (0 picks a free one, logged at start)
    #[arg(long, short, default_value_t = 1234)]
    port: u16,
    /// Also serve UDP echo on the same port number
    #[arg(long)]
    udp: bool,
    /// Serve no TCP (with --udp: UDP only)
    #[arg(long, requires = "udp")]
    no_tcp: bool,
    /// Serve TCP echo over TLS [default certificate: a temporary self-signed one,
    /// whose SHA-256 fingerprint is logged]
    #[arg(long)]
    tls: bool,
    /// Certificate chain, PEM (with --tls)
    #[arg(long, requires = "tls", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key, PEM: PKCS#8, PKCS#1 or SEC1, or encrypted PKCS#8 (with --tls)
    /// [default passphrase source: asked on the terminal]
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// File whose first line is the key's passphrase (with --key)
    #[arg(long, requires = "key")]
    passphrase_file: Option<PathBuf>,
}

fn listen_addr(host: Option<IpAddr>, port: u16) -> ListenAddr {
    match host {
        Some(ip) => ListenAddr::Addr(SocketAddr::new(ip, port)),
        None => ListenAddr::Port(port),
    }
}

fn echo(args: EchoArgs) -> std::io::Result<()> {
    let mut reactor = Reactor::new()?;
    let mut port = args.port;
    if !args.no_tcp {
        let addr = listen_addr(args.host, port);
        let listening = if args.tls {
            let config = match (&args.cert, &args.key) {
                (Some(cert), Some(key)) => {
                    let pass = match &args.passphrase_file {
                        Some(f) => Passphrase::File(f.clone()),
                        None => Passphrase::Prompt,
                    };
                    tls::load_server_config(cert, key, &pass)?
                }
                _ => {
                    let (config, fingerprint) = tls::generate_self_signed(&["localhost"])?;
                    log::info!("generated a temporary self-signed certificate for localhost");
                    log::info!("its SHA-256 fingerprint: {fingerprint}");
                    config
                }
            };
            tls::listen_tls(&mut reactor, addr, |_: &Address| Echo, config)?
        } else {
            listen_tcp(&mut reactor, addr, |_: &Address| Echo)?
        };
        let kind = if args.tls { "TLS" } else { "TCP" };
        log::info!("{kind} echo on {}", listening.local_addr());
        // With --port 0, UDP takes the same number as TCP got.
        port = listening.port();
    }
    if args.udp {
        let udp = listen_udp(&mut reactor, listen_addr(args.host, port), UdpEcho::new())?;
        log::info!("UDP echo on {}", udp.local_addr());
    }
    reactor.run()?;
    log::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // A usage error is one line and status 2 (--help and --version print as usual).
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
        eprintln!("twistor: {}", first.join(" ").trim_start_matches("error: "));
        std::process::exit(2);
    });
    let res = match cli.command {
        Command::Echo(args) => echo(args),
        Command::Gemini(args) => gemini::run(*args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twistor: {e}");
            ExitCode::FAILURE
        }
    }
}
