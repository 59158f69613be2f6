//! Asking for a passphrase on the terminal without echoing it, the way
//! OpenSSL asks for a PEM pass phrase.

use std::io;

use super::keys::PASSPHRASE_FILE_VAR;
use crate::terminal::{ask_line, stdin_is_terminal};

/// Print `prompt` on standard error and read one line from standard input
/// with echo turned off. Fails when standard input is not a terminal.
pub(crate) fn read_passphrase(prompt: &str) -> io::Result<String> {
    if !stdin_is_terminal() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the private key is encrypted and standard input is not a terminal to ask for \
                 its passphrase: put it in a file and set {PASSPHRASE_FILE_VAR} to that file's path \
                 (the twistor command also takes --passphrase-file FILE)"
            ),
        ));
    }
    Ok(ask_line(prompt, true)?.unwrap_or_default())
}
