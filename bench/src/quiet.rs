//! Waiting for quiet cores: before each round the bench waits (bounded)
//! for a quarter second in which the cores it uses are nearly idle, so a
//! round starts in a gap in whatever else the machine runs.

use std::time::{Duration, Instant};

use crate::cpu::core_busy;

/// Wait up to `limit` until each of `cores` is busy under 15 % over a
/// quarter second. Returns whether such a moment was found.
pub fn wait(limit: Duration, cores: &[usize]) -> bool {
    let deadline = Instant::now() + limit;
    let sample = Duration::from_millis(250);
    loop {
        let before: Vec<Option<Duration>> = cores.iter().map(|&c| core_busy(c)).collect();
        std::thread::sleep(sample);
        let quiet = cores.iter().zip(&before).all(|(&c, b)| match (b, core_busy(c)) {
            (Some(b), Some(a)) => a.saturating_sub(*b) < sample * 15 / 100,
            _ => true,
        });
        if quiet {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}
