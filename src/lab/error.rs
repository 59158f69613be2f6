//! An error type for `main` that prints as one clean line.
//!
//! `fn main() -> Result<(), E>` prints a failure as `Error: {E:?}`, so an
//! `io::Error` comes out as `Error: Custom { kind: AddrInUse, error: .. }`.
//! [`Error`] holds any error and shows its message in both forms, so the
//! same `main` prints `Error: Address already in use (os error 98)` and
//! exits with status 1.

use std::fmt;

/// Any error, shown by its message (in `{}` and `{:?}` alike).
///
/// ```
/// let e = twistor::lab::Error::from(std::io::Error::new(
///     std::io::ErrorKind::AddrInUse,
///     "port 1234 is taken",
/// ));
/// assert_eq!(format!("{e:?}"), "port 1234 is taken");
/// assert_eq!(format!("{e}"), "port 1234 is taken");
/// let e = twistor::lab::Error::from("no reply");
/// assert_eq!(format!("{e:?}"), "no reply");
/// ```
pub struct Error(Box<dyn std::error::Error + Send + Sync>);

/// What `main` returns: `fn main() -> twistor::lab::Result`.
///
/// ```
/// fn main() -> twistor::lab::Result {
///     let n: u16 = "1234".parse()?;
///     assert_eq!(n, 1234);
///     Ok(())
/// }
/// # main().unwrap();
/// ```
pub type Result<T = ()> = std::result::Result<T, Error>;

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for Error {
    fn from(e: E) -> Error {
        Error(e.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
