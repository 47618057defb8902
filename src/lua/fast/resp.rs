//! `resp_parse`, `resp_parse_many` and `resp_encode` as raw C closures: Redis replies
//! (RESP2/RESP3) turned into Lua values straight on the stack, and pipelines of
//! commands encoded, for `skysocket.redis` (issue 17). One C call per reply, or per
//! batch of pipelined replies, replaces several Lua string calls per element.
//!
//! The bytes are walked by the safe core (`crate::lua::resp`). A scalar reply (the
//! usual one) is read with one `item` step; an aggregate is first walked whole by
//! `skip` (complete? well-formed? under `catch_unwind`, nothing pushed yet), then
//! `build` pushes its values. Core steps run under `catch_unwind`; the Lua API calls
//! that can raise (a memory error, a stack overflow) run outside it, and every frame
//! they can unwind through holds plain `Copy` data: no destructor is skipped.
//! Array/map sizes given to `lua_createtable` are counts the walk already found in
//! the buffer, so they are bounded by its length. `resp_encode` reads the commands
//! with raw, non-raising calls only while its buffer is alive (see `encode_all`).

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, Function, Lua};

use super::{arg_error, arg_typename, c_closure, check_integer, raise_panic};
use crate::lua::resp::{self, Bad, Item, Step};
use crate::lua::state::State;

/// The highest array index either function writes (lua_rawseti's limit on Lua 5.1).
const MAX_INDEX: i64 = i32::MAX as i64;

/// Argument `i` as the bytes of a string (numbers are refused: no conversion in place).
///
/// # Safety
///
/// `l` is a valid state inside a C function call; the slice lives as long as the
/// argument stays on the stack (the whole call).
unsafe fn check_bytes<'a>(l: *mut ffi::lua_State, i: c_int) -> &'a [u8] {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        if ffi::lua_type(l, i) != ffi::LUA_TSTRING {
            let got = arg_typename(l, i);
            let msg = ffi::lua_pushfstring(l, c"string expected, got %s".as_ptr(), got);
            arg_error(l, i, msg);
        }
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, i, &mut len);
        // SAFETY: a string argument, on the stack for the whole call.
        std::slice::from_raw_parts(p as *const u8, len)
    }
}

/// Argument `i` as a start position (1-based, >= 1; `1` when absent), made 0-based.
///
/// # Safety
///
/// as `check_bytes`.
unsafe fn check_pos(l: *mut ffi::lua_State, i: c_int, optional: bool) -> usize {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        if optional && ffi::lua_type(l, i) <= ffi::LUA_TNIL {
            return 0;
        }
        let v = check_integer(l, i);
        if v < 1 {
            arg_error(l, i, c"position must be >= 1".as_ptr());
        }
        // A position past any buffer just waits for bytes that cannot come: clamp it
        // so that `need` stays representable.
        (v.min(MAX_INDEX) - 1) as usize
    }
}

/// Push `text` (a Rust-made message) and drop it before anything can raise after.
///
/// # Safety
///
/// `l` is a valid state inside a C function call.
unsafe fn push_bad(l: *mut ffi::lua_State, bad: Bad, buf: &[u8]) {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let text = match catch_unwind(AssertUnwindSafe(|| bad.message(buf))) {
            Ok(text) => text,
            Err(payload) => raise_panic(l, payload),
        };
        // Only a memory error can raise here; `text` would then leak, nothing worse.
        ffi::lua_pushlstring(l, text.as_ptr() as *const c_char, text.len());
        drop(text);
    }
}

/// Raise the error for a step the walk had already accepted (a bug if it happens).
///
/// # Safety
///
/// as `arg_error` (nothing with a destructor alive in the frames it unwinds).
unsafe fn internal(l: *mut ffi::lua_State) -> ! {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        ffi::lua_pushstring(
            l,
            c"skysocket internal error (a bug, please report it): RESP reply changed between walks"
                .as_ptr(),
        );
        ffi::lua_error(l)
    }
}

/// One step of the core, with a panic turned into a Lua error.
///
/// # Safety
///
/// as `internal`.
unsafe fn item(l: *mut ffi::lua_State, buf: &[u8], pos: usize) -> (Item, usize) {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        match catch_unwind(AssertUnwindSafe(|| resp::item(buf, pos))) {
            Ok(Ok(Step::Done(it, next))) => (it, next),
            Ok(_) => internal(l),
            Err(payload) => raise_panic(l, payload),
        }
    }
}

