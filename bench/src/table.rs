//! The report's tables: one per area, a row per case and server, the
//! medians over rounds and twistor's ratios to each other server.
//!
//! Every measured window gives a [`Sample`]; a [`Grid`] keeps them by case,
//! server and round, and prints the markdown. Ratios are the median of the
//! per-round ratios (the servers of one round ran seconds apart, so a busy
//! moment of the machine cancels out of a ratio), twistor over the other:
//! for a rate above 1 is faster, for CPU per operation below 1 is cheaper.

use std::fmt::Write as _;

use crate::stats::{median, paired_ratio, range};

/// One server's figures over one measured window.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Operations per second (requests, datagrams, handshakes...), or MB/s.
    pub rate: f64,
    /// Server CPU time per operation, microseconds.
    pub cpu_us: f64,
    /// Server CPU use over the window, % of one core.
    pub share: f64,
    /// Median latency, microseconds (NaN: not measured).
    pub p50: f64,
    /// 99th-percentile latency, microseconds (NaN: not measured).
    pub p99: f64,
    /// % of the server's core other processes used in the window (NaN:
    /// not known, e.g. nothing pinned).
    pub foreign: f64,
    /// A case's own extra figure (e.g. the share of resumed handshakes),
    /// NaN when none.
    pub extra: f64,
    /// The load generator's CPU use over the window, % of one core (NaN:
    /// not read).
    pub client: f64,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            rate: f64::NAN,
            cpu_us: f64::NAN,
            share: f64::NAN,
            p50: f64::NAN,
            p99: f64::NAN,
            foreign: f64::NAN,
            extra: f64::NAN,
            client: f64::NAN,
        }
    }
}

/// What a table's columns are called.
#[derive(Debug, Clone)]
pub struct Columns {
    /// The rate column ("req/s").
    pub rate: &'static str,
    /// The CPU-per-operation column ("us/req").
    pub cpu: &'static str,
    /// Latency columns present.
    pub latency: bool,
    /// The extra column's name, if any.
    pub extra: Option<&'static str>,
}

/// Samples by case, server and round.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Case names, in order.
    pub cases: Vec<String>,
    /// Server names, in order; the first is twistor, whose ratios are shown.
    pub servers: Vec<String>,
    /// `cells[case][server]`: one sample per round the pair ran.
    cells: Vec<Vec<Vec<Option<Sample>>>>,
    rounds: usize,
}

impl Grid {
    /// An empty grid.
    pub fn new(cases: Vec<String>, servers: Vec<String>, rounds: usize) -> Grid {
        let cells = vec![vec![vec![None; rounds]; servers.len()]; cases.len()];
        Grid {
            cases,
            servers,
            cells,
            rounds,
        }
    }

    /// Record `s` for `case` and `server` in `round`.
    pub fn put(&mut self, case: usize, server: usize, round: usize, s: Sample) {
        self.cells[case][server][round] = Some(s);
    }

    /// The samples of one cell, per round (NaN for rounds it did not run).
    fn col(&self, case: usize, server: usize, f: fn(&Sample) -> f64) -> Vec<f64> {
        self.cells[case][server]
            .iter()
            .map(|s| s.as_ref().map_or(f64::NAN, f))
            .collect()
    }

    /// Whether `server` ran `case` at all.
    fn ran(&self, case: usize, server: usize) -> bool {
        self.cells[case][server].iter().any(Option::is_some)
    }

    /// The median of one figure of a cell.
    pub fn median(&self, case: usize, server: usize, f: fn(&Sample) -> f64) -> f64 {
        median(&self.col(case, server, f))
    }

    /// twistor (server 0) over `server`, median of the per-round ratios.
    pub fn ratio(&self, case: usize, server: usize, f: fn(&Sample) -> f64) -> f64 {
        paired_ratio(&self.col(case, 0, f), &self.col(case, server, f))
    }

    /// Every window's foreign share, for the quiet-core line.
    pub fn foreign(&self) -> Vec<f64> {
        self.cells
            .iter()
            .flatten()
            .flatten()
            .flatten()
            .map(|s| s.foreign)
            .filter(|x| !x.is_nan())
            .collect()
    }

