//! Asking the user a line on the terminal: the one place twistor turns the
//! terminal's echo off, shared by the passphrase prompt of encrypted keys
//! and the Gemini client's input prompts (status 10 and, hidden, 11).

use std::io::{self, BufRead, Write};

/// Whether standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Print `prompt` on standard error and read one line from standard input
/// (without its line ending). With `hidden` and a terminal on standard
/// input, echo is off while the line is typed; it is turned off before the
/// prompt is shown, so nothing typed after the prompt appears. When
/// standard input is not a terminal the line is read all the same (a pipe,
/// a file). `Ok(None)`: standard input is at its end.
///
/// ```no_run
/// use twistor_transports::terminal::ask_line;
/// if let Some(answer) = ask_line("Your name? ", false).unwrap() {
///     println!("Hello, {answer}");
/// }
/// ```
pub fn ask_line(prompt: &str, hidden: bool) -> io::Result<Option<String>> {
    let terminal = stdin_is_terminal();
    let echo = if hidden && terminal {
        EchoOff::new()
    } else {
        EchoOff(None)
    };
    let mut stderr = io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let mut line = String::new();
    let n = io::stdin().lock().read_line(&mut line)?;
    if !terminal || echo.0.is_some() {
        // Nothing echoed the Enter that ended the line: end it here.
        writeln!(stderr)?;
    }
    drop(echo);
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// Turns the terminal's echo off for its lifetime (nothing when that
/// fails).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data that tcgetattr fills or leaves
        // alone on failure.
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