/// Where the (already walked) element at `pos` ends.
///
/// # Safety
///
/// as `internal`.
unsafe fn skip_walked(l: *mut ffi::lua_State, buf: &[u8], pos: usize) -> usize {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        match catch_unwind(AssertUnwindSafe(|| resp::skip(buf, pos, 0))) {
            Ok(Ok(Step::Done((), next))) => next,
            Ok(_) => internal(l),
            Err(payload) => raise_panic(l, payload),
        }
    }
}

/// Push the bytes `start..end` of `buf` as a string.
///
/// # Safety
///
/// as `internal`.
unsafe fn push_span(l: *mut ffi::lua_State, buf: &[u8], start: usize, end: usize) {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        match buf.get(start..end) {
            Some(s) => {
                ffi::lua_pushlstring(l, s.as_ptr() as *const c_char, s.len());
            }
            None => internal(l),
        }
    }
}

/// Push the value of a scalar item; true if it is an error (its text is pushed).
///
/// # Safety
///
/// as `build`.
unsafe fn push_scalar(l: *mut ffi::lua_State, buf: &[u8], it: Item) -> bool {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        match it {
            Item::Str { start, end } => push_span(l, buf, start, end),
            Item::Err { start, end } => {
                push_span(l, buf, start, end);
                return true;
            }
            Item::Int(v) => ffi::lua_pushinteger(l, v as ffi::lua_Integer),
            Item::Double(v) => ffi::lua_pushnumber(l, v as ffi::lua_Number),
            Item::Bool(b) => ffi::lua_pushboolean(l, b as c_int),
            Item::Null => ffi::lua_pushnil(l),
            // aggregates are built by `build`
            _ => internal(l),
        }
        false
    }
}

/// Push the value of the element at `pos` (walked already) as an element of an
/// aggregate: nil becomes false, an error becomes `{ err = text }`.
///
/// # Safety
///
/// as `build`.
unsafe fn build_element(l: *mut ffi::lua_State, buf: &[u8], pos: usize) -> usize {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let (next, is_err) = build(l, buf, pos);
        if is_err {
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_insert(l, -2);
            ffi::lua_setfield(l, -2, c"err".as_ptr());
        } else if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
            ffi::lua_pop(l, 1);
            ffi::lua_pushboolean(l, 0);
        }
        next
    }
}

/// Push the value of the element at `pos`, which `resp::skip` accepted as a whole.
/// Returns where it ends and whether it is an error (the text is then pushed).
///
/// # Safety
///
/// `l` is a valid state inside a C function call; `buf` stays alive for the call. Lua
/// errors (memory, stack) may unwind through here: only `Copy` data is held.
unsafe fn build(l: *mut ffi::lua_State, buf: &[u8], pos: usize) -> (usize, bool) {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let (it, mut next) = item(l, buf, pos);
        match it {
            Item::Str { .. }
            | Item::Err { .. }
            | Item::Int(_)
            | Item::Double(_)
            | Item::Bool(_)
            | Item::Null => return (next, push_scalar(l, buf, it)),
            Item::Array(n) | Item::Push(n) => {
                ffi::luaL_checkstack(l, 4, c"RESP reply".as_ptr());
                // n <= MAX_COUNT < c_int::MAX, and n elements were found by the walk.
                ffi::lua_createtable(l, n as c_int, 0);
                for i in 1..=n {
                    next = build_element(l, buf, next);
                    ffi::lua_rawseti(l, -2, i as ffi::lua_Integer);
                }
            }
            Item::Map(n) => {
                ffi::luaL_checkstack(l, 4, c"RESP reply".as_ptr());
                ffi::lua_createtable(l, 0, n as c_int);
                for _ in 0..n {
                    next = build_element(l, buf, next);
                    // A NaN key (a `,nan` double) cannot index a table: its text does.
                    if ffi::lua_type(l, -1) == ffi::LUA_TNUMBER {
                        let k = ffi::lua_tonumber(l, -1);
                        if k.is_nan() {
                            ffi::lua_pop(l, 1);
                            ffi::lua_pushstring(l, c"nan".as_ptr());
                        }
                    }
                    next = build_element(l, buf, next);
                    ffi::lua_rawset(l, -3);
                }
            }
            Item::Attr(n) => {
                // Metadata about the element that follows: skipped, the element is
                // the value.
                for _ in 0..n * 2 {
                    next = skip_walked(l, buf, next);
                }
                return build(l, buf, next);
            }
        }
        (next, false)
    }
}

