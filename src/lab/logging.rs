//! Logging for programs: `RUST_LOG` when it is set, else a filter that
//! shows twistor's information without letting a dependency flood the log.

/// The filter used when `RUST_LOG` is not set: `info` for everything,
/// except rustls, which logs only errors.
///
/// rustls warns once per connection about things a client chooses (an IP
/// address sent as the server name, a warning alert): at the default level
/// any client could flood a public server's log with them. twistor reports
/// what matters about a TLS connection itself (handshake failures, with
/// their cause, in each connection's reason). `RUST_LOG=rustls=warn` (or
/// `debug`) brings rustls's messages back.
///
/// ```
/// assert_eq!(twistor::lab::DEFAULT_LOG_FILTER, "info,rustls=error");
/// ```
pub const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

/// Send `log` records to standard error, filtered by `RUST_LOG` (for
/// example `RUST_LOG=debug`, or `RUST_LOG=twistor=debug,rustls=warn`), or
/// by [`DEFAULT_LOG_FILTER`] when it is not set. A second call does nothing.
///
/// ```
/// twistor::lab::init_logging();
/// log::info!("shown unless RUST_LOG hides it");
/// twistor::lab::init_logging(); // harmless
/// ```
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER);
    let _ = env_logger::Builder::from_env(env).try_init();
}
