//! Cores and CPU time: pin a thread to one core, and read how much CPU a
//! process has used (from `/proc/PID/stat`, and to the nanosecond from the
//! process's CPU-time clock).

use std::io;
use std::time::Duration;

/// The CPU set holding `core` alone.
pub fn one_core(core: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        set
    }
}

/// Pin the calling thread to `core` (`sched_setaffinity`, as `taskset` does).
/// Threads it spawns afterwards inherit the mask.
pub fn pin_to(core: usize) -> io::Result<()> {
    let set = one_core(core);
    // SAFETY: a valid, fully initialised cpu_set_t.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time a process has used so far, by two clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// utime + stime from `/proc/PID/stat`, in clock ticks turned into time
    /// (10 ms resolution at the usual 100 Hz).
    pub stat: Duration,
    /// The same quantity from the process's CPU-time clock
    /// (`clock_getcpuclockid`), to the nanosecond; `None` where unavailable.
    pub clock: Option<Duration>,
}

impl CpuTime {
    /// Read process `pid`'s CPU time.
    pub fn of(pid: u32) -> io::Result<CpuTime> {
        Ok(CpuTime {
            stat: stat_cpu(pid)?,
            clock: clock_cpu(pid),
        })
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            stat: self.stat.saturating_sub(earlier.stat),
            clock: match (self.clock, earlier.clock) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            },
        }
    }
}

/// utime + stime of `pid` from `/proc/PID/stat` (fields 14 and 15).
fn stat_cpu(pid: u32) -> io::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text, ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat format"))
}

/// Parse utime + stime out of a `/proc/PID/stat` line. The command name
/// (field 2) is in parentheses and may itself hold spaces or parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat(text: &str, hz: u64) -> Option<Duration> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

fn clock_cpu(pid: u32) -> Option<Duration> {
    // SAFETY: plain libc calls writing into locals.
    unsafe {
        let mut clk: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clk) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clk, &mut ts) != 0 {
            return None;
        }
        Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

/// Busy time of one core so far (all processes), from `/proc/stat`:
/// user + nice + system + irq + softirq + steal, turned into time.
pub fn core_busy(core: usize) -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_core_busy(&text, core, ticks_per_second())
}

/// Parse one core's busy time out of the text of `/proc/stat`.
pub fn parse_core_busy(text: &str, core: usize, hz: u64) -> Option<Duration> {
    let name = format!("cpu{core}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&k| v.get(k).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_nanos(busy * 1_000_000_000 / hz.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(line, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat("garbage", 100), None);
    }

    #[test]
    fn parses_core_busy_time() {
        let text = "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 100 5 50 1000 7 1 2 3 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        // 100 + 5 + 50 + 1 + 2 + 3 ticks (idle and iowait are not busy).
        assert_eq!(parse_core_busy(text, 0, 100), Some(Duration::from_millis(1610)));
        assert_eq!(parse_core_busy(text, 1, 100), Some(Duration::from_millis(60)));
        assert_eq!(parse_core_busy(text, 2, 100), None);
    }

    #[test]
    fn both_clocks_see_the_same_work() {
        let pid = std::process::id();
        let before = CpuTime::of(pid).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        // Burn 100 ms of CPU (bounded in wall time on a busy machine).
        while t.elapsed() < Duration::from_secs(10) {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            if CpuTime::of(pid).unwrap().since(&before).clock.unwrap() >= Duration::from_millis(100) {
                break;
            }
        }
        std::hint::black_box(x);
        let used = CpuTime::of(pid).unwrap().since(&before);
        assert!(used.clock.unwrap() >= Duration::from_millis(100), "{used:?}");
        // Tick sampling is coarse, but 100 ms of work cannot show as under 50.
        assert!(used.stat >= Duration::from_millis(50), "{used:?}");
    }
}
