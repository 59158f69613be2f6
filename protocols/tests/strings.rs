//! Netstrings and length-prefixed strings: framing under any chunking,
//! limits, malformed input, garbage never panics.

use proptest::prelude::*;
use twistor_protocols::{
    Framing, Int16StringReceiver, Int32StringReceiver, Int8StringReceiver, Netstring, NetstringReceiver,
    Parse, Prefixed, StringControl, StringHandler, StringReceiver,
};
use twistor_reactor::testing::{MemoryPair, Recorder, StringTransport};
use twistor_reactor::{Protocol, Reason, Transport};

#[derive(Default)]
struct Collect {
    got: Vec<Vec<u8>>,
    too_long: Vec<u64>,
}

impl StringHandler for Collect {
    fn string_received(&mut self, _: &mut StringControl<'_>, s: &[u8]) {
        self.got.push(s.to_vec());
    }
    fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, length: u64) {
        self.too_long.push(length);
        c.lose_connection_with(Reason::Limit("too long".into()));
    }
}

fn feed<F: Framing>(
    p: &mut StringReceiver<F, Collect>,
    t: &mut StringTransport,
    data: &[u8],
    sizes: &[usize],
) {
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - pos);
        p.data_received(t, &data[pos..pos + n]);
        pos += n;
        i += 1;
    }
}

/// Encode `strings` with framing `F`, feed them back in chunks of `sizes`,
/// and check every string comes out once, in order.
fn round_trip<F: Framing>(strings: &[Vec<u8>], sizes: &[usize]) -> Result<(), TestCaseError> {
    let mut wire = StringTransport::new();
    for s in strings {
        F::encode(&mut wire, s).unwrap();
    }
    let mut t = StringTransport::new();
    let mut p = StringReceiver::<F, Collect>::new(Collect::default());
    feed(&mut p, &mut t, wire.value(), sizes);
    prop_assert_eq!(&p.handler().got, strings);
    prop_assert!(p.buffered().is_empty());
    prop_assert!(!t.disconnecting());
    Ok(())
}

fn strings(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..max), 0..8)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..16, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn netstrings_any_chunking(s in strings(300), z in sizes()) {
        round_trip::<Netstring>(&s, &z)?;
    }

    #[test]
    fn int8_any_chunking(s in strings(256), z in sizes()) {
        round_trip::<Prefixed<1>>(&s, &z)?;
    }

    #[test]
    fn int16_any_chunking(s in strings(300), z in sizes()) {
        round_trip::<Prefixed<2>>(&s, &z)?;
    }

    #[test]
    fn int32_any_chunking(s in strings(300), z in sizes()) {
        round_trip::<Prefixed<4>>(&s, &z)?;
    }

    /// Garbage never panics, never buffers past the limit, and the outcome
    /// (frames delivered, closed or not) does not depend on chunking.
    #[test]
    fn garbage_is_bounded_and_chunking_independent(
        data in prop::collection::vec(prop::sample::select(vec![b'0', b'1', b'9', b':', b',', b'a', 0, 3, 0xff]), 0..200),
        z in sizes(),
        max in prop_oneof![0usize..40, Just(usize::MAX), Just(usize::MAX - 1), Just(u32::MAX as usize)],
    ) {
        fn check<F: Framing>(data: &[u8], z: &[usize], max: usize) -> Result<(), TestCaseError> {
            // Every parse of every prefix, with any limit, answers without
            // panicking, and a frame it reports lies inside the input.
            for end in 0..=data.len() {
                if let Parse::Frame { start, len, end: e } = F::parse(&data[..end], max) {
                    prop_assert!(start.checked_add(len).is_some_and(|x| x <= e) && e <= end);
                }
            }
            let mut t1 = StringTransport::new();
            let mut whole = StringReceiver::<F, Collect>::new(Collect::default()).with_max_length(max);
            whole.data_received(&mut t1, data);
            let mut t2 = StringTransport::new();
            let mut chunked = StringReceiver::<F, Collect>::new(Collect::default()).with_max_length(max);
            feed(&mut chunked, &mut t2, data, z);
            prop_assert_eq!(&chunked.handler().got, &whole.handler().got);
            prop_assert_eq!(t1.disconnecting(), t2.disconnecting());
            prop_assert!(chunked.buffered().len() <= max.saturating_add(32));
            if t2.disconnecting() {
                prop_assert!(matches!(t2.close_reason(), Some(Reason::Limit(_))));
            }
            Ok(())
        }
        check::<Netstring>(&data, &z, max)?;
        check::<Prefixed<1>>(&data, &z, max)?;
        check::<Prefixed<2>>(&data, &z, max)?;
        check::<Prefixed<4>>(&data, &z, max)?;
        check::<Prefixed<8>>(&data, &z, max)?;
    }
}

