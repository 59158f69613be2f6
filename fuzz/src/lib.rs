//! The harnesses behind twistor's fuzz targets (`fuzz_targets/*.rs`).
//!
//! Each module turns one fuzz input into a run of one part of the toolkit
//! and checks the invariants that part promises, panicking (which libFuzzer
//! reports as a crash, with the input saved) when one does not hold:
//!
//! - [`line`]: `LineReceiver`, fed arbitrary bytes split arbitrarily, with
//!   a handler that switches modes, delimiters and limits, pauses, closes.
//! - [`strings`]: the netstring and 1/2/4-byte length-prefixed receivers,
//!   the same way.
//! - [`udp`]: a real UDP port on loopback receiving arbitrary datagrams,
//!   with a protocol that echoes, connects, stops.
//! - [`tls`]: the server side of the TLS layer over the in-memory pair,
//!   fed arbitrary bytes as if from a client.
//!
//! libfuzzer-sys installs a panic hook that aborts, so a panic the toolkit
//! catches at its dispatch boundary (and would turn into a closed
//! connection) is still reported here: bad input must never panic it.

pub mod input;
pub mod line;
pub mod strings;
pub mod tls;
pub mod udp;
