//! Asking for a passphrase on the terminal without echoing it, the way
//! OpenSSL asks for a PEM pass phrase.

use std::io::{self, BufRead, Write};

use super::keys::PASSPHRASE_FILE_VAR;

/// Print `prompt` on standard error and read one line from standard input
/// with echo turned off. Fails when standard input is not a terminal.
pub(crate) fn read_passphrase(prompt: &str) -> io::Result<String> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the private key is encrypted and standard input is not a terminal to ask for \
                 its passphrase: put it in a file and set {PASSPHRASE_FILE_VAR} to that file's path \
                 (the twistor command also takes --passphrase-file FILE)"
            ),
        ));
    }
    let mut stderr = io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let _echo = EchoOff::new();
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    writeln!(stderr)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns terminal echo off for its lifetime.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
    }
}
