//! RESP2/RESP3 replies (Redis's protocol), read from a byte buffer: the core of
//! `resp_parse` / `resp_parse_many` (the Lua values are built by the raw closures in
//! `fast/resp.rs`; this file has no Lua and no `unsafe`).
//!
//! A reply is read in two passes: `skip` walks one whole reply and says where it ends,
//! that more bytes are needed, or why it is malformed; only a complete, well-formed
//! reply is then turned into Lua values, element by element with `item`. So nothing is
//! allocated for a reply that has not fully arrived, and nothing is allocated from a
//! length header alone: an aggregate's element count is believed only once that many
//! elements (each at least 3 bytes) were found in the buffer.
//!
//! Hostile input is bounded: nesting deeper than `MAX_DEPTH` (attributes count), a bulk
//! length above `MAX_BULK`, an element count above `MAX_COUNT`, a length or count that
//! is not a plain decimal, a negative length other than -1 (null), a header or status
//! line longer than `MAX_LINE` and an unknown type byte are errors, never a wait.

/// The deepest nesting of aggregates accepted (attributes included).
pub const MAX_DEPTH: usize = 64;
/// The longest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: i64 = 512 << 20;
/// The most elements (or map pairs) one aggregate may announce.
pub const MAX_COUNT: i64 = i32::MAX as i64 / 2;
/// The longest line (type byte to CR) searched for its CRLF before giving up.
pub const MAX_LINE: usize = 1 << 20;

/// One element's header, with what it carries (positions are 0-based offsets into
/// the buffer; `end` is exclusive).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item {
    /// `$` bulk, `+` status, `(` big number, `=` verbatim (its `xxx:` format prefix
    /// removed): a string.
    Str { start: usize, end: usize },
    /// `-` error or `!` blob error: the text.
    Err { start: usize, end: usize },
    /// `:` integer.
    Int(i64),
    /// `,` double (also `:` integers beyond 64 bits).
    Double(f64),
    /// `#t` / `#f`.
    Bool(bool),
    /// `_`, `$-1`, `*-1` (and `~-1`, `>-1`, `%-1`).
    Null,
    /// `*` array, `~` set: n elements follow.
    Array(usize),
    /// `>` push: n elements follow.
    Push(usize),
    /// `%` map: n key/value pairs follow.
    Map(usize),
    /// `|` attribute: n key/value pairs follow, then the element they describe.
    Attr(usize),
}

/// What went wrong, with the span of the offending line (0-based, exclusive end) for
/// the message. Copy, with no heap data: the raw closures keep it across Lua calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// A length or count that is not a decimal integer in range (`bad length in reply: $x`).
    Length { start: usize, end: usize },
    /// A double that does not parse (`bad double in reply: x`).
    Double { start: usize, end: usize },
    /// A type byte RESP does not have (`unknown reply type 'x'`).
    Type(u8),
    /// A line without CRLF within `MAX_LINE` bytes.
    LongLine,
    /// A bulk string without its CRLF after the announced length.
    BulkEnd { at: usize },
    /// Aggregates nested deeper than `MAX_DEPTH`.
    Deep,
}

