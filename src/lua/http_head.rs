//! `http_request_head(head [, max_headers])`: an HTTP/1.x request head parsed by the
//! `httparse` crate (the field's standard parser, used by hyper), for
//! `skysocket.http`'s server. Measured against the Lua patterns it replaced: the same
//! cost for a minimal 36-byte head, 2.5–3× faster for a 15-header browser head
//! (BENCHMARKS.md).

use mlua::{Lua, Table, Value};

use super::args::{nil_msg, ret, Args, Fail, Ret};
use super::state::State;

/// Header lines accepted when the caller gives no limit (the server's default).
const DEFAULT_MAX_HEADERS: i64 = 100;
/// The most header lines any call may allow (the parser's slots live on the heap).
const MAX_HEADERS_CAP: i64 = 10_000;
/// Parser slots kept on the stack (32 bytes each).
const STACK_SLOTS: usize = 128;

/// `http_request_head(head [, max_headers])` → `method, target, version, headers`, or
/// `nil, why` where `why` is `"bad request"`, `"bad version"` or `"too many headers"`.
/// `head` is the request head without its final blank line (as `readline(id,
/// "\r\n\r\n")` returns it); empty lines before the request line are skipped.
/// `version` is `"1.0"` or `"1.1"`; `headers` maps lower-cased names to values with
/// surrounding blanks removed, a repeated header's values joined with `", "`.
pub fn http_request_head(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let max_headers = a.opt_integer(2, DEFAULT_MAX_HEADERS)?;
    if !(0..=MAX_HEADERS_CAP).contains(&max_headers) {
        return Err(a.error(2, format!("max_headers must be in 0..{MAX_HEADERS_CAP}")));
    }
    // httparse wants the whole head, blank line included: one allocation of the
    // right size (a string argument is borrowed, not copied twice).
    let buf = match a.get(1) {
        Value::String(s) => {
            let head = s.as_bytes();
            let mut buf = Vec::with_capacity(head.len() + 4);
            buf.extend_from_slice(&head);
            buf.extend_from_slice(b"\r\n\r\n");
            buf
        }
        _ => {
            let mut buf = a.bytes(1)?;
            buf.extend_from_slice(b"\r\n\r\n");
            buf
        }
    };
    // One slot more than allowed: a full array means "too many". Small limits (the
    // usual case) use slots on the stack.
    let wanted = max_headers as usize + 1;
    let mut stack = [httparse::EMPTY_HEADER; STACK_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [httparse::Header<'_>] = if wanted <= STACK_SLOTS {
        &mut stack[..wanted]
    } else {
        heap.resize(wanted, httparse::EMPTY_HEADER);
        &mut heap
    };
    let mut req = httparse::Request::new(slots);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        // The head ended early (e.g. CRLFCRLF inside it cannot happen; a bare LF
        // sequence can): treat as malformed.
        Ok(httparse::Status::Partial) => return nil_msg(lua, "bad request"),
        Err(httparse::Error::Version) => return nil_msg(lua, "bad version"),
        Err(httparse::Error::TooManyHeaders) => return nil_msg(lua, "too many headers"),
        Err(_) => return nil_msg(lua, "bad request"),
    }
    if req.headers.len() > max_headers as usize {
        return nil_msg(lua, "too many headers");
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return nil_msg(lua, "bad request");
    };
    let version = if minor == 1 { "1.1" } else { "1.0" };
    let headers = header_table(lua, req.headers)?;
    ret(lua, (method, target, version, headers))
}

/// Heads with more header lines than this find repeated names by table look-ups
/// (linear), fewer by comparing names here (quadratic, but no Lua call per header).
const SCAN_HEADERS: usize = 24;

/// The headers as a table of lower-cased names, a repeated name's values joined with
/// `", "` in order.
fn header_table(lua: &Lua, headers: &[httparse::Header<'_>]) -> Result<Table, Fail> {
    if headers.len() > SCAN_HEADERS {
        return header_table_lookup(lua, headers);
    }
    // The usual head: names (tokens, ASCII) and values as Rust strings, the table made
    // in one call (mlua pushes `String`s straight onto the Lua stack and sets them
    // without a protected call per entry). A value that is not UTF-8 (obs-text) takes
    // the byte-string path.
    let mut entries: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        if (0..i).any(|j| headers[j].name.eq_ignore_ascii_case(h.name)) {
            continue; // joined into the first header of that name
        }
        let Some(first) = utf8(h.value) else {
            return header_table_bytes(lua, headers);
        };
        let mut value = first.to_owned();
        for o in headers[i + 1..]
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(h.name))
        {
            let Some(more) = utf8(o.value) else {
                return header_table_bytes(lua, headers);
            };
            value.push_str(", ");
            value.push_str(more);
        }
        entries.push((h.name.to_ascii_lowercase(), value));
    }
    Ok(lua.create_table_from(entries)?)
}

/// `header_table` for a small head with a value that is not UTF-8.
fn header_table_bytes(lua: &Lua, headers: &[httparse::Header<'_>]) -> Result<Table, Fail> {
    let t = lua.create_table_with_capacity(0, headers.len())?;
    let mut name = Vec::with_capacity(32);
    for (i, h) in headers.iter().enumerate() {
        let earlier = |j: usize| headers[j].name.eq_ignore_ascii_case(h.name);
        if (0..i).any(earlier) {
            continue; // joined into the first header of that name
        }
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        let key = lua.create_string(&name)?;
        let value = trim_blanks(h.value);
        let mut later = headers[i + 1..]
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(h.name));
        match later.next() {
            None => t.raw_set(key, lua.create_string(value)?)?,
            Some(next) => {
                let mut joined = value.to_vec();
                for o in std::iter::once(next).chain(later) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(trim_blanks(o.value));
                }
                t.raw_set(key, lua.create_string(&joined)?)?;
            }
        }
    }
    Ok(t)
}

/// `header_table` for many header lines: a repeated name is found in the table.
fn header_table_lookup(lua: &Lua, headers: &[httparse::Header<'_>]) -> Result<Table, Fail> {
    let t = lua.create_table_with_capacity(0, headers.len())?;
    let mut name = Vec::with_capacity(32);
    for h in headers {
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        let key = lua.create_string(&name)?;
        let value = trim_blanks(h.value);
        match t.raw_get::<Option<mlua::LuaString>>(&key)? {
            None => t.raw_set(key, lua.create_string(value)?)?,
            Some(old) => {
                let mut joined = old.as_bytes().to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value);
                t.raw_set(key, lua.create_string(&joined)?)?;
            }
        }
    }
    Ok(t)
}

/// The value without surrounding blanks, if it is UTF-8.
fn utf8(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(trim_blanks(v)).ok()
}

/// The value without leading or trailing spaces and tabs (RFC 9110 5.5: OWS is not
/// part of the value).
fn trim_blanks(v: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !blank(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::trim_blanks;

    #[test]
    fn trims_spaces_and_tabs_only() {
        assert_eq!(trim_blanks(b"  a b\t "), b"a b");
        assert_eq!(trim_blanks(b" \t "), b"");
        assert_eq!(trim_blanks(b""), b"");
        assert_eq!(trim_blanks(b"x"), b"x");
    }
}
