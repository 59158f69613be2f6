//! # twistor-transports
//!
//! twistor's transports: byte streams and datagrams over the reactor's
//! extension API, and TLS as a layer over any stream ([`tls`]).
#![warn(missing_docs)]

pub mod tls;
