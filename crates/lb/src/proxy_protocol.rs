//! The PROXY protocol header (versions 1 and 2) halo sends to a server before the client's
//! bytes when the backend asks for it (`send_proxy`), so that the server sees the client.

use std::net::SocketAddr;

use halo_config::ProxyProtocol;

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `client` accepted on `local` (the address the client
/// reached). A connection whose addresses are unknown or of two families is sent as
/// `UNKNOWN` (v1) or `LOCAL` (v2), which servers accept without client information.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: Option<SocketAddr>) -> Vec<u8> {
    let pair = local.filter(|l| l.is_ipv4() == client.is_ipv4()).map(|l| (normalise(client), normalise(l)));
    match version {
        ProxyProtocol::V1 => v1(pair).into_bytes(),
        ProxyProtocol::V2 => v2(pair),
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is written as IPv4.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn v1(pair: Option<(SocketAddr, SocketAddr)>) -> String {
    match pair {
        Some((client, local)) if client.is_ipv4() == local.is_ipv4() => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {} {} {} {}\r\n", client.ip(), local.ip(), client.port(), local.port())
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    }
}

fn v2(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match pair {
        Some((SocketAddr::V4(client), SocketAddr::V4(local))) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]); // PROXY command, TCP over IPv4, 12 bytes
            out.extend_from_slice(&client.ip().octets());
            out.extend_from_slice(&local.ip().octets());
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
        }
        Some((SocketAddr::V6(client), SocketAddr::V6(local))) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]); // PROXY command, TCP over IPv6, 36 bytes
            out.extend_from_slice(&client.ip().octets());
            out.extend_from_slice(&local.ip().octets());
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
        }
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]), // LOCAL command, no address
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn v1_names_the_family_and_both_ends() {
        let h = header(ProxyProtocol::V1, addr("10.0.0.9:40000"), Some(addr("10.0.0.10:8443")));
        assert_eq!(h, b"PROXY TCP4 10.0.0.9 10.0.0.10 40000 8443\r\n");
        let h = header(ProxyProtocol::V1, addr("[fd00::9]:40000"), Some(addr("[fd00::10]:8443")));
        assert_eq!(h, b"PROXY TCP6 fd00::9 fd00::10 40000 8443\r\n");
        let h = header(ProxyProtocol::V1, addr("[::ffff:10.0.0.9]:40000"), Some(addr("[::ffff:10.0.0.10]:8443")));
        assert_eq!(h, b"PROXY TCP4 10.0.0.9 10.0.0.10 40000 8443\r\n");
        assert_eq!(header(ProxyProtocol::V1, addr("10.0.0.9:1"), None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_is_the_signature_then_the_binary_addresses() {
        let h = header(ProxyProtocol::V2, addr("10.0.0.9:40000"), Some(addr("10.0.0.10:8443")));
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[10, 0, 0, 9]);
        assert_eq!(&h[20..24], &[10, 0, 0, 10]);
        assert_eq!(&h[24..28], &[0x9c, 0x40, 0x20, 0xfb]);
        assert_eq!(h.len(), 28);
        let h = header(ProxyProtocol::V2, addr("[fd00::9]:1"), Some(addr("[fd00::10]:2")));
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(header(ProxyProtocol::V2, addr("10.0.0.9:1"), None)[12..], [0x20, 0, 0, 0]);
    }
}
