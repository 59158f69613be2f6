//! `twistor echo`: TCP, UDP and TLS echo servers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use twistor::prelude::*;
use twistor::protocols::Echo;
use twistor::transports::tls;
use twistor::transports::{listen_udp, ListenAddr, UdpEcho};

use crate::common;

#[derive(clap::Args)]
pub struct EchoArgs {
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

pub fn run(args: EchoArgs) -> std::io::Result<()> {
    let mut reactor = Reactor::new()?;
    let mut port = args.port;
    if !args.no_tcp {
        let addr = listen_addr(args.host, port);
        let listening = if args.tls {
            let config = match (&args.cert, &args.key) {
                (Some(cert), Some(key)) => {
                    let pass = common::passphrase(args.passphrase_file.as_ref());
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
