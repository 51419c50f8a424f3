//! Byte vectors of real keepalived 2.2.7 adverts (captured on Debian 12, see
//! shared/captures and the IPv6 one recorded the same way), decoded and re-encoded byte for byte;
//! each rejection reason; and encode/decode identity over generated adverts.

use std::net::IpAddr;

use halo_vrrp::packet::{Advertisement, Auth, DecodeError, decode, encode};
use halo_vrrp::{ChecksumMode, Version, Vrid};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// keepalived 2.2.7, VRRPv2, VRID 51, priority 101, 1 s, PASS "42", VIP 192.0.2.170.
const V2_PASS: &str = "21 33 65 01 01 01 81 ed c0 00 02 aa 34 32 00 00 00 00 00 00";
/// keepalived 2.2.7, VRRPv3 over IPv4, VRID 51, priority 101, 100 ms, VIP 192.0.2.170.
const V3_IPV4: &str = "31 33 65 01 00 0a 04 7c c0 00 02 aa";
/// keepalived 2.2.7, VRRPv3 over IPv6, VRID 51, priority 101, 100 ms, VIP 2001:db8::170.
const V3_IPV6: &str = "31 33 65 01 00 0a 5a 26 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 01 70";

fn vrid(n: i64) -> Vrid {
    Vrid::new(n).expect("vrid")
}

#[test]
fn keepalived_v2_pass_both_ways() {
    let (src, dst) = (ip("192.0.2.11"), ip("224.0.0.18"));
    let adv = decode(&hex(V2_PASS), src, dst, ChecksumMode::PseudoHeader).expect("decodes");
    let expected = Advertisement {
        version: Version::V2,
        vrid: vrid(51),
        priority: 101,
        interval_cs: 100,
        addresses: vec![ip("192.0.2.170")],
        auth: Auth::pass("42"),
    };
    assert_eq!(adv, expected);
    assert_eq!(encode(&expected, src, dst, ChecksumMode::PseudoHeader).expect("encodes"), hex(V2_PASS));
}

#[test]
fn keepalived_v3_ipv4_both_ways_with_pseudo_header() {
    let (src, dst) = (ip("192.0.2.11"), ip("224.0.0.18"));
    let adv = decode(&hex(V3_IPV4), src, dst, ChecksumMode::PseudoHeader).expect("decodes");
    let expected = Advertisement {
        version: Version::V3,
        vrid: vrid(51),
        priority: 101,
        interval_cs: 10,
        addresses: vec![ip("192.0.2.170")],
        auth: Auth::None,
    };
    assert_eq!(adv, expected);
    assert_eq!(encode(&expected, src, dst, ChecksumMode::PseudoHeader).expect("encodes"), hex(V3_IPV4));
    // The same bytes under the as-v2 rule do not verify: keepalived really includes the header.
    assert!(matches!(decode(&hex(V3_IPV4), src, dst, ChecksumMode::AsV2), Err(DecodeError::Checksum { got: 0x047c })));
}

#[test]
fn keepalived_v3_ipv6_both_ways() {
    let (src, dst) = (ip("fe80::50d2:7dff:fede:14a3"), ip("ff02::12"));
    let adv = decode(&hex(V3_IPV6), src, dst, ChecksumMode::PseudoHeader).expect("decodes");
    let expected = Advertisement {
        version: Version::V3,
        vrid: vrid(51),
        priority: 101,
        interval_cs: 10,
        addresses: vec![ip("2001:db8::170")],
        auth: Auth::None,
    };
    assert_eq!(adv, expected);
    assert_eq!(encode(&expected, src, dst, ChecksumMode::PseudoHeader).expect("encodes"), hex(V3_IPV6));
    // IPv6 always has the pseudo-header; the mode only concerns IPv4.
    assert_eq!(decode(&hex(V3_IPV6), src, dst, ChecksumMode::AsV2), Ok(expected));
}

#[test]
fn the_checksum_covers_the_source_address() {
    let bytes = hex(V3_IPV4);
    let moved = decode(&bytes, ip("192.0.2.12"), ip("224.0.0.18"), ChecksumMode::PseudoHeader);
    assert!(matches!(moved, Err(DecodeError::Checksum { .. })));
}

