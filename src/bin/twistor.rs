//! The `twistor` command line: ready-made servers on sensible defaults.
//!
//! Every subcommand stops gracefully on Ctrl-C / SIGTERM and logs through
//! `RUST_LOG` (default `info`).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twistor::prelude::*;
use twistor::transports::ListenAddr;

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
    /// Serve echo: every byte received is sent back.
    Echo(EchoArgs),
}

#[derive(clap::Args)]
struct EchoArgs {
    /// Interface to listen on [default: every interface, IPv6 and IPv4]
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on (0 picks a free one, logged at start)
    #[arg(long, short, default_value_t = 1234)]
    port: u16,
}

/// Echo every byte back.
struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

fn listen_addr(host: Option<IpAddr>, port: u16) -> ListenAddr {
    match host {
        Some(ip) => ListenAddr::Addr(SocketAddr::new(ip, port)),
        None => ListenAddr::Port(port),
    }
}

fn echo(args: EchoArgs) -> std::io::Result<()> {
    let mut reactor = Reactor::new()?;
    let addr = listen_addr(args.host, args.port);
    let port = listen_tcp(&mut reactor, addr, |_: &Address| Echo)?;
    log::info!("TCP echo on {}", port.local_addr());
    reactor.run()?;
    log::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Echo(args) => echo(args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twistor: {e}");
            ExitCode::FAILURE
        }
    }
}