    /// The table, markdown.
    pub fn markdown(&self, c: &Columns) -> String {
        let mut s = String::new();
        let mut head = format!("| case | server | {} (min-max) |", c.rate);
        let mut rule = "|---|---|---|".to_string();
        if c.latency {
            head += " p50 us | p99 us |";
            rule += "---|---|";
        }
        head += &format!(
            " server CPU | load gen CPU | {} | twistor / this: {} | twistor / this: CPU |",
            c.cpu, c.rate
        );
        rule += "---|---|---|---|---|";
        if let Some(x) = c.extra {
            head += &format!(" {x} |");
            rule += "---|";
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for (ci, case) in self.cases.iter().enumerate() {
            for (si, server) in self.servers.iter().enumerate() {
                if !self.ran(ci, si) {
                    continue;
                }
                let (lo, hi) = range(&self.col(ci, si, |x| x.rate));
                let mut row = format!(
                    "| {case} | {server} | {} ({}-{}) |",
                    num(self.median(ci, si, |x| x.rate)),
                    num(lo),
                    num(hi)
                );
                if c.latency {
                    row += &format!(
                        " {} | {} |",
                        num(self.median(ci, si, |x| x.p50)),
                        num(self.median(ci, si, |x| x.p99))
                    );
                }
                let ratios = if si == 0 || !self.ran(ci, 0) {
                    " - | - |".to_string()
                } else {
                    format!(
                        " **{}** | **{}** |",
                        fixed(self.ratio(ci, si, |x| x.rate)),
                        fixed(self.ratio(ci, si, |x| x.cpu_us))
                    )
                };
                row += &format!(
                    " {} | {} | {} |{ratios}",
                    percent(self.median(ci, si, |x| x.share)),
                    percent(self.median(ci, si, |x| x.client)),
                    precise(self.median(ci, si, |x| x.cpu_us)),
                );
                if c.extra.is_some() {
                    row += &format!(" {} |", fixed(self.median(ci, si, |x| x.extra)));
                }
                let _ = writeln!(s, "{row}");
            }
        }
        s
    }

    /// The quiet-core line under a table.
    pub fn quiet_line(&self) -> String {
        let f = self.foreign();
        if f.is_empty() {
            return String::new();
        }
        let (_, worst) = range(&f);
        format!(
            "Other processes used a median {:.0}% (worst {:.0}%) of the server core during these {} windows ({} rounds).\n",
            median(&f),
            worst,
            f.len(),
            self.rounds
        )
    }
}

/// A whole number with thousands separators ("-" for NaN).
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// A whole percentage ("-" for NaN).
pub fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}%")
    } else {
        "-".into()
    }
}

/// Two decimals ("-" for NaN).
pub fn fixed(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".into()
    }
}

/// A CPU time: three significant figures or so ("-" for NaN).
pub fn precise(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64, cpu_us: f64) -> Sample {
        Sample {
            rate,
            cpu_us,
            share: 50.0,
            ..Sample::default()
        }
    }

    #[test]
    fn ratios_are_twistor_over_the_other_per_round() {
        let mut g = Grid::new(vec!["a".into()], vec!["twistor".into(), "mio".into()], 3);
        for (r, (t, m)) in [(10.0, 5.0), (10.0, 10.0), (30.0, 10.0)].into_iter().enumerate() {
            g.put(0, 0, r, sample(t, 1.0));
            g.put(0, 1, r, sample(m, 2.0));
        }
        assert_eq!(g.ratio(0, 1, |s| s.rate), 2.0);
        assert_eq!(g.ratio(0, 1, |s| s.cpu_us), 0.5);
        let md = g.markdown(&Columns {
            rate: "req/s",
            cpu: "us/req",
            latency: false,
            extra: None,
        });
        assert!(
            md.contains("| a | mio | 10 (5-10) | 50% | - | 2.00 | **2.00** | **0.50** |"),
            "{md}"
        );
    }

    #[test]
    fn a_server_that_did_not_run_a_case_has_no_row() {
        let mut g = Grid::new(vec!["a".into()], vec!["twistor".into(), "twisted".into()], 1);
        g.put(0, 0, 0, sample(1.0, 1.0));
        let md = g.markdown(&Columns {
            rate: "req/s",
            cpu: "us/req",
            latency: true,
            extra: None,
        });
        assert!(!md.contains("twisted"), "{md}");
        assert_eq!(num(1234567.4), "1,234,567");
    }
}