#[test]
fn netstring_over_long_length_is_refused_before_the_payload() {
    let mut t = StringTransport::new();
    let mut p = NetstringReceiver::new(Collect::default()).with_max_length(100);
    p.data_received(&mut t, b"3:abc,10");
    assert!(!t.disconnecting());
    p.data_received(&mut t, b"1");
    assert_eq!(p.handler().too_long, [101]);
    assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    p.data_received(&mut t, b":whatever,3:abc,");
    assert_eq!(p.handler().got, [b"abc".to_vec()]);
    assert!(p.buffered().is_empty());
}

#[test]
fn netstring_malformed_inputs_close_with_limit() {
    for bad in [
        &b"abc"[..],
        b"01:a,",
        b"3:abcX",
        b":",
        b"-1:",
        b"3,abc",
        b"99999999999999999999999:",
    ] {
        let mut t = StringTransport::new();
        let mut p = NetstringReceiver::new(Collect::default());
        p.data_received(&mut t, bad);
        assert!(
            t.disconnecting(),
            "{:?} should close",
            String::from_utf8_lossy(bad)
        );
        assert!(matches!(t.close_reason(), Some(Reason::Limit(_))), "{bad:?}");
        assert!(p.handler().got.is_empty());
    }
}

#[test]
fn default_length_limit_hook_closes_with_limit() {
    let mut t = StringTransport::new();
    let mut p = Int32StringReceiver::new(|_: &mut StringControl<'_>, _: &[u8]| {});
    p.data_received(&mut t, &[0, 1, 0x86, 0xa0]); // 100,000 > 99,999
    assert!(matches!(t.close_reason(), Some(Reason::Limit(m)) if m.contains("99999")));
}

#[test]
fn prefixed_limits_and_defaults() {
    use twistor_protocols::Framing as _;
    assert_eq!(Prefixed::<1>::DEFAULT_MAX_LENGTH, 255);
    assert_eq!(Prefixed::<2>::DEFAULT_MAX_LENGTH, 65_535);
    assert_eq!(Prefixed::<4>::DEFAULT_MAX_LENGTH, 99_999);
    let mut t = StringTransport::new();
    let mut p = Int16StringReceiver::new(Collect::default()).with_max_length(4);
    p.data_received(&mut t, b"\x00\x04abcd\x00\x05");
    assert_eq!(p.handler().got, [b"abcd".to_vec()]);
    assert_eq!(p.handler().too_long, [5]);
    assert!(t.disconnecting());
}

#[test]
fn send_string_too_long_for_the_prefix_is_an_error() {
    let mut t = StringTransport::new();
    let mut p = Int8StringReceiver::new(Collect::default());
    let res = p.with_handler(&mut t, |_, c| c.send_string(&[7; 256]));
    let err = res.unwrap_err();
    assert_eq!((err.len, err.max), (256, 255));
    assert!(t.value().is_empty());
    p.with_handler(&mut t, |_, c| c.send_string(&[7; 255])).unwrap();
    assert_eq!(t.value().len(), 256);
}

#[test]
fn netstring_echo_over_a_memory_pair() {
    let (client, record) = Recorder::new();
    let server = NetstringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
        c.send_string(s).unwrap();
    });
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"5:hello,0:,3:a"));
    pair.with_client(|_, t| t.write(b"bc,"));
    assert_eq!(record.borrow().data, b"5:hello,0:,3:abc,");
    pair.with_client(|_, t| t.write(b"1x"));
    assert!(pair.is_closed());
    assert!(
        record.borrow().lost[0].is_clean(),
        "the client sees an orderly close"
    );
}

#[test]
fn start_tls_discards_buffered_frames() {
    let mut t = StringTransport::new();
    let mut p = NetstringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
        c.write(s);
        if s == b"tls" {
            c.upgrade(Box::new(|old, _| old));
        }
    });
    p.data_received(&mut t, b"1:a,3:tls,1:b,1:");
    assert_eq!(t.take(), b"atls");
    assert!(p.buffered().is_empty());
    p.data_received(&mut t, b"1:c,");
    assert_eq!(t.take(), b"c");
}