impl Bad {
    /// The error's text (the messages of the Lua parser this replaced, where it had one).
    pub fn message(&self, buf: &[u8]) -> String {
        let span = |s: usize, e: usize| {
            String::from_utf8_lossy(buf.get(s..e.min(buf.len())).unwrap_or(b"")).into_owned()
        };
        match *self {
            Bad::Length { start, end } => format!("bad length in reply: {}", span(start, end)),
            Bad::Double { start, end } => format!("bad double in reply: {}", span(start, end)),
            Bad::Type(t) if t.is_ascii_graphic() => format!("unknown reply type '{}'", t as char),
            Bad::Type(t) => format!("unknown reply type '\\x{t:02x}'"),
            Bad::LongLine => format!("reply line longer than {MAX_LINE} bytes"),
            Bad::BulkEnd { at } => format!("bulk string not followed by CRLF at byte {}", at + 1),
            Bad::Deep => format!("reply nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// One step: a complete header (or a complete reply for `skip`) ending at `next`, or
/// the buffer must grow to at least `need` bytes first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step<T> {
    Done(T, usize),
    Need(usize),
}

/// The end of the line starting at `pos` (the index of its CR), if its CRLF has arrived.
fn line_end(buf: &[u8], pos: usize) -> Result<Step<usize>, Bad> {
    let rest = buf.get(pos..).unwrap_or(b"");
    // The CR may be at index MAX_LINE at the latest.
    let limit = rest.len().min(MAX_LINE + 1);
    let mut from = 0;
    while let Some(i) = rest[from..limit].iter().position(|&b| b == b'\r') {
        let cr = from + i;
        match rest.get(cr + 1) {
            Some(b'\n') => return Ok(Step::Done(pos + cr, pos + cr + 2)),
            Some(_) => from = cr + 1,
            None => return Ok(Step::Need(pos + cr + 2)),
        }
    }
    if rest.len() > MAX_LINE {
        return Err(Bad::LongLine);
    }
    Ok(Step::Need(buf.len() + 1))
}

/// A plain decimal integer (optional `-`, 1 to 19 digits), as in length headers.
fn decimal(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Accumulated on the side of the sign, so i64::MIN parses too.
    let mut v: i64 = 0;
    for &d in digits {
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// A length or count in `-1..=max` (-1: null), or `Bad::Length` for the line.
fn count(buf: &[u8], pos: usize, cr: usize, max: i64) -> Result<Option<usize>, Bad> {
    let bad = Bad::Length {
        start: pos,
        end: cr,
    };
    match decimal(buf.get(pos + 1..cr).unwrap_or(b"")) {
        Some(-1) => Ok(None),
        Some(n) if (0..=max).contains(&n) => Ok(Some(n as usize)),
        _ => Err(bad),
    }
}

/// The number after the type byte at `pos` when it is the plain, common form (up to
/// 18 digits, an optional `-`, then CRLF), with where its line ends; `None` sends the
/// caller to the general path (which also makes the error messages).
#[inline]
fn quick_number(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let mut i = pos + 1;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while let Some(&d) = buf.get(i) {
        if !d.is_ascii_digit() || i - start >= 18 {
            break;
        }
        v = v * 10 + (d - b'0') as i64;
        i += 1;
    }
    if i == start || buf.get(i) != Some(&b'\r') || buf.get(i + 1) != Some(&b'\n') {
        return None;
    }
    Some((if neg { -v } else { v }, i + 2))
}

/// A bulk-like element (`$`, `=`, `!`) of `n` bytes whose header ends at `next`.
fn bulk(buf: &[u8], t: u8, next: usize, n: usize) -> Result<Step<Item>, Bad> {
    let end = next + n;
    if buf.len() < end + 2 {
        return Ok(Step::Need(end + 2));
    }
    if buf[end..end + 2] != *b"\r\n" {
        return Err(Bad::BulkEnd { at: end });
    }
    let v = match t {
        b'$' => Item::Str { start: next, end },
        // "txt:" / "mkd:" prefix
        b'=' => Item::Str {
            start: (next + 4).min(end),
            end,
        },
        _ => Item::Err { start: next, end },
    };
    Ok(Step::Done(v, end + 2))
}

/// The header of the element at `pos` (a whole bulk string, with its data).
pub fn item(buf: &[u8], pos: usize) -> Result<Step<Item>, Bad> {
    let Some(&t) = buf.get(pos) else {
        return Ok(Step::Need(pos + 1));
    };
    // The usual shapes first: a bulk string, an array, an integer.
    if matches!(t, b'$' | b'*' | b':') {
        if let Some((n, next)) = quick_number(buf, pos) {
            match t {
                b'$' if (0..=MAX_BULK).contains(&n) => return bulk(buf, t, next, n as usize),
                b'*' if (0..=MAX_COUNT).contains(&n) => {
                    return Ok(Step::Done(Item::Array(n as usize), next))
                }
                b':' => return Ok(Step::Done(Item::Int(n), next)),
                _ => {}
            }
        }
    }
    let (cr, next) = match line_end(buf, pos)? {
        Step::Done(cr, next) => (cr, next),
        Step::Need(n) => return Ok(Step::Need(n)),
    };
    let line = || pos + 1..cr;
    let agg = |f: fn(usize) -> Item| -> Result<Step<Item>, Bad> {
        Ok(Step::Done(
            match count(buf, pos, cr, MAX_COUNT)? {
                Some(n) => f(n),
                None => Item::Null,
            },
            next,
        ))
    };
    match t {
        b'$' | b'=' | b'!' => match count(buf, pos, cr, MAX_BULK)? {
            Some(n) => bulk(buf, t, next, n),
            None => Ok(Step::Done(Item::Null, next)),
        },
        b'+' | b'(' => Ok(Step::Done(
            Item::Str {
                start: pos + 1,
                end: cr,
            },
            next,
        )),
        b'-' => Ok(Step::Done(
            Item::Err {
                start: pos + 1,
                end: cr,
            },
            next,
        )),
        b':' => {
            let text = &buf[line()];
            if let Some(v) = decimal(text) {
                return Ok(Step::Done(Item::Int(v), next));
            }
            // Beyond 64 bits: a double, as Lua's tonumber would make it.
            match std::str::from_utf8(text)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
            {
                Some(v)
                    if !text.is_empty()
                        && text.iter().all(|b| b.is_ascii_digit() || *b == b'-') =>
                {
                    Ok(Step::Done(Item::Double(v), next))
                }
                _ => Err(Bad::Length {
                    start: pos,
                    end: cr,
                }),
            }
        }
        b',' => {
            let text = &buf[line()];
            let v = match text {
                b"inf" | b"+inf" => Some(f64::INFINITY),
                b"-inf" => Some(f64::NEG_INFINITY),
                b"nan" | b"-nan" => Some(f64::NAN),
                _ if text
                    .iter()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(b)) =>
                {
                    std::str::from_utf8(text)
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok())
                }
                _ => None,
            };
            match v {
                Some(v) => Ok(Step::Done(Item::Double(v), next)),
                None => Err(Bad::Double {
                    start: pos + 1,
                    end: cr,
                }),
            }
        }
        b'#' => Ok(Step::Done(
            Item::Bool(buf.get(pos + 1) == Some(&b't')),
            next,
        )),
        b'_' => Ok(Step::Done(Item::Null, next)),
        b'*' | b'~' => agg(Item::Array),
        b'>' => agg(Item::Push),
        b'%' => agg(Item::Map),
        b'|' => agg(Item::Attr),
        other => Err(Bad::Type(other)),
    }
}

/// Walk the whole reply at `pos` (`depth`: the aggregates around it): where it ends,
/// or the buffer length it needs first.
pub fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<Step<()>, Bad> {
    let (head, mut next) = match item(buf, pos)? {
        Step::Done(h, n) => (h, n),
        Step::Need(n) => return Ok(Step::Need(n)),
    };
    let elements = match head {
        Item::Array(n) | Item::Push(n) => n,
        Item::Map(n) => n * 2,
        Item::Attr(n) => n * 2 + 1, // the described element follows the attribute
        _ => return Ok(Step::Done((), next)),
    };
    if depth >= MAX_DEPTH {
        return Err(Bad::Deep);
    }
    for _ in 0..elements {
        match skip(buf, next, depth + 1)? {
            Step::Done((), n) => next = n,
            Step::Need(n) => return Ok(Step::Need(n)),
        }
    }
    Ok(Step::Done((), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> Result<Step<()>, Bad> {
        skip(buf, 0, 0)
    }

    #[test]
    fn every_type_is_complete_only_when_whole() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":-42\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"%1\r\n+k\r\n*1\r\n_\r\n",
            b"~1\r\n#t\r\n",
            b">2\r\n+message\r\n+x\r\n",
            b",1.5\r\n",
            b",inf\r\n",
            b"(12345678901234567890123\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"!3\r\nbad\r\n",
            b"|1\r\n+a\r\n+b\r\n:7\r\n",
            b":123456789012345678901234\r\n",
        ];
        for r in replies {
            assert_eq!(
                whole(r),
                Ok(Step::Done((), r.len())),
                "{:?}",
                String::from_utf8_lossy(r)
            );
            for cut in 0..r.len() {
                match whole(&r[..cut]) {
                    Ok(Step::Need(n)) => assert!(n > cut && n <= r.len(), "need {n} at cut {cut}"),
                    other => panic!("cut {cut} of {:?}: {other:?}", String::from_utf8_lossy(r)),
                }
            }
        }
    }

    #[test]
    fn items_carry_their_values() {
        assert_eq!(
            item(b"$3\r\nabc\r\n", 0),
            Ok(Step::Done(Item::Str { start: 4, end: 7 }, 9))
        );
        assert_eq!(
            item(b"=7\r\ntxt:abc\r\n", 0),
            Ok(Step::Done(Item::Str { start: 8, end: 11 }, 13))
        );
        assert_eq!(
            item(b"=2\r\nab\r\n", 0),
            Ok(Step::Done(Item::Str { start: 6, end: 6 }, 8))
        );
        assert_eq!(
            item(b":-9223372036854775808\r\n", 0),
            Ok(Step::Done(Item::Int(i64::MIN), 23))
        );
        assert_eq!(
            item(b":9223372036854775808\r\n", 0),
            Ok(Step::Done(Item::Double(9223372036854775808.0), 22))
        );
        assert_eq!(
            item(b":9223372036854775807\r\n", 0),
            Ok(Step::Done(Item::Int(i64::MAX), 22))
        );
        assert_eq!(item(b"#f\r\n", 0), Ok(Step::Done(Item::Bool(false), 4)));
        assert_eq!(item(b"%-1\r\n", 0), Ok(Step::Done(Item::Null, 5)));
        assert_eq!(item(b"*3\r\n", 0), Ok(Step::Done(Item::Array(3), 4)));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_wait() {
        let bad: &[&[u8]] = &[
            b"$abc\r\n",
            b"$-2\r\n",
            b"$\r\n",
            b"$99999999999999999999\r\n",
            b"$536870913\r\n",
            b"*2147483647\r\n",
            b"*-5\r\n",
            b"* 1\r\n",
            b"$1\r\nabXY",
            b",1.5x\r\n",
            b":12a\r\n",
            b"?\r\n",
            b"\r\n",
        ];
        for b in bad {
            assert!(
                whole(b).is_err(),
                "{:?} -> {:?}",
                String::from_utf8_lossy(b),
                whole(b)
            );
        }
        let mut bomb = b"*1\r\n".repeat(MAX_DEPTH + 1);
        bomb.extend_from_slice(b":1\r\n");
        assert_eq!(whole(&bomb), Err(Bad::Deep));
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert_eq!(whole(&ok), Ok(Step::Done((), ok.len())));
        let mut long = b"+".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        assert_eq!(whole(&long), Err(Bad::LongLine));
        assert_eq!(Bad::Type(b'?').message(b""), "unknown reply type '?'");
        assert_eq!(Bad::Type(0).message(b""), "unknown reply type '\\x00'");
        assert_eq!(
            whole(b"$abc\r\n").unwrap_err().message(b"$abc\r\n"),
            "bad length in reply: $abc"
        );
    }

    #[test]
    fn a_huge_count_waits_without_allocating() {
        // 1,000,000 elements announced, 2 present: a wait, bounded by the buffer.
        assert_eq!(whole(b"*1000000\r\n:1\r\n:2\r\n"), Ok(Step::Need(19)));
        assert_eq!(whole(b"$100000000\r\n"), Ok(Step::Need(100_000_014)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"$*%~>|=!+-:,#_(\r\n0123456789-xt";
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = whole(&buf);
            for p in 0..=buf.len() + 1 {
                let _ = item(&buf, p);
            }
        }
    }
}
