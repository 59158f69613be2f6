//! A real UDP port on loopback receiving arbitrary datagrams, with a
//! protocol they steer: see `twistor_fuzz::udp`. Run it with
//! `scripts/fuzz udp_port SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| twistor_fuzz::udp::run(data));
