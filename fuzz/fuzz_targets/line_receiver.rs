//! `LineReceiver` fed arbitrary bytes, split arbitrarily, with a handler
//! that switches modes, pauses and closes: see `twistor_fuzz::line`. Run
//! it with `scripts/fuzz line_receiver SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twistor_fuzz::line::run(data));
