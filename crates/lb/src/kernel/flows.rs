//! The layouts shared with the verdict program (bpf/forward.c): the key a socket is found by
//! (the address pair of its partner, as the partner sees it) and the state of one direction.
#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

/// `struct flow_key`: a socket's own address pair, ports in host order, addresses as the
/// kernel keeps them (network order), IPv4 in the first word.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    family: u32,
    local_port: u32,
    remote_port: u32,
    local_ip: [u32; 4],
    remote_ip: [u32; 4],
}

// SAFETY: plain integers, no padding (44 bytes of u32s), any bit pattern valid.
unsafe impl aya::Pod for FlowKey {}

/// `struct flow_state`: bytes the program sent to the partner, whether the direction is held
/// for user space, and the bytes it left with the socket for user space.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FlowState {
    pub(crate) redirected: u64,
    pub(crate) held: u32,
    reserved: u32,
    pub(crate) passed: u64,
}

// SAFETY: plain integers laid out without padding (8 + 4 + 4 + 8 bytes).
unsafe impl aya::Pod for FlowState {}

const AF_INET: u32 = libc::AF_INET as u32;
const AF_INET6: u32 = libc::AF_INET6 as u32;

impl FlowKey {
    /// The key of a socket bound at `local` and connected to `remote`.
    pub(crate) fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        Self {
            family,
            local_port: u32::from(local.port()),
            remote_port: u32::from(remote.port()),
            local_ip: words(local.ip()),
            remote_ip: words(remote.ip()),
        }
    }

    /// The key as the verdict program writes it to the ring (44 bytes).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| bytes.get(i * 4..i * 4 + 4).and_then(|w| w.try_into().ok()).map(u32::from_ne_bytes);
        let mut key = Self { family: word(0)?, local_port: word(1)?, remote_port: word(2)?, ..Self::default() };
        for i in 0..4 {
            key.local_ip[i] = word(3 + i)?;
            key.remote_ip[i] = word(7 + i)?;
        }
        Some(key)
    }
}

/// An address as four words the way the kernel stores it (the bytes in network order).
fn words(ip: IpAddr) -> [u32; 4] {
    let mut out = [0u32; 4];
    match ip {
        IpAddr::V4(v4) => out[0] = u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(v6) => {
            for (word, chunk) in out.iter_mut().zip(v6.octets().chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_the_ring_and_keeps_its_address_bytes_in_order() {
        let key = FlowKey::new("10.0.0.1:6443".parse().expect("address"), "[::ffff:1.2.3.4]:5".parse::<SocketAddr>().expect("address"));
        let bytes: Vec<u8> = [key.family, key.local_port, key.remote_port]
            .into_iter()
            .chain(key.local_ip)
            .chain(key.remote_ip)
            .flat_map(u32::to_ne_bytes)
            .collect();
        assert_eq!(bytes.len(), 44);
        assert_eq!(&bytes[12..16], &[10, 0, 0, 1], "the IPv4 address in network order");
        assert_eq!(FlowKey::from_bytes(&bytes), Some(key));
        assert_eq!(FlowKey::from_bytes(&bytes[..43]), None);
        assert_eq!(std::mem::size_of::<FlowKey>(), 44);
        assert_eq!(std::mem::size_of::<FlowState>(), 24);
    }
}
