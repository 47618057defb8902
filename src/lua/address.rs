//! Host/port arguments of the Lua API: `"unix:/path"`, numeric IPv4/IPv6, `"host:port"`
//! strings, and host names.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::engine::address::parse_numeric;
use crate::engine::resolver::system_resolve;
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
/// numeric addresses never reach the resolver).
pub fn resolve_one(host: &str, port: u16) -> Result<Addr, String> {
    if let Some(path) = unix_path(host) {
        return Ok(Addr::Unix(path));
    }
    if let Some(a) = parse_numeric(host, port) {
        return Ok(Addr::Inet(a));
    }
    let ips = system_resolve(host).map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    Ok(Addr::Inet(SocketAddr::new(ips[0], port)))
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
}
