//! Properties of the PROXY header parser over arbitrary input: it never
//! panics; its verdict on a prefix is final (more bytes never change it)
//! and a header is found exactly when its last byte arrives, never later
//! and never reaching past it; any valid header, split anywhere and
//! followed by anything, parses to what was encoded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use twistor_reactor::Address;
use twistor_transports::proxy::{parse_header, Origin, Parsed, ProxyError, V1_MAX_LEN, V2_SIGNATURE};

/// Inputs worth trying: pure noise, and noise after each version's opening.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..300);
    let printable = proptest::collection::vec(
        prop_oneof![
            8 => 0x20u8..0x7f,
            1 => Just(b'\r'),
            1 => Just(b'\n'),
            1 => any::<u8>()
        ],
        0..160,
    );
    prop_oneof![
        noise.clone(),
        printable
            .clone()
            .prop_map(|t| [b"PROXY ".as_slice(), &t].concat()),
        printable.prop_map(|t| [b"PROXY TCP4 ".as_slice(), &t].concat()),
        noise.prop_map(|t| [V2_SIGNATURE.as_slice(), &t].concat()),
    ]
}

/// The verdict on every prefix of `bytes`, checked to be final once made;
/// returns it and the prefix length at which it was made.
fn verdict(bytes: &[u8], max: usize) -> Option<(Result<Parsed, ProxyError>, usize)> {
    let mut first: Option<(Result<Parsed, ProxyError>, usize)> = None;
    for k in 0..=bytes.len() {
        let v = parse_header(&bytes[..k], max);
        match &first {
            None if v != Ok(Parsed::Incomplete) => first = Some((v, k)),
            None => {}
            Some((d, at)) => assert_eq!(&v, d, "prefix {k} contradicts the verdict at {at}"),
        }
    }
    first
}

/// A valid header and what it says.
fn header() -> impl Strategy<Value = (Vec<u8>, Origin)> {
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>(), any::<u16>());
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>());
    let tlvs = proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..4);
    let client = |s: SocketAddr, d: SocketAddr| Origin::Client {
        source: Address::Inet(canonical(s)),
        destination: Address::Inet(canonical(d)),
    };
    prop_oneof![
        v4.prop_map(move |(s, d, sp, dp)| {
            let (s, d) = (SocketAddr::from((s, sp)), SocketAddr::from((d, dp)));
            let line = format!("PROXY TCP4 {} {} {sp} {dp}\r\n", s.ip(), d.ip());
            (line.into_bytes(), client(s, d))
        }),
        v6.prop_map(move |(s, d, sp, dp)| {
            let (s, d) = (SocketAddr::from((s, sp)), SocketAddr::from((d, dp)));
            let line = format!("PROXY TCP6 {} {} {sp} {dp}\r\n", s.ip(), d.ip());
            (line.into_bytes(), client(s, d))
        }),
        "[ -~]{0,91}".prop_map(|rest| {
            let line = format!(
                "PROXY UNKNOWN{}{rest}\r\n",
                if rest.is_empty() { "" } else { " " }
            );
            (line.into_bytes(), Origin::Unknown)
        }),
        (v4, tlvs.clone()).prop_map(move |((s, d, sp, dp), tlvs)| {
            let mut body = [s, d].concat();
            body.extend_from_slice(&sp.to_be_bytes());
            body.extend_from_slice(&dp.to_be_bytes());
            (
                v2(0x21, 0x11, body, &tlvs),
                client((s, sp).into(), (d, dp).into()),
            )
        }),
        (v6, tlvs.clone()).prop_map(move |((s, d, sp, dp), tlvs)| {
            let mut body = [s, d].concat();
            body.extend_from_slice(&sp.to_be_bytes());
            body.extend_from_slice(&dp.to_be_bytes());
            (
                v2(0x21, 0x21, body, &tlvs),
                client((s, sp).into(), (d, dp).into()),
            )
        }),
        (proptest::collection::vec(any::<u8>(), 0..64), tlvs)
            .prop_map(|(junk, tlvs)| (v2(0x20, 0x11, junk, &tlvs), Origin::Local)),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|junk| (v2(0x21, 0x00, junk, &[]), Origin::Unknown)),
    ]
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn v2(ver_cmd: u8, fam: u8, mut body: Vec<u8>, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    for (t, v) in tlvs {
        body.push(*t);
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
    }
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_get_a_final_verdict_and_a_header_ends_where_it_is_found(
        bytes in input(),
        max in prop_oneof![Just(4096usize), 0usize..300],
    ) {
        if let Some((v, at)) = verdict(&bytes, max) {
            if let Ok(Parsed::Header(h)) = &v {
                prop_assert_eq!(h.len, at);
            }
            if let Err(ProxyError::TooLong { limit }) = v {
                prop_assert!(limit == V1_MAX_LEN || limit == max);
            }
        }
    }

    #[test]
    fn a_valid_header_split_anywhere_and_followed_by_anything_parses_whole(
        (bytes, origin) in header(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let all = [bytes.as_slice(), &tail].concat();
        // Arrivals at arbitrary points: every prefix the listener could see.
        let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(all.len() + 1)).collect();
        ends.push(all.len());
        ends.sort_unstable();
        for end in ends {
            let v = parse_header(&all[..end], 4096);
            if end < bytes.len() {
                prop_assert_eq!(v, Ok(Parsed::Incomplete), "at {} of {}", end, bytes.len());
            } else {
                let Ok(Parsed::Header(h)) = v else {
                    return Err(TestCaseError::fail(format!("{v:?} at {end}")));
                };
                prop_assert_eq!(h.len, bytes.len());
                prop_assert_eq!(&h.origin, &origin);
                prop_assert_eq!(h.version, if bytes[0] == b'P' { 1 } else { 2 });
            }
        }
    }

    #[test]
    fn a_v2_length_over_the_bound_is_refused_from_the_fixed_bytes_alone(
        len in any::<u16>(),
        max in 0usize..70_000,
    ) {
        let mut fixed = V2_SIGNATURE.to_vec();
        fixed.extend_from_slice(&[0x21, 0x00]);
        fixed.extend_from_slice(&len.to_be_bytes());
        let v = parse_header(&fixed, max);
        if 16 + usize::from(len) > max {
            prop_assert_eq!(v, Err(ProxyError::TooLong { limit: max }));
        } else if len == 0 {
            prop_assert!(matches!(v, Ok(Parsed::Header(_))));
        } else {
            prop_assert_eq!(v, Ok(Parsed::Incomplete));
        }
    }
}

/// The addresses a v1 line gives are the ones written, IPv4-mapped ones
/// included (as IPv4).
#[test]
fn mapped_addresses_come_out_as_ipv4() {
    let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
    let line = format!("PROXY TCP6 {mapped} ::1 1 2\r\n");
    let Ok(Parsed::Header(h)) = parse_header(line.as_bytes(), 4096) else {
        panic!()
    };
    let Origin::Client { source, .. } = h.origin else {
        panic!()
    };
    assert_eq!(source.ip(), Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
}
