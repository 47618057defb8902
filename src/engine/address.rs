//! Address helpers: numeric host parsing and the compact binary UDP address.
//!
//! The compact form is what `udp` messages carry and `sendto` takes: one family byte
//! (1 = IPv4, 2 = IPv6), the port in big-endian, then the 4 or 16 address bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sys::net::Addr;

const FAMILY_V4: u8 = 1;
const FAMILY_V6: u8 = 2;

/// Encode a socket address into the compact form; `None` for non-IP addresses.
pub fn encode_compact(addr: &Addr, out: &mut Vec<u8>) -> bool {
    match addr {
        Addr::Inet(SocketAddr::V4(a)) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            true
        }
        Addr::Inet(SocketAddr::V6(a)) => {
            // A v4-mapped peer on a dual-stack socket is reported as plain IPv4.
            if let Some(v4) = a.ip().to_ipv4_mapped() {
                out.push(FAMILY_V4);
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&v4.octets());
            } else {
                out.push(FAMILY_V6);
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
            }
            true
        }
        Addr::Unix(_) => false,
    }
}

/// Decode the compact form; `None` when it is malformed.
pub fn decode_compact(b: &[u8]) -> Option<SocketAddr> {
    let (&family, rest) = b.split_first()?;
    if rest.len() < 2 {
        return None;
    }
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    let ip = &rest[2..];
    match (family, ip.len()) {
        (FAMILY_V4, 4) => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            port,
        )),
        (FAMILY_V6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(ip);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Parse a numeric host (`127.0.0.1`, `::1`, `[::1]`) and port. Host names are not
/// resolved here (see the resolver).
pub fn parse_numeric(host: &str, port: u16) -> Option<SocketAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port))
}

/// Text form of an address for messages: `ip:port`, `[v6]:port`, or `unix:path`.
pub fn display(addr: Option<&Addr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trip() {
        for s in ["127.0.0.1:9", "[::1]:65535", "[2001:db8::5]:53"] {
            let a: SocketAddr = s.parse().unwrap();
            let mut v = Vec::new();
            assert!(encode_compact(&Addr::Inet(a), &mut v));
            assert_eq!(decode_compact(&v), Some(a));
        }
        assert_eq!(decode_compact(b""), None);
        assert_eq!(decode_compact(&[1, 0, 1, 127, 0, 0]), None);
        assert_eq!(decode_compact(&[9, 0, 1, 127, 0, 0, 1]), None);
    }

    #[test]
    fn mapped_v4_reports_as_v4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:7".parse().unwrap();
        let mut v = Vec::new();
        encode_compact(&Addr::Inet(a), &mut v);
        assert_eq!(decode_compact(&v), Some("127.0.0.1:7".parse().unwrap()));
    }

    #[test]
    fn numeric_hosts() {
        assert_eq!(parse_numeric("::1", 5), Some("[::1]:5".parse().unwrap()));
        assert_eq!(parse_numeric("[::1]", 5), Some("[::1]:5".parse().unwrap()));
        assert_eq!(
            parse_numeric("10.0.0.1", 5),
            Some("10.0.0.1:5".parse().unwrap())
        );
        assert_eq!(parse_numeric("localhost", 5), None);
    }
}