/// The outcome of reading one top-level reply.
enum Top {
    /// The value is pushed (the error text when `err`); the reply ends at `next`.
    Pushed { next: usize, err: bool },
    /// The buffer must be `need` bytes long first; nothing pushed.
    Need(usize),
    /// Malformed; nothing pushed.
    Bad(Bad),
}

/// Read the reply at `pos`: walk it, then push its value. RESP3 push messages (`>`)
/// before it are skipped unless `keep_push`.
///
/// # Safety
///
/// as `build`.
unsafe fn read_one(l: *mut ffi::lua_State, buf: &[u8], mut pos: usize, keep_push: bool) -> Top {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        loop {
            // A scalar (the usual reply) is read once; an aggregate is walked whole
            // first, then built.
            let (it, next) = match catch_unwind(AssertUnwindSafe(|| resp::item(buf, pos))) {
                Err(payload) => raise_panic(l, payload),
                Ok(Err(bad)) => return Top::Bad(bad),
                Ok(Ok(Step::Need(n))) => return Top::Need(n),
                Ok(Ok(Step::Done(it, next))) => (it, next),
            };
            if !matches!(
                it,
                Item::Array(_) | Item::Push(_) | Item::Map(_) | Item::Attr(_)
            ) {
                let err = push_scalar(l, buf, it);
                return Top::Pushed { next, err };
            }
            match catch_unwind(AssertUnwindSafe(|| resp::skip(buf, pos, 0))) {
                Err(payload) => raise_panic(l, payload),
                Ok(Err(bad)) => return Top::Bad(bad),
                Ok(Ok(Step::Need(n))) => return Top::Need(n),
                Ok(Ok(Step::Done((), next))) => {
                    if !keep_push && matches!(it, Item::Push(_)) {
                        pos = next;
                        continue;
                    }
                    let (end, err) = build(l, buf, pos);
                    debug_assert_eq!(end, next);
                    return Top::Pushed { next, err };
                }
            }
        }
    }
}

/// `resp_parse(buf [, pos [, keep_push]])` → `true, value, next` for a reply,
/// `false, text, next` for an error reply, `nil, need` when the reply is not complete
/// (`need`: the length `buf` must reach first), `nil, message` when it is malformed.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn parse_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        let buf = check_bytes(l, 1);
        let pos = check_pos(l, 2, true);
        let keep_push = ffi::lua_toboolean(l, 3) != 0;
        match read_one(l, buf, pos, keep_push) {
            Top::Pushed { next, err } => {
                ffi::lua_pushboolean(l, (!err) as c_int);
                ffi::lua_insert(l, -2);
                ffi::lua_pushinteger(l, next as ffi::lua_Integer + 1);
                3
            }
            Top::Need(n) => {
                ffi::lua_pushnil(l);
                ffi::lua_pushinteger(l, n as ffi::lua_Integer);
                2
            }
            Top::Bad(bad) => {
                ffi::lua_pushnil(l);
                push_bad(l, bad, buf);
                2
            }
        }
    }
}

