//! The netstring and length-prefixed receivers fed arbitrary bytes, split
//! arbitrarily: see `twistor_fuzz::strings`. Run it with
//! `scripts/fuzz string_receivers SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twistor_fuzz::strings::run(data));
