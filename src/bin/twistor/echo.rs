//! `twistor echo`: TCP, UDP and TLS echo servers.
//!
//! Logging: `info` says where it listens and about the certificate; `debug`
//! logs each connection and each read (or datagram) by address and size,
//! never the bytes themselves, the same for TCP and UDP. With `--tls
//! --cert --key`, SIGHUP reloads the certificate files; behind a load
//! balancer, `--proxy-protocol` reads the client's address from a PROXY
//! header.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use twistor::prelude::*;
use twistor::reactor::ReactorGroup;
use twistor::reactor::SIGHUP;
use twistor::transports::tls::{self, ReloadableServerConfig, ServerConfigBuilder, TlsOptions};
use twistor::transports::udp::{listen_udp_with, UdpOptions};
use twistor::transports::{listen_tcp_with, ListenAddr, ListenOptions, UdpEcho};

use crate::certificate::ServerCert;
use crate::common::{self, Asking, ProxyArgs};

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
    /// Also serve UDP echo, on the same port number as TCP (not with
    /// --proxy-protocol)
    #[arg(long, conflicts_with = "proxy_protocol")]
    udp: bool,
    /// Serve no TCP, only UDP (needs --udp; not with --tls)
    #[arg(long, requires = "udp", conflicts_with = "tls")]
    no_tcp: bool,
    /// Serve TCP echo over TLS. Without --cert and --key: a new self-signed
    /// certificate for localhost, 127.0.0.1, ::1 (and --host), written to
    /// --cert-out for clients to trust, its SHA-256 fingerprint logged
    #[arg(long)]
    tls: bool,
    /// Certificate chain, PEM (needs --tls and --key). SIGHUP reads it and
    /// the key again: new connections get the new certificate
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
    /// Reactors to run, each on its own thread with its own SO_REUSEPORT
    /// listeners (the kernel spreads connections over them); 0 = one per
    /// core
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    proxy: ProxyArgs,
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
    let several = args.threads != 1;
    let opts = ListenOptions {
        proxy_protocol: args.proxy.options().unwrap_or_default(),
        // Each reactor of a group has its own listener on the same port.
        reuse_port: several,
        ..ListenOptions::default()
    };
    let cert = match (&args.tls, &args.cert, &args.key) {
        (false, _, _) => None,
        (true, Some(cert), Some(key)) => {
            let passphrase = common::key_passphrase(key, args.passphrase_file.as_ref(), Asking::Allowed)?;
            Some(ServerCert::from_files(cert, key, &passphrase)?)
        }
        (true, _, _) => {
            let addrs: Vec<IpAddr> = ips.iter().flatten().copied().collect();
            Some(ServerCert::generate(args.host.as_deref(), &addrs)?)
        }
    };
    let certs = cert
        .as_ref()
        .map(|c| ReloadableServerConfig::new(c.config.clone()));
    if !args.no_tcp {
        common::log_proxy(&opts.proxy_protocol);
    }
    let serve = Serve {
        args: &args,
        ips: &ips,
        opts: &opts,
        cert: cert.as_ref(),
        certs: certs.as_ref(),
        port: std::sync::OnceLock::new(),
    };
    if several {
        let group = ReactorGroup::new(args.threads);
        log::info!("running {} reactors", group.len());
        group.run(|r, index| serve.setup(r, index))?;
    } else {
        let mut reactor = Reactor::new()?;
        serve.setup(&mut reactor, 0)?;
        reactor.run()?;
    }
    log::info!("stopped");
    Ok(())
}

/// What every reactor serves: the same listeners, each reactor its own.
struct Serve<'a> {
    args: &'a EchoArgs,
    ips: &'a [Option<IpAddr>],
    opts: &'a ListenOptions,
    cert: Option<&'a ServerCert>,
    certs: Option<&'a ReloadableServerConfig>,
    /// The port the first reactor got (with --port 0, the others take it).
    port: std::sync::OnceLock<u16>,
}

impl Serve<'_> {
    /// Open this reactor's listeners. Reactor 0 (the only one, without
    /// --threads) also logs where it listens, writes the generated
    /// certificate and installs the SIGHUP reload.
    fn setup(&self, reactor: &mut Reactor, index: usize) -> io::Result<()> {
        let args = self.args;
        let first = index == 0;
        // With --port 0 the first listener picks the number; the others,
        // and UDP, take the same one.
        let mut port = self.port.get().copied().unwrap_or(args.port);
        if !args.no_tcp {
            for ip in self.ips {
                let addr = listen_addr(*ip, port);
                let listening = match self.certs {
                    Some(c) => tls::listen_tls_with(
                        reactor,
                        addr,
                        |_: &Address| Echo,
                        c.clone(),
                        TlsOptions::default(),
                        self.opts.clone(),
                    )?,
                    None => listen_tcp_with(reactor, addr, |_: &Address| Echo, self.opts.clone())?,
                };
                if first {
                    let kind = if self.cert.is_some() { "TLS" } else { "TCP" };
                    log::info!("{kind} echo on {}", listening.local_addr());
                }
                port = listening.port();
            }
            if first {
                if let Some(c) = self.cert {
                    c.write_for_clients(args.cert_out.as_deref(), port)?;
                }
                if let (Some(certs), Some(cert), Some(key)) = (self.certs, &args.cert, &args.key) {
                    reload_on_sighup(reactor, certs, cert, key, args.passphrase_file.clone())?;
                }
            }
        }
        if args.udp {
            let opts = UdpOptions {
                reuse_port: self.opts.reuse_port,
                ..UdpOptions::default()
            };
            for ip in self.ips {
                let udp = listen_udp_with(reactor, listen_addr(*ip, port), UdpEcho::new(), opts.clone())?;
                if first {
                    log::info!("UDP echo on {}", udp.local_addr());
                }
                port = udp.local_addr().port();
            }
        }
        let _ = self.port.set(port);
        Ok(())
    }
}

/// SIGHUP reads the certificate and key files again; what fails to load
/// leaves the certificate in use as it is (and is logged).
fn reload_on_sighup(
    reactor: &mut Reactor,
    certs: &ReloadableServerConfig,
    cert: &Path,
    key: &Path,
    passphrase_file: Option<PathBuf>,
) -> io::Result<()> {
    let (cert_path, key_path) = (cert.to_path_buf(), key.to_path_buf());
    certs.reload_on_signal(reactor, SIGHUP, move || {
        let (cert, key) = (&cert_path, &key_path);
        let passphrase = common::key_passphrase(key, passphrase_file.as_ref(), Asking::Never)?;
        let chain = tls::load_certs(cert)?;
        let fingerprint = tls::sha256_fingerprint(&chain[0]);
        let config = ServerConfigBuilder::new()
            .cert(chain, tls::load_key(key, &passphrase)?)?
            .build()?;
        log::info!("certificate reloaded: SHA-256 fingerprint {fingerprint}");
        Ok(config)
    })?;
    log::info!("SIGHUP reloads {} and {}", cert.display(), key.display());
    Ok(())
}
