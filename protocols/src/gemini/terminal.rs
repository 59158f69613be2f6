//! Asking the user for what a 10 or 11 response wants: the prompt on
//! standard error, one line read from standard input, with terminal echo
//! turned off for a secret (11). The terminal handling is the transports
//! crate's ([`twistor_transports::terminal`]), shared with the passphrase
//! prompt.

use std::io;

/// Print `prompt` on standard error and read one line from standard
/// input (without its line ending). With `sensitive` (status 11) and a
/// terminal on standard input, echo is off while the line is typed; it is
/// turned off before the prompt is shown, so nothing typed after the
/// prompt appears. When standard input is not a terminal the line is read
/// all the same (a pipe, a file). `Ok(None)`: standard input is at its
/// end (nothing more to read).
///
/// ```no_run
/// use twistor_protocols::gemini::ask_input;
/// if let Some(answer) = ask_input("Your name? ", false).unwrap() {
///     println!("Hello, {answer}");
/// }
/// ```
pub fn ask_input(prompt: &str, sensitive: bool) -> io::Result<Option<String>> {
    twistor_transports::terminal::ask_line(prompt, sensitive)
}