/// `resp_parse_many(buf, pos, max, out, k [, errs])` → `count, next, out, errs, stop`:
/// up to `max` replies from `pos`, reply i stored at `out[k + i]` (`out` nil: a new
/// table sized for them; a nil reply leaves a hole; an error reply stores false, and
/// its text goes to `errs[k + i]`, `errs` being made when first needed). `stop` is nil
/// when `max` replies were read, else the length `buf` must reach (incomplete) or a
/// message (malformed).
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn parse_many_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        let buf = check_bytes(l, 1);
        let mut pos = check_pos(l, 2, false);
        let max = check_integer(l, 3);
        if max < 0 {
            arg_error(l, 3, c"count must be >= 0".as_ptr());
        }
        let out_type = ffi::lua_type(l, 4);
        if out_type > ffi::LUA_TNIL && out_type != ffi::LUA_TTABLE {
            let got = arg_typename(l, 4);
            let msg = ffi::lua_pushfstring(l, c"table or nil expected, got %s".as_ptr(), got);
            arg_error(l, 4, msg);
        }
        let k = check_integer(l, 5);
        if !(0..=MAX_INDEX).contains(&k) {
            arg_error(l, 5, c"index must be in 0..2^31-1".as_ptr());
        }
        let errs_type = ffi::lua_type(l, 6);
        if errs_type > ffi::LUA_TNIL && errs_type != ffi::LUA_TTABLE {
            let got = arg_typename(l, 6);
            let msg = ffi::lua_pushfstring(l, c"table or nil expected, got %s".as_ptr(), got);
            arg_error(l, 6, msg);
        }
        ffi::lua_settop(l, 6);
        let mut have_errs = errs_type == ffi::LUA_TTABLE;
        let max = max.min(MAX_INDEX - k);
        if out_type != ffi::LUA_TTABLE {
            // Made here with room for the replies (no regrowth while they are stored),
            // sized by what the buffer can hold (a reply takes 3 bytes at least), and
            // one hash slot for the caller's `n`.
            let room = (buf.len().saturating_sub(pos) / 3) as i64;
            let narr = max.min(room).min(1 << 16) as c_int;
            ffi::lua_createtable(l, narr, 1);
            ffi::lua_replace(l, 4);
        }
        let mut count: i64 = 0;
        let mut stop = None;
        while count < max {
            match read_one(l, buf, pos, false) {
                Top::Pushed { next, err } => {
                    count += 1;
                    let at = (k + count) as ffi::lua_Integer;
                    if err {
                        if !have_errs {
                            ffi::lua_createtable(l, 0, 1);
                            ffi::lua_replace(l, 6);
                            have_errs = true;
                        }
                        ffi::lua_rawseti(l, 6, at);
                        ffi::lua_pushboolean(l, 0);
                    }
                    ffi::lua_rawseti(l, 4, at);
                    pos = next;
                }
                Top::Need(n) => {
                    stop = Some(Err(n));
                    break;
                }
                Top::Bad(bad) => {
                    stop = Some(Ok(bad));
                    break;
                }
            }
        }
        ffi::lua_pushinteger(l, count as ffi::lua_Integer);
        ffi::lua_pushinteger(l, pos as ffi::lua_Integer + 1);
        ffi::lua_pushvalue(l, 4);
        ffi::lua_pushvalue(l, 6);
        match stop {
            None => ffi::lua_pushnil(l),
            Some(Err(n)) => ffi::lua_pushinteger(l, n as ffi::lua_Integer),
            Some(Ok(bad)) => push_bad(l, bad, buf),
        }
        5
    }
}

/// The largest integer-valued float written as an integer (`skysocket.redis`'s rule:
/// beyond 2^53 it formats floats with `%.17g`, which is left to it).
const EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// An argument as RESP writes it: a string's bytes, or an integer.
enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

