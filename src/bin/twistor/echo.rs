//! `twistor echo`: TCP, UDP and TLS echo servers.
//!
//! Logging: `info` says where it listens and about the certificate; `debug`
//! logs each connection and each read (or datagram) by address and size,
//! never the bytes themselves, the same for TCP and UDP.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use twistor::prelude::*;
use twistor::transports::tls;
use twistor::transports::{listen_udp, ListenAddr, UdpEcho};

use crate::certificate::ServerCert;
use crate::common;

#[derive(clap::Args)]
pub struct EchoArgs {
    /// Address or host name to listen on; a name is resolved and each of its
    /// addresses is served (e.g. localhost: ::1 and 127.0.0.1)
    /// [default: every interface, IPv6 and IPv4]
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Port for TCP and UDP alike; 0 picks a free one (logged at start)
    #[arg(long, short, default_value_t = 1234)]
    port: u16,
    /// Also serve UDP echo, on the same port number as TCP
    #[arg(long)]
    udp: bool,
    /// Serve no TCP, only UDP (needs --udp; not with --tls)
    #[arg(long, requires = "udp", conflicts_with = "tls")]
    no_tcp: bool,
    /// Serve TCP echo over TLS. Without --cert and --key: a new self-signed
    /// certificate for localhost, 127.0.0.1, ::1 (and --host), written to
    /// --cert-out for clients to trust, its SHA-256 fingerprint logged
    #[arg(long)]
    tls: bool,
    /// Certificate chain, PEM (needs --tls and --key)
    #[arg(long, value_name = "FILE", requires = "tls", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key, PEM: PKCS#8, PKCS#1, SEC1 or encrypted PKCS#8 (needs --cert)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// File whose first line is the key's passphrase (needs --key)
    /// [default: the file named by TWISTOR_PASSPHRASE_FILE, else asked on the
    /// terminal when the key is encrypted]
    #[arg(long, value_name = "FILE", requires = "key")]
    passphrase_file: Option<PathBuf>,
    /// Where to write the generated certificate (PEM, without its key) for
    /// clients to trust (needs --tls; not with --cert)
    /// [default: twistor-echo-PORT.crt in the temporary directory]
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "cert")]
    cert_out: Option<PathBuf>,
}

/// Echo, logging each connection at `debug`: addresses and sizes, never
/// the bytes.
struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        log::debug!("{}: connected", t.peer());
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        log::debug!("{}: {} bytes", t.peer(), data.len());
        t.write(data);
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        log::debug!("{}: closed ({reason})", t.peer());
    }
}

/// The addresses to listen on: `None` for every interface, else each
/// address of `--host` (an address, or a name resolved now, before the
/// loop runs).
fn interfaces(host: Option<&str>) -> io::Result<Vec<Option<IpAddr>>> {
    let Some(host) = host else {
        return Ok(vec![None]);
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![Some(ip)]);
    }
    let resolved = (bare, 0).to_socket_addrs().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot resolve --host {host}: {e} (give an address such as 127.0.0.1 or ::1)"),
        )
    })?;
    let mut ips: Vec<Option<IpAddr>> = Vec::new();
    for ip in resolved.map(|a| Some(a.ip())) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("--host {host} has no address"),
        ));
    }
    Ok(ips)
}

fn listen_addr(ip: Option<IpAddr>, port: u16) -> ListenAddr {
    match ip {
        Some(ip) => ListenAddr::Addr(SocketAddr::new(ip, port)),
        None => ListenAddr::Port(port),
    }
}

pub fn run(args: EchoArgs) -> io::Result<()> {
    let ips = interfaces(args.host.as_deref())?;
    let mut reactor = Reactor::new()?;
    // With --port 0 the first listener picks the number; the others, and
    // UDP, take the same one.
    let mut port = args.port;
    if !args.no_tcp {
        let cert = match (&args.tls, &args.cert, &args.key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some(ServerCert::from_files(
                cert,
                key,
                &common::passphrase(args.passphrase_file.as_ref()),
            )?),
            (true, _, _) => {
                let addrs: Vec<IpAddr> = ips.iter().flatten().copied().collect();
                Some(ServerCert::generate(args.host.as_deref(), &addrs)?)
            }
        };
        for ip in &ips {
            let addr = listen_addr(*ip, port);
            let listening = match &cert {
                Some(c) => tls::listen_tls(&mut reactor, addr, |_: &Address| Echo, c.config.clone())?,
                None => listen_tcp(&mut reactor, addr, |_: &Address| Echo)?,
            };
            let kind = if cert.is_some() { "TLS" } else { "TCP" };
            log::info!("{kind} echo on {}", listening.local_addr());
            port = listening.port();
        }
        if let Some(c) = &cert {
            c.write_for_clients(args.cert_out.as_deref(), port)?;
        }
    }
    if args.udp {
        for ip in &ips {
            let udp = listen_udp(&mut reactor, listen_addr(*ip, port), UdpEcho::new())?;
            log::info!("UDP echo on {}", udp.local_addr());
            port = udp.local_addr().port();
        }
    }
    reactor.run()?;
    log::info!("stopped");
    Ok(())
}
