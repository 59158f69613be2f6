//! The framed-string receivers (netstring, 1/2/4-byte length prefixes)
//! under arbitrary input and arbitrary chunking.
//!
//! The input is: a configuration byte (framing, maximum length, whether
//! `clear_buffer` is allowed), chunk sizes
//! ([`chunk_sizes`](crate::input::chunk_sizes)), then the stream. Strings
//! steer the handler by their first byte:
//!
//! | first byte | the handler |
//! |---|---|
//! | `E` | echoes the string with `send_string` |
//! | `P` | pauses reading (the harness resumes it) |
//! | `C` | closes the connection |
//! | `M` | changes the maximum length (chosen by `s[1]`) |
//! | `W` | writes the string as is |
//! | `X` | `clear_buffer` (only when the configuration allows it) |
//!
//! Checked, for every input:
//! - nothing panics;
//! - bounded memory: between reads the receiver holds at most one frame
//!   header and the largest maximum length it had, plus one read while it
//!   is paused or closing; after a framing error it holds nothing;
//! - a string the receiver delivered always fits its own framing
//!   (`send_string` succeeds), and encodes to a frame that parses back to
//!   the same string;
//! - chunking does not matter: whole, chunked and byte-at-a-time feeding
//!   give the same strings, limit reports, output and close (unless
//!   `clear_buffer` is enabled, which drops "the rest of the chunk" by
//!   design).

use twistor_protocols::{Framing, Netstring, Parse, Prefixed, StringControl, StringHandler, StringReceiver};
use twistor_reactor::testing::StringTransport;
use twistor_reactor::{Protocol, Reason, Transport};

use crate::input::{chunk_sizes, split, Input};

/// The maximum lengths a run may use.
pub const MAX_LENGTHS: [usize; 8] = [0, 1, 3, 16, 255, 1000, 65_535, 99_999];

/// What the handler saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `string_received`.
    String(Vec<u8>),
    /// `length_limit_exceeded`, with the announced length.
    TooLong(u64),
}

/// The handler the fuzz input steers, for framing `F`.
pub struct Steered<F> {
    /// Everything seen.
    pub events: Vec<Event>,
    allow_clear: bool,
    /// The largest maximum length used so far.
    pub max_ever: usize,
    _framing: std::marker::PhantomData<fn() -> F>,
}

impl<F: Framing> StringHandler for Steered<F> {
    fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]) {
        assert!(
            s.len() <= c.max_length(),
            "a {}-byte string over the limit {}",
            s.len(),
            c.max_length()
        );
        self.events.push(Event::String(s.to_vec()));
        round_trip::<F>(s);
        let arg = usize::from(s.get(1).copied().unwrap_or(0));
        match s.first() {
            Some(b'E') => c
                .send_string(s)
                .expect("a string the framing delivered must fit it"),
            Some(b'P') => c.pause_reading(),
            Some(b'C') => c.lose_connection(),
            Some(b'M') => {
                let max = MAX_LENGTHS[arg % MAX_LENGTHS.len()];
                self.max_ever = self.max_ever.max(max);
                c.set_max_length(max);
            }
            Some(b'W') => c.write(s),
            Some(b'X') if self.allow_clear => c.clear_buffer(),
            _ => {}
        }
    }

    fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, length: u64) {
        assert!(
            length > c.max_length() as u64,
            "length_limit_exceeded({length}) under the limit {}",
            c.max_length()
        );
        self.events.push(Event::TooLong(length));
        c.lose_connection_with(Reason::Limit("string too long".into()));
    }
}

/// `s` encoded by `F` parses back to exactly `s`, as one whole frame.
fn round_trip<F: Framing>(s: &[u8]) {
    let mut t = StringTransport::new();
    F::encode(&mut t, s).expect("a delivered string must encode");
    let frame = t.value();
    match F::parse(frame, s.len()) {
        Parse::Frame { start, len, end } => {
            assert_eq!(end, frame.len(), "the frame of a {}-byte string", s.len());
            assert_eq!(&frame[start..start + len], s);
        }
        other => panic!(
            "{} does not parse its own frame of {} bytes: {other:?}",
            F::NAME,
            s.len()
        ),
    }
}