/// The value at stack index `i` as an argument, or `None` when `skysocket.redis`'s
/// own rules must decide (another type, a non-integral or huge float).
///
/// # Safety
///
/// `l` is a valid state inside a C function call; the slice lives while the value
/// stays on the stack.
unsafe fn arg_at<'a>(l: *mut ffi::lua_State, i: c_int) -> Option<Arg<'a>> {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        match ffi::lua_type(l, i) {
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, i, &mut len);
                // SAFETY: a string (no conversion), on the stack while used.
                Some(Arg::Bytes(std::slice::from_raw_parts(p as *const u8, len)))
            }
            ffi::LUA_TNUMBER => {
                // A true integer (Lua 5.3+) is written exactly; on Lua 5.1 / LuaJIT the
                // compat `lua_isinteger` also says yes for integral floats, which the
                // check below bounds to 2^53 as for any float.
                #[cfg(not(any(feature = "lua51", feature = "luajit")))]
                if ffi::lua_isinteger(l, i) != 0 {
                    return Some(Arg::Int(ffi::lua_tointeger(l, i)));
                }
                let v = ffi::lua_tonumber(l, i);
                if v == v.trunc() && v.abs() <= EXACT_FLOAT {
                    Some(Arg::Int(v as i64))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// `v` in decimal, in the end of `digits`.
fn int_text(v: i64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        digits[i] = b'-';
    }
    &digits[i..]
}

/// `v` in decimal into `out`.
fn put_int(out: &mut Vec<u8>, v: i64) {
    if (0..10).contains(&v) {
        out.push(b'0' + v as u8);
    } else {
        out.extend_from_slice(int_text(v, &mut [0; 20]));
    }
}

/// `$<len>\r\n<bytes>\r\n` for one argument.
fn put_arg(out: &mut Vec<u8>, arg: &Arg<'_>) {
    let mut digits = [0u8; 20];
    let bytes = match *arg {
        Arg::Bytes(b) => b,
        Arg::Int(v) => int_text(v, &mut digits),
    };
    out.push(b'$');
    put_int(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Whether the array at stack index `t` is a plain table (no metatable) of at most
/// `MAX_INDEX` items; its length if so.
///
/// # Safety
///
/// `l` is a valid state inside a C function call.
unsafe fn plain_len(l: *mut ffi::lua_State, t: c_int) -> Option<usize> {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        if ffi::lua_type(l, t) != ffi::LUA_TTABLE {
            return None;
        }
        if ffi::lua_getmetatable(l, t) != 0 {
            ffi::lua_pop(l, 1);
            return None;
        }
        let n = ffi::lua_rawlen(l, t);
        (n as i64 <= MAX_INDEX).then_some(n)
    }
}

/// The most names a `refuse` table may hold, and their longest length (a table beyond
/// these leaves every pipeline to the caller).
const REFUSE_MAX: usize = 16;
const NAME_MAX: usize = 32;

/// The names of the `refuse` table at stack index 2 (keys with a true value), copied
/// before anything is written, so the encoding loop needs no Lua call that can raise.
/// `None` when the table is beyond `REFUSE_MAX` / `NAME_MAX` or has a key that is not
/// a string.
///
/// # Safety
///
/// `l` is inside `encode_closure`, with a table at index 2.
unsafe fn refused_names(
    l: *mut ffi::lua_State,
    names: &mut [([u8; NAME_MAX], usize); REFUSE_MAX],
) -> Option<usize> {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let mut n = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, 2) != 0 {
            // key at -2, value at -1; the key is left untouched for lua_next.
            let keep = ffi::lua_toboolean(l, -1) != 0;
            ffi::lua_pop(l, 1);
            if !keep {
                continue;
            }
            if ffi::lua_type(l, -1) != ffi::LUA_TSTRING || n == REFUSE_MAX {
                ffi::lua_pop(l, 1);
                return None;
            }
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, -1, &mut len);
            if len > NAME_MAX {
                ffi::lua_pop(l, 1);
                return None;
            }
            // SAFETY: the key string is on the stack.
            let key = std::slice::from_raw_parts(p as *const u8, len);
            names[n].0[..len].copy_from_slice(key);
            names[n].1 = len;
            n += 1;
        }
        Some(n)
    }
}

/// Whether `name`, upper-cased, is one of `names`.
fn is_refused(name: &[u8], names: &[([u8; NAME_MAX], usize)]) -> bool {
    names.iter().any(|(k, len)| {
        *len == name.len()
            && k[..*len]
                .iter()
                .zip(name)
                .all(|(a, b)| *a == b.to_ascii_uppercase())
    })
}

