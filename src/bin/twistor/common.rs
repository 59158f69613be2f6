//! What every `twistor` subcommand shares: logging set-up, printing an
//! error cleanly (one line, not Rust's debug form), and where a key's
//! passphrase comes from.

use std::path::PathBuf;
use std::process::ExitCode;

use twistor::transports::tls::Passphrase;

/// Log through `RUST_LOG`, or with twistor's default filter when it is
/// unset: `info`, and only errors from rustls (see
/// [`twistor::lab::DEFAULT_LOG_FILTER`]).
pub fn init_logging() {
    twistor::lab::init_logging();
}

/// The process's exit status for a subcommand's result; an error is printed
/// as one line, `twistor: MESSAGE`.
pub fn exit_code(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twistor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the passphrase of an encrypted key comes from: the file given on
/// the command line, or else twistor's usual source (the file named by
/// `TWISTOR_PASSPHRASE_FILE`, or the terminal).
pub fn passphrase(file: Option<&PathBuf>) -> Passphrase {
    match file {
        Some(f) => Passphrase::File(f.clone()),
        None => Passphrase::from_env_or_prompt(),
    }
}