/// How one run ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The handler's events.
    pub events: Vec<Event>,
    /// Bytes written to the transport.
    pub written: Vec<u8>,
    /// Whether the connection was closing at the end, and why.
    pub closed: Option<String>,
}

/// Feed `chunks` to a new receiver with framing `F` as the reactor would,
/// resuming after each chunk; `header` is the longest frame header.
fn feed<F: Framing>(config: u8, header: usize, chunks: &[&[u8]]) -> Outcome {
    let max = MAX_LENGTHS[usize::from(config >> 5)];
    let handler = Steered::<F> {
        events: Vec::new(),
        allow_clear: config & 4 != 0,
        max_ever: max,
        _framing: std::marker::PhantomData,
    };
    let mut p = StringReceiver::<F, _>::new(handler).with_max_length(max);
    let mut t = StringTransport::new();
    for chunk in chunks {
        if t.is_closing() {
            break;
        }
        p.data_received(&mut t, chunk);
        check_bound(&p, &t, header, chunk.len());
        let mut resumes = 0;
        while !t.is_closing() && !t.is_reading() {
            p.resume_reading(&mut t);
            check_bound(&p, &t, header, chunk.len());
            resumes += 1;
            assert!(resumes <= chunk.len() + 2, "resume_reading delivered nothing");
        }
        // Code outside a callback (a timer, another connection) reaching
        // the handler must not change what the stream means.
        p.with_handler(&mut t, |_, _| {});
        check_bound(&p, &t, header, chunk.len());
    }
    Outcome {
        events: p.handler().events.clone(),
        written: t.value().to_vec(),
        closed: t.disconnecting().then(|| format!("{:?}", t.close_reason())),
    }
}

fn check_bound<F: Framing>(
    p: &StringReceiver<F, Steered<F>>,
    t: &StringTransport,
    header: usize,
    last_read: usize,
) {
    let frame_bound = header + p.handler().max_ever + 1;
    let held = p.buffered().len();
    if matches!(t.close_reason(), Some(Reason::Limit(_))) {
        assert_eq!(held, 0, "input kept after a framing error");
    }
    if t.is_reading() {
        assert!(
            held <= frame_bound,
            "{held} bytes held between reads, bound {frame_bound}"
        );
    } else {
        assert!(
            held <= frame_bound + last_read,
            "{held} bytes held, bound {frame_bound} + one read of {last_read}"
        );
    }
}

fn run_framing<F: Framing>(config: u8, header: usize, stream: &[u8], sizes: &[usize]) {
    let chunked = feed::<F>(config, header, &split(stream, sizes));
    let whole = feed::<F>(config, header, &[stream]);
    let bytewise = (stream.len() <= 2048).then(|| feed::<F>(config, header, &split(stream, &[1])));
    if config & 4 != 0 {
        return; // clear_buffer enabled: chunking changes what is dropped.
    }
    assert_eq!(chunked, whole, "{}: chunked vs whole", F::NAME);
    if let Some(b) = bytewise {
        assert_eq!(b, whole, "{}: byte at a time vs whole", F::NAME);
    }
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let config = inp.byte();
    let sizes = chunk_sizes(&mut inp);
    let stream = inp.rest();
    // A netstring header: the digits of the largest length, and ':'.
    let netstring_header = MAX_LENGTHS[MAX_LENGTHS.len() - 1].to_string().len() + 1;
    match config & 3 {
        0 => run_framing::<Netstring>(config, netstring_header, stream, &sizes),
        1 => run_framing::<Prefixed<1>>(config, 1, stream, &sizes),
        2 => run_framing::<Prefixed<2>>(config, 2, stream, &sizes),
        _ => run_framing::<Prefixed<4>>(config, 4, stream, &sizes),
    }
}