#[test]
fn every_rejection_has_its_reason() {
    let (src, dst) = (ip("192.0.2.11"), ip("224.0.0.18"));
    let mode = ChecksumMode::PseudoHeader;
    let v2 = hex(V2_PASS);
    let with = |index: usize, value: u8| {
        let mut b = v2.clone();
        b[index] = value;
        b
    };
    let cases: Vec<(Vec<u8>, IpAddr, &str)> = vec![
        (v2[..7].to_vec(), src, "truncated"),
        (v2[..19].to_vec(), src, "truncated"),
        (with(0, 0x41), src, "version"),
        (with(0, 0x22), src, "type"),
        (with(1, 0), src, "vrid"),
        (with(3, 2), src, "truncated"),
        (with(9, 1), src, "checksum"),
        (with(4, 2), src, "checksum"),
        (v2.clone(), ip("fe80::1"), "family"),
    ];
    for (bytes, from, reason) in cases {
        let got = decode(&bytes, from, dst, mode).map_err(|e| e.reason());
        assert_eq!(got, Err(reason), "{bytes:02x?}");
    }
    // Valid checksums over bad fields: re-encode the fields by hand.
    let fix = |mut b: Vec<u8>| {
        b[6] = 0;
        b[7] = 0;
        let mut sum: u32 = b.chunks(2).map(|p| u32::from(u16::from_be_bytes([p[0], p[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        b[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        b
    };
    assert_eq!(decode(&fix(with(4, 2)), src, dst, mode).map_err(|e| e.reason()), Err("auth_type"));
    assert_eq!(decode(&fix(with(5, 0)), src, dst, mode).map_err(|e| e.reason()), Err("interval"));
    let mut v2_over_v6 = hex(V3_IPV6);
    v2_over_v6[0] = 0x21;
    assert_eq!(decode(&v2_over_v6, ip("fe80::1"), ip("ff02::12"), mode).map_err(|e| e.reason()), Err("v2_over_ipv6"));
}

#[test]
fn truncation_at_every_length_is_an_error_not_a_panic() {
    for vector in [V2_PASS, V3_IPV4] {
        let bytes = hex(vector);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], ip("192.0.2.11"), ip("224.0.0.18"), ChecksumMode::PseudoHeader).is_err());
        }
    }
}

#[test]
fn encode_refuses_what_the_version_cannot_carry() {
    let (src, dst) = (ip("192.0.2.11"), ip("224.0.0.18"));
    let mut adv = Advertisement {
        version: Version::V2,
        vrid: vrid(1),
        priority: 100,
        interval_cs: 150,
        addresses: vec![ip("192.0.2.1")],
        auth: Auth::None,
    };
    assert!(encode(&adv, src, dst, ChecksumMode::PseudoHeader).is_err(), "1.5 s in v2");
    adv.interval_cs = 100;
    adv.addresses = vec![ip("2001:db8::1")];
    assert!(encode(&adv, src, dst, ChecksumMode::PseudoHeader).is_err(), "family");
    adv.addresses = vec![ip("192.0.2.1"); 256];
    assert!(encode(&adv, src, dst, ChecksumMode::PseudoHeader).is_err(), "count");
    adv = Advertisement {
        version: Version::V3,
        vrid: vrid(1),
        priority: 100,
        interval_cs: 4096,
        addresses: vec![ip("192.0.2.1")],
        auth: Auth::None,
    };
    assert!(encode(&adv, src, dst, ChecksumMode::PseudoHeader).is_err(), "12 bits");
}

fn advert() -> impl Strategy<Value = (Advertisement, IpAddr, IpAddr, ChecksumMode)> {
    (
        any::<bool>(),
        any::<bool>(),
        1u8..=255,
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(any::<u128>(), 0..20),
        any::<[u8; 8]>(),
        any::<bool>(),
        any::<u128>(),
    )
        .prop_map(|(v3, ipv6, id, priority, interval, raw, password, as_v2, src)| {
            let ipv6 = v3 && ipv6;
            let addr = |r: u128| if ipv6 { IpAddr::from(r.to_be_bytes()) } else { IpAddr::from((r as u32).to_be_bytes()) };
            let version = if v3 { Version::V3 } else { Version::V2 };
            let interval_cs = if v3 { interval } else { (interval % 255 + 1) * 100 };
            let auth = if !v3 && password[0] % 2 == 0 { Auth::Pass(password) } else { Auth::None };
            let dst = if ipv6 { IpAddr::from(halo_vrrp::packet::MULTICAST_V6) } else { IpAddr::from(halo_vrrp::packet::MULTICAST_V4) };
            let mode = if as_v2 { ChecksumMode::AsV2 } else { ChecksumMode::PseudoHeader };
            let adv = Advertisement {
                version,
                vrid: vrid(i64::from(id)),
                priority,
                interval_cs,
                addresses: raw.into_iter().map(addr).collect(),
                auth,
            };
            (adv, addr(src), dst, mode)
        })
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity((adv, src, dst, mode) in advert()) {
        let bytes = encode(&adv, src, dst, mode).expect("encodes");
        prop_assert_eq!(decode(&bytes, src, dst, mode), Ok(adv));
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), v6 in any::<bool>()) {
        let (src, dst) = if v6 { (ip("fe80::1"), ip("ff02::12")) } else { (ip("10.0.0.1"), ip("224.0.0.18")) };
        let _outcome = decode(&bytes, src, dst, ChecksumMode::PseudoHeader);
    }
}
