//! Fuzz target: VRRP decode never panics, for every family and checksum mode, and whatever it
//! accepts re-encodes to bytes that decode to the same advert.
#![no_main]

use std::net::IpAddr;

use halo_vrrp::ChecksumMode;
use halo_vrrp::packet::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let (src, dst): (IpAddr, IpAddr) = if selector & 1 == 0 {
        ([192, 0, 2, 11].into(), [224, 0, 0, 18].into())
    } else {
        ("fe80::1".parse().expect("v6"), "ff02::12".parse().expect("v6"))
    };
    let mode = if selector & 2 == 0 { ChecksumMode::PseudoHeader } else { ChecksumMode::AsV2 };
    if let Ok(advert) = decode(bytes, src, dst, mode) {
        let again = encode(&advert, src, dst, mode).expect("a decoded advert encodes");
        assert_eq!(decode(&again, src, dst, mode), Ok(advert));
    }
});
