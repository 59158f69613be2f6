//! The server side of the TLS layer, fed arbitrary bytes over the
//! in-memory pair: see `twistor_fuzz::tls` for the input format and what
//! is checked. Run it with `scripts/fuzz tls_server SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twistor_fuzz::tls::run(data));
