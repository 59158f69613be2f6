//! `LineReceiver` under arbitrary input and arbitrary chunking.
//!
//! The input is: a configuration byte, chunk sizes
//! ([`chunk_sizes`](crate::input::chunk_sizes)), then the stream. Lines
//! steer the handler by their first byte:
//!
//! | first byte | the handler |
//! |---|---|
//! | `E` | echoes the line with `send_line` |
//! | `R` | switches to raw mode for the next `line[1]` bytes, then back to line mode handing back the rest (`set_line_mode_with`) |
//! | `P` | pauses reading (the harness resumes it, as a consumer would) |
//! | `C` | closes the connection |
//! | `D` | changes the delimiter (chosen by `line[1]`) |
//! | `M` | changes the maximum line length (chosen by `line[1]`) |
//! | `W` | writes the line as is |
//! | `X` | `clear_buffer` (only when the configuration allows it, see below) |
//!
//! Checked, for every input:
//! - nothing panics;
//! - bounded memory: between reads the receiver holds at most the longest
//!   maximum line length it had plus a delimiter, plus one read while it
//!   is paused or closing;
//! - chunking does not matter: the same stream fed whole, in the given
//!   chunks and one byte at a time gives the same lines, raw bytes,
//!   over-long line reports, output and close. (`clear_buffer` drops "the
//!   rest of the current chunk" by design, so inputs that enable it check
//!   the first two points only.)

use twistor_protocols::{LineControl, LineHandler, LineReceiver, DEFAULT_MAX_LINE_LENGTH};
use twistor_reactor::testing::StringTransport;
use twistor_reactor::{Reason, Transport};

use crate::input::{chunk_sizes, split, Input};

/// The delimiters a run may use (the longest is 2 bytes).
pub const DELIMITERS: [&[u8]; 4] = [b"\r\n", b"\n", b"\0", b"ab"];
const LONGEST_DELIMITER: usize = 2;
/// The maximum line lengths a run may use.
pub const MAX_LENGTHS: [usize; 8] = [0, 1, 3, 8, 16, 64, 1024, DEFAULT_MAX_LINE_LENGTH];

/// What the handler saw, in order. Consecutive raw chunks are merged, since
/// how raw bytes are cut depends on how they arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `line_received`.
    Line(Vec<u8>),
    /// `raw_data_received` (merged).
    Raw(Vec<u8>),
    /// `line_length_exceeded`, with the bytes it was given.
    Exceeded(Vec<u8>),
}

/// The handler the fuzz input steers.
pub struct Steered {
    /// Everything seen.
    pub events: Vec<Event>,
    /// Keep the connection open after an over-long line (skip it).
    keep_open: bool,
    /// Whether `X` clears the buffer.
    allow_clear: bool,
    /// Raw bytes still expected before going back to line mode.
    raw_left: usize,
    /// The largest maximum line length used so far.
    pub max_ever: usize,
}

impl Steered {
    fn new(keep_open: bool, allow_clear: bool, max: usize) -> Steered {
        Steered {
            events: Vec::new(),
            keep_open,
            allow_clear,
            raw_left: 0,
            max_ever: max,
        }
    }
}

impl LineHandler for Steered {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.events.push(Event::Line(line.to_vec()));
        let arg = usize::from(line.get(1).copied().unwrap_or(0));
        match line.first() {
            Some(b'E') => c.send_line(line),
            Some(b'R') => {
                self.raw_left = arg;
                c.set_raw_mode();
            }
            Some(b'P') => c.pause_reading(),
            Some(b'C') => c.lose_connection(),
            Some(b'D') => c.set_delimiter(DELIMITERS[arg % DELIMITERS.len()]),
            Some(b'M') => {
                let max = MAX_LENGTHS[arg % MAX_LENGTHS.len()];
                self.max_ever = self.max_ever.max(max);
                c.set_max_length(max);
            }
            Some(b'W') => c.write(line),
            Some(b'X') if self.allow_clear => c.clear_buffer(),
            _ => {}
        }
    }

    fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
        let n = self.raw_left.min(data.len());
        if n > 0 {
            match self.events.last_mut() {
                Some(Event::Raw(v)) => v.extend_from_slice(&data[..n]),
                _ => self.events.push(Event::Raw(data[..n].to_vec())),
            }
        }
        self.raw_left -= n;
        if self.raw_left == 0 {
            c.set_line_mode_with(&data[n..]);
        }
    }

    fn line_length_exceeded(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        assert_eq!(
            line.len(),
            c.max_length() + 1,
            "line_length_exceeded must get the first max_length + 1 bytes"
        );
        self.events.push(Event::Exceeded(line.to_vec()));
        if !self.keep_open {
            c.lose_connection_with(Reason::Limit("line too long".into()));
        }
    }
}

