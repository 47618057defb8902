//! Just enough DER reading to name a peer: the subject and the subject alternative
//! names of an X.509 certificate. Input is untrusted: every read is bounds-checked and
//! a malformed certificate gives `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One DER element: `(tag, content, rest after it)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None; // indefinite or absurd lengths are not DER
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

/// The content of the next element, which must carry `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => dotted(oid),
    }
}

/// An OID in dotted form (for attributes without a short name).
fn dotted(oid: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first.to_string());
                parts.push((value - first * 40).to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        } else if i > 16 {
            break;
        }
    }
    parts.join(".")
}

/// A directory string as text: UTF-8 and the ASCII types as they are, BMPString decoded,
/// anything else in hex.
fn string_value(tag: u8, v: &[u8]) -> String {
    match tag {
        0x0c | 0x13 | 0x14 | 0x16 | 0x1a => String::from_utf8_lossy(v).into_owned(),
        0x1e => {
            let units: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// A Name as `CN=host, O=org` (attributes in certificate order).
fn name_text(mut rdns: &[u8]) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, 0x31)?;
        rdns = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, rest) = expect(atvs, 0x30)?;
            atvs = rest;
            let (oid, value) = expect(atv, 0x06)?;
            let (tag, v, _) = tlv(value)?;
            out.push(format!("{}={}", attribute_name(oid), string_value(tag, v)));
        }
    }
    Some(out.join(", "))
}

fn san_entries(value: &[u8], out: &mut Vec<String>) -> Option<()> {
    let (mut names, _) = expect(value, 0x30)?;
    while !names.is_empty() {
        let (tag, v, rest) = tlv(names)?;
        names = rest;
        match tag {
            0x81 => out.push(format!("email:{}", String::from_utf8_lossy(v))),
            0x82 => out.push(format!("DNS:{}", String::from_utf8_lossy(v))),
            0x86 => out.push(format!("URI:{}", String::from_utf8_lossy(v))),
            0x87 => {
                let ip = match v.len() {
                    4 => IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(v);
                        IpAddr::V6(Ipv6Addr::from(b))
                    }
                    _ => continue,
                };
                out.push(format!("IP:{ip}"));
            }
            _ => {}
        }
    }
    Some(())
}

/// The subject (`CN=..., O=...`) and the subject alternative names (`DNS:name`,
/// `IP:addr`, `email:...`, `URI:...`) of a DER certificate; `None` if it is malformed.
pub fn subject_and_sans(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (cert, _) = expect(der, 0x30)?;
    let (tbs, _) = expect(cert, 0x30)?;
    let mut p = tbs;
    if p.first() == Some(&0xa0) {
        p = tlv(p)?.2; // version
    }
    p = expect(p, 0x02)?.1; // serial number
    p = expect(p, 0x30)?.1; // signature algorithm
    p = expect(p, 0x30)?.1; // issuer
    p = expect(p, 0x30)?.1; // validity
    let (subject, rest) = expect(p, 0x30)?;
    p = expect(rest, 0x30)?.1; // subject public key info
    let subject = name_text(subject)?;
    let mut sans = Vec::new();
    while !p.is_empty() {
        let (tag, content, rest) = tlv(p)?;
        p = rest;
        if tag != 0xa3 {
            continue; // issuer/subject unique ids
        }
        let (mut exts, _) = expect(content, 0x30)?;
        while !exts.is_empty() {
            let (ext, rest) = expect(exts, 0x30)?;
            exts = rest;
            let (oid, mut e) = expect(ext, 0x06)?;
            if e.first() == Some(&0x01) {
                e = tlv(e)?.2; // critical
            }
            let (value, _) = expect(e, 0x04)?;
            if oid == [0x55, 0x1d, 0x11] {
                san_entries(value, &mut sans)?;
            }
        }
    }
    Some((subject, sans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_gives_none() {
        assert!(subject_and_sans(b"").is_none());
        assert!(subject_and_sans(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(subject_and_sans(&[0x30, 0x03, 0x30, 0x01]).is_none());
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
            let _ = subject_and_sans(&junk);
        }
    }

    #[test]
    fn dotted_oid() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