/// The commands at stack index 1 written into `out`, or false as soon as one is left
/// to the caller. Only raw reads (`lua_rawgeti`, `lua_rawlen`, `lua_tolstring` of
/// strings, `lua_getmetatable`, pops): nothing here can raise a Lua error, so `out`
/// is never skipped by one.
///
/// # Safety
///
/// `l` is inside `encode_closure` (index 1: a plain table of `n` items).
unsafe fn encode_all(
    l: *mut ffi::lua_State,
    n: usize,
    refuse: &[([u8; NAME_MAX], usize)],
    out: &mut Vec<u8>,
) -> bool {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        // Names are checked once per run of the same name (short strings are interned:
        // the same pointer is the same name).
        let mut last_name: *const c_char = std::ptr::null();
        for i in 1..=n {
            ffi::lua_rawgeti(l, 1, i as ffi::lua_Integer);
            let Some(m) = plain_len(l, -1) else {
                return false;
            };
            if m == 0 {
                return false;
            }
            out.push(b'*');
            put_int(out, m as i64);
            out.extend_from_slice(b"\r\n");
            for j in 1..=m {
                ffi::lua_rawgeti(l, -1, j as ffi::lua_Integer);
                if j == 1 {
                    if ffi::lua_type(l, -1) != ffi::LUA_TSTRING {
                        return false;
                    }
                    let mut len = 0usize;
                    let name = ffi::lua_tolstring(l, -1, &mut len);
                    if name != last_name {
                        // SAFETY: the name string is on the stack (just pushed).
                        let bytes = std::slice::from_raw_parts(name as *const u8, len);
                        if is_refused(bytes, refuse) {
                            return false;
                        }
                        last_name = name;
                    }
                }
                match arg_at(l, -1) {
                    Some(arg) => put_arg(out, &arg),
                    None => return false,
                }
                ffi::lua_pop(l, 1);
            }
            ffi::lua_pop(l, 1);
        }
        true
    }
}

thread_local! {
    /// The encoding buffer, reused between calls (taken out while in use: a Lua error
    /// in between only loses it).
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest buffer kept for the next call.
const SCRATCH_KEEP: usize = 64 << 10;

/// `resp_encode(cmds [, refuse])` → the RESP encoding of an array of commands (each an
/// array `{ name, args... }`, arguments strings or integer-valued numbers), or nil when
/// any command is something else (not a plain array, a name that is not a string or
/// whose upper-cased form is a key of `refuse`, another argument type, a non-integral
/// float or one beyond 2^53): the caller's own rules decide those.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn encode_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            let got = arg_typename(l, 1);
            let msg = ffi::lua_pushfstring(l, c"table expected, got %s".as_ptr(), got);
            arg_error(l, 1, msg);
        }
        let refuse_type = ffi::lua_type(l, 2);
        if refuse_type > ffi::LUA_TNIL && refuse_type != ffi::LUA_TTABLE {
            let got = arg_typename(l, 2);
            let msg = ffi::lua_pushfstring(l, c"table or nil expected, got %s".as_ptr(), got);
            arg_error(l, 2, msg);
        }
        ffi::lua_settop(l, 2);
        let mut names = [([0u8; NAME_MAX], 0usize); REFUSE_MAX];
        let nnames = if refuse_type == ffi::LUA_TTABLE {
            refused_names(l, &mut names)
        } else {
            Some(0)
        };
        let (Some(n), Some(nnames)) = (plain_len(l, 1), nnames) else {
            ffi::lua_settop(l, 2);
            ffi::lua_pushnil(l);
            return 1;
        };
        let mut out = SCRATCH.with(|c| c.take());
        out.clear();
        let done = catch_unwind(AssertUnwindSafe(|| {
            // raw reads only (see encode_all)
            encode_all(l, n, &names[..nnames], &mut out)
        }));
        ffi::lua_settop(l, 2);
        match done {
            Ok(true) => {
                // Only a memory error can raise here; the buffer would then be lost.
                ffi::lua_pushlstring(l, out.as_ptr() as *const c_char, out.len());
            }
            Ok(false) => ffi::lua_pushnil(l),
            Err(payload) => {
                drop(out);
                raise_panic(l, payload)
            }
        }
        if out.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|c| c.set(out));
        }
        1
    }
}

/// `resp_parse`, `resp_parse_many` and `resp_encode` for the module table.
pub fn resp_functions(
    lua: &Lua,
    st: &std::rc::Rc<State>,
) -> mlua::Result<[(&'static str, Function); 3]> {
    Ok([
        (
            "resp_encode",
            c_closure(lua, st, c"resp_encode", encode_closure)?,
        ),
        (
            "resp_parse",
            c_closure(lua, st, c"resp_parse", parse_closure)?,
        ),
        (
            "resp_parse_many",
            c_closure(lua, st, c"resp_parse_many", parse_many_closure)?,
        ),
    ])
}