/// How one run ended: what the handler saw, what was written, the close.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The handler's events.
    pub events: Vec<Event>,
    /// Bytes written to the transport.
    pub written: Vec<u8>,
    /// Whether the connection was closing at the end, and why.
    pub closed: Option<String>,
}

/// Feed `chunks` to a new receiver the way the reactor would (nothing while
/// paused or closing), resuming after each chunk, and check the memory
/// bound after every step.
pub fn feed(config: u8, chunks: &[&[u8]]) -> Outcome {
    let delimiter = DELIMITERS[usize::from(config & 3)];
    let keep_open = config & 4 != 0;
    let allow_clear = config & 8 != 0;
    let max = MAX_LENGTHS[usize::from(config >> 4) % MAX_LENGTHS.len()];
    let mut p = LineReceiver::new(Steered::new(keep_open, allow_clear, max))
        .with_delimiter(delimiter)
        .with_max_length(max);
    let mut t = StringTransport::new();
    for chunk in chunks {
        if t.is_closing() {
            break;
        }
        assert!(t.is_reading(), "fed while paused");
        twistor_reactor::Protocol::data_received(&mut p, &mut t, chunk);
        check_bound(&p, &t, chunk.len());
        // A consumer resumes a paused receiver; each resume delivers at
        // least one held line, so this ends.
        let mut resumes = 0;
        while !t.is_closing() && !t.is_reading() {
            p.resume_reading(&mut t);
            check_bound(&p, &t, chunk.len());
            resumes += 1;
            assert!(resumes <= chunk.len() + 2, "resume_reading delivered nothing");
        }
        // Code outside a callback (a timer, another connection) reaching
        // the handler must not change what the stream means.
        p.with_handler(&mut t, |_, _| {});
        check_bound(&p, &t, chunk.len());
    }
    Outcome {
        events: p.handler().events.clone(),
        written: t.value().to_vec(),
        closed: t.disconnecting().then(|| format!("{:?}", t.close_reason())),
    }
}

/// The receiver holds no more than a line at its largest maximum plus a
/// delimiter between reads, plus the last read while paused or closing.
fn check_bound(p: &LineReceiver<Steered>, t: &StringTransport, last_read: usize) {
    let line_bound = p.handler().max_ever + LONGEST_DELIMITER;
    let held = p.buffered().len();
    if t.is_reading() {
        assert!(
            held <= line_bound,
            "{held} bytes held between reads, bound {line_bound}"
        );
    } else {
        assert!(
            held <= line_bound + last_read,
            "{held} bytes held, bound {line_bound} + one read of {last_read}"
        );
    }
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let config = inp.byte();
    let sizes = chunk_sizes(&mut inp);
    let stream = inp.rest();
    let chunked = feed(config, &split(stream, &sizes));
    let whole = feed(config, &[stream]);
    let bytewise = (stream.len() <= 2048).then(|| feed(config, &split(stream, &[1])));
    if config & 8 != 0 {
        return; // clear_buffer enabled: chunking changes what is dropped.
    }
    assert_eq!(chunked, whole, "chunked vs whole");
    if let Some(b) = bytewise {
        assert_eq!(b, whole, "byte at a time vs whole");
    }
}
