//! Host/port arguments of the Lua API: `"unix:/path"`, numeric IPv4/IPv6, `"host:port"`
//! strings, and host names.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::engine::address::parse_numeric;
use crate::sys::net::Addr;

/// Split `"host:port"` / `"[v6]:port"`; `None` when there is no port part.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        return Some((h.to_string(), p.parse().ok()?));
    }
    let (h, p) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None; // a bare IPv6 address
    }
    Some((h.to_string(), p.parse().ok()?))
}

pub fn unix_path(host: &str) -> Option<PathBuf> {
    host.strip_prefix("unix:").map(PathBuf::from)
}

/// Resolve a host for `listen`/`udp` (setup calls, so a blocking lookup is acceptable;
/// numeric addresses never reach `lookup`, the engine's resolver).
pub fn resolve_one(
    host: &str,
    port: u16,
    lookup: impl FnOnce(&str) -> std::io::Result<Vec<std::net::IpAddr>>,
) -> Result<Addr, String> {
    if let Some(path) = unix_path(host) {
        return Ok(Addr::Unix(path));
    }
    if let Some(a) = parse_numeric(host, port) {
        return Ok(Addr::Inet(a));
    }
    let ips = lookup(host).map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    let ip = ips
        .first()
        .ok_or_else(|| format!("cannot resolve '{host}': no addresses"))?;
    Ok(Addr::Inet(SocketAddr::new(*ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_strings() {
        assert_eq!(
            split_host_port("127.0.0.1:80"),
            Some(("127.0.0.1".into(), 80))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("localhost"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[test]
    fn names_go_to_the_given_lookup_and_numbers_do_not() {
        let fake = |h: &str| -> std::io::Result<Vec<std::net::IpAddr>> {
            assert_eq!(h, "db.test");
            Ok(vec!["10.1.2.3".parse().unwrap()])
        };
        let a = resolve_one("db.test", 5, fake).unwrap();
        assert_eq!(a.to_string(), "10.1.2.3:5");
        let never = |_: &str| -> std::io::Result<Vec<std::net::IpAddr>> { panic!("looked up") };
        assert_eq!(resolve_one("::1", 7, never).unwrap().to_string(), "[::1]:7");
        let none = |_: &str| Ok(Vec::new());
        assert!(resolve_one("empty.test", 1, none).is_err());
    }
}