/// A broken user framing (a frame of zero bytes) must not spin forever.
struct Broken;
impl Framing for Broken {
    const NAME: &'static str = "broken";
    const DEFAULT_MAX_LENGTH: usize = 10;
    fn parse(_: &[u8], _: usize) -> twistor_protocols::Parse {
        twistor_protocols::Parse::Frame {
            start: 0,
            len: 0,
            end: 0,
        }
    }
    fn encode(_: &mut dyn Transport, _: &[u8]) -> Result<(), twistor_protocols::StringTooLong> {
        Ok(())
    }
}

#[test]
fn an_impossible_frame_from_a_user_framing_closes() {
    let mut t = StringTransport::new();
    let mut p = StringReceiver::<Broken, Collect>::new(Collect::default());
    p.data_received(&mut t, b"anything");
    assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    assert!(p.handler().got.is_empty());
}

#[test]
fn an_idle_receiver_keeps_little_buffer_after_a_large_frame() {
    use twistor_reactor::InputBuf;
    fn check<F: Framing>() {
        let mut wire = StringTransport::new();
        F::encode(&mut wire, &[7u8; 60_000]).unwrap();
        F::encode(&mut wire, b"tail").unwrap();
        let wire = wire.value().to_vec();
        let mut t = StringTransport::new();
        let mut p = StringReceiver::<F, Collect>::new(Collect::default()).with_max_length(64 * 1024);
        // The large frame in 1 KB pieces, and a partial next frame.
        let split = wire.len() - 3;
        for chunk in wire[..split].chunks(1000) {
            p.data_received(&mut t, chunk);
        }
        assert_eq!(p.handler().got.len(), 1);
        assert!(!p.buffered().is_empty(), "a partial frame is held");
        assert!(
            p.buffer_capacity() <= InputBuf::KEEP,
            "{}: a small tail keeps {} bytes",
            F::NAME,
            p.buffer_capacity()
        );
        p.data_received(&mut t, &wire[split..]);
        assert_eq!(p.handler().got.len(), 2);
        assert!(p.buffered().is_empty());
        assert!(p.buffer_capacity() <= InputBuf::KEEP, "{}", p.buffer_capacity());
    }
    check::<Netstring>();
    check::<Prefixed<4>>();
}

/// Records over-long announcements and leaves the connection open.
#[derive(Default)]
struct Lenient {
    got: Vec<Vec<u8>>,
    too_long: Vec<u64>,
}

impl StringHandler for Lenient {
    fn string_received(&mut self, _: &mut StringControl<'_>, s: &[u8]) {
        self.got.push(s.to_vec());
    }
    fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, length: u64) {
        self.too_long.push(length);
        c.write(b"too long\r\n");
    }
}

#[test]
fn a_framing_error_closes_even_when_the_hook_leaves_the_connection_open() {
    // After an over-long length the payload's bytes would be read as frame
    // headers: a length-prefixed stream cannot be resynchronised, so the
    // receiver closes the connection itself rather than go on silently.
    let mut t = StringTransport::new();
    let mut p = Int16StringReceiver::new(Lenient::default()).with_max_length(4);
    p.data_received(&mut t, b"\x00\x02ok\x00\x09");
    assert_eq!(p.handler().too_long, [9]);
    assert_eq!(t.value(), b"too long\r\n", "the hook ran first");
    assert!(
        matches!(t.close_reason(), Some(Reason::Limit(m)) if m.contains("4 bytes")),
        "{:?}",
        t.close_reason()
    );
    // Nothing after the error is delivered or kept.
    p.data_received(&mut t, b"\x00\x01x");
    assert_eq!(p.handler().got, [b"ok".to_vec()]);
    assert!(p.buffered().is_empty());

    // Over a connection: the peer sees the message, then the close.
    let (client, record) = Recorder::new();
    let server = NetstringReceiver::new(Lenient::default()).with_max_length(4);
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"2:ok,99:"));
    pair.pump();
    assert!(pair.is_closed());
    assert_eq!(record.borrow().data, b"too long\r\n");
}

#[test]
fn a_huge_prefix_with_no_limit_does_not_overflow() {
    // with_max_length(usize::MAX) means "no limit": an 8-byte prefix of
    // 0xff announces more than memory can address, and must be refused,
    // not computed with an overflow.
    assert!(matches!(
        Prefixed::<8>::parse(&[0xff; 8], usize::MAX),
        Parse::TooLong(u64::MAX)
    ));
    let mut t = StringTransport::new();
    let mut p = StringReceiver::<Prefixed<8>, Collect>::new(Collect::default()).with_max_length(usize::MAX);
    p.data_received(&mut t, &[0xff; 9]);
    assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
}
