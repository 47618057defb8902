//! The hot path in raw Lua-stack code (the only `unsafe` module of the binding).
//!
//! Two things are done here without mlua's high-level wrappers, which cost several
//! thousand instructions per echoed message (see PERF-NOTES and BENCHMARKS.md):
//! - `send`/`write`/`lwrite` are plain C closures: arguments are read in place from the
//!   stack (no copy of the Lua string unless the engine must queue it), errors are raised
//!   with `lua_error` after every Rust value with a destructor has been dropped.
//! - `readn`/`readline`/`readsome` likewise push one string straight from the socket's
//!   Rust read buffer (the coroutine layer calls them for every read) (`read.rs`).
//! - runs of `data` messages (`deliver.rs`) are delivered inside one `exec_raw` entry: for each message
//!   the handler's `data` (or, for a buffered socket, `readable`) function is found with
//!   raw table reads and called with `lua_pcall` (per-message error isolation,
//!   traceback from a message handler).
//!
//! Anything unusual (a handler with a metatable, a userdata handler, any other message
//! kind) is left to the high-level dispatcher, so behaviour is the same on both paths.

// The coroutine layer's raw fast paths: its readable handler and run loop (issue 18).
mod co;
// The coroutine layer's read(id) in C, on Lua 5.3+ (C functions that yield).
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
mod coread;
mod deliver;
mod read;
// Redis replies (RESP2/RESP3) made into Lua values on the stack (issue 17).
mod resp;

use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use mlua::{ffi, AnyUserData, Function, Lua};

use super::state::State;
use crate::engine::Priority;

/// `lua_typename` of argument `i`, or "no value" past the top.
///
/// # Safety
///
/// `l` must be a valid state inside a C function call.
unsafe fn arg_typename(l: *mut ffi::lua_State, i: c_int) -> *const c_char {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        if i > ffi::lua_gettop(l) {
            c"no value".as_ptr()
        } else {
            ffi::lua_typename(l, ffi::lua_type(l, i))
        }
    }
}

/// Raise `bad argument #i to 'name' (msg)` at the caller's line, like `luaL_argerror`.
///
/// # Safety
///
/// no Rust value with a destructor may be alive in the frames
/// this error unwinds through (it longjmps on PUC Lua).
unsafe fn arg_error(l: *mut ffi::lua_State, i: c_int, msg: *const c_char) -> ! {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let name = ffi::lua_tostring(l, ffi::lua_upvalueindex(2));
        ffi::luaL_where(l, 1);
        ffi::lua_pushfstring(l, c"bad argument #%d to '%s' (%s)".as_ptr(), i, name, msg);
        ffi::lua_concat(l, 2);
        ffi::lua_error(l)
    }
}

/// Raise a Lua error for a Rust panic caught in this module, naming it an internal error.
///
/// Every Rust step of the raw closures runs under `catch_unwind`, and nothing that can
/// raise a Lua error runs inside one: on LuaJIT a Lua error is a foreign exception,
/// and a `catch_unwind` it reaches aborts the process. So a panic comes out of its
/// `catch_unwind` as a value, and only then becomes a Lua error.
///
/// # Safety
///
/// as `arg_error`.
unsafe fn raise_panic(l: *mut ffi::lua_State, payload: Box<dyn Any + Send>) -> ! {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let text = panic_text(payload);
        ffi::lua_pushlstring(l, text.as_ptr() as *const c_char, text.len());
        drop(text);
        ffi::lua_error(l)
    }
}

/// What a caught panic is reported as.
pub(crate) fn panic_text(payload: Box<dyn Any + Send>) -> String {
    let reason = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    };
    format!("skysocket internal error (a bug, please report it): {reason}")
}

/// Check argument `i` as an integer (`luaL_checkinteger`'s messages).
///
/// # Safety
///
/// `l` must be a valid state inside a C function call (as `arg_error` when it raises).
#[inline(always)]
unsafe fn check_integer(l: *mut ffi::lua_State, i: c_int) -> ffi::lua_Integer {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let mut isnum: c_int = 0;
        let v = ffi::lua_tointegerx(l, i, &mut isnum);
        if isnum == 0 {
            if ffi::lua_type(l, i) == ffi::LUA_TNUMBER {
                arg_error(l, i, c"number has no integer representation".as_ptr());
            }
            let got = arg_typename(l, i);
            let msg = ffi::lua_pushfstring(l, c"number expected, got %s".as_ptr(), got);
            arg_error(l, i, msg);
        }
        v
    }
}

/// Check argument `i` as a socket id (a positive integer).
///
/// # Safety
///
/// `l` must be a valid state inside a C function call (as `arg_error` when it raises).
#[inline(always)]
unsafe fn check_id(l: *mut ffi::lua_State, i: c_int) -> u64 {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let v = check_integer(l, i);
        if v <= 0 {
            arg_error(l, i, c"socket id must be a positive integer".as_ptr());
        }
        v as u64
    }
}

/// The engine call behind `send`; returns the failure text, if any.
#[inline(always)]
fn send_bytes(st: &State, id: u64, data: &[u8], prio: Priority) -> Option<String> {
    let Ok(mut eng) = st.engine.try_borrow_mut() else {
        return Some("engine busy".into());
    };
    eng.send(id, data, prio).err().map(|e| e.to_string())
}

/// The State of the only module instance the process ever opened: its closures then
/// find it without reading an upvalue (about 25 instructions per call). Set by the first
/// `open`; a second `open`, or the drop of the first State, turns it into `MANY` for
/// good, and every closure reads its upvalue from then on. A closure of a later
/// instance can never see the first one's pointer: its `open` wrote `MANY` first.
static ONLY_STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
const MANY: usize = 1;

/// Record a new module instance (see `ONLY_STATE`).
pub fn register_state(st: &std::rc::Rc<State>) {
    let p = std::rc::Rc::as_ptr(st) as *mut State;
    let first =
        ONLY_STATE.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire);
    if first.is_err() {
        ONLY_STATE.store(MANY as *mut State, Ordering::Release);
    }
}

/// A State is going away: its pointer must not be used again.
pub fn forget_state(st: &State) {
    let p = st as *const State as *mut State;
    let _ = ONLY_STATE.compare_exchange(p, MANY as *mut State, Ordering::AcqRel, Ordering::Acquire);
}

/// The State of the running closure (upvalue 1, unless there is only one instance).
///
/// # Safety
///
/// `l` is inside a closure made by `c_closure`.
unsafe fn closure_state<'a>(l: *mut ffi::lua_State) -> &'a State {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let only = ONLY_STATE.load(Ordering::Acquire);
        if only as usize > MANY {
            // SAFETY: set from a live Rc<State> and cleared before that State drops; the
            // closure's upvalue 3 keeps the State alive meanwhile.
            &*only
        } else {
            // SAFETY: upvalue 1 is the State pointer, kept alive by upvalue 3.
            &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const State)
        }
    }
}

/// `send(id, data)` as a C closure (`LOW`: `lwrite`). Upvalues: 1 = `*const State`,
/// 2 = the function's name for errors, 3 = the userdata keeping State alive.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn send_closure<const LOW: bool>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        let id = check_id(l, 1);
        let mut len: usize = 0;
        // Strings and numbers (converted in place, as lua_tolstring does), or an array of
        // them (Skynet's `socket.write` takes a table too).
        let ptr = ffi::lua_tolstring(l, 2, &mut len);
        let prio = if LOW { Priority::Low } else { Priority::High };
        let st = closure_state(l);
        let sent = if !ptr.is_null() {
            // SAFETY: the string stays on the stack (argument 2) for the whole call.
            let data = std::slice::from_raw_parts(ptr as *const u8, len);
            catch_unwind(AssertUnwindSafe(|| send_bytes(st, id, data, prio)))
        } else if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
            let data = gather(l, 2);
            // `data` moves in, so it is dropped even if the send panics.
            catch_unwind(AssertUnwindSafe(move || send_bytes(st, id, &data, prio)))
        } else {
            let got = arg_typename(l, 2);
            let msg = ffi::lua_pushfstring(l, c"string expected, got %s".as_ptr(), got);
            arg_error(l, 2, msg)
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(payload) => raise_panic(l, payload),
        };
        match sent {
            None => {
                ffi::lua_pushboolean(l, 1);
                1
            }
            Some(text) => {
                ffi::lua_pushboolean(l, 0);
                // Only a memory error can raise here; `text` would then leak, nothing worse.
                ffi::lua_pushlstring(l, text.as_ptr() as *const c_char, text.len());
                drop(text);
                2
            }
        }
    }
}

/// The strings of the array at stack index `t`, joined into one buffer (one copy, and
/// no Lua string is made for the whole). Every item is checked before anything is
/// allocated, so an argument error leaves nothing behind.
///
/// # Safety
///
/// `l` is inside a C function call; `t` is a table argument.
unsafe fn gather(l: *mut ffi::lua_State, t: c_int) -> Vec<u8> {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        let n = ffi::lua_rawlen(l, t);
        let mut total = 0usize;
        for i in 1..=n {
            ffi::lua_pushinteger(l, i as ffi::lua_Integer);
            ffi::lua_rawget(l, t);
            let kind = ffi::lua_type(l, -1);
            if kind != ffi::LUA_TSTRING && kind != ffi::LUA_TNUMBER {
                let got = ffi::lua_typename(l, kind);
                let msg = ffi::lua_pushfstring(
                    l,
                    c"array of strings expected, item %d is %s".as_ptr(),
                    i as c_int,
                    got,
                );
                arg_error(l, t, msg);
            }
            let mut len = 0usize;
            ffi::lua_tolstring(l, -1, &mut len);
            total = total.saturating_add(len);
            ffi::lua_pop(l, 1);
        }
        let mut out = Vec::with_capacity(total);
        for i in 1..=n {
            ffi::lua_pushinteger(l, i as ffi::lua_Integer);
            ffi::lua_rawget(l, t);
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, -1, &mut len);
            if !p.is_null() {
                // SAFETY: the string is on the stack until the pop below.
                out.extend_from_slice(std::slice::from_raw_parts(p as *const u8, len));
            }
            ffi::lua_pop(l, 1);
        }
        out
    }
}

/// Wrap `f` as a C closure with the upvalues every closure here expects: 1 = the
/// `*const State`, 2 = the function's name for errors, 3 = a userdata holding an `Rc`
/// of the State, which keeps the pointer valid for as long as the closure exists.
fn c_closure(
    lua: &Lua,
    st: &std::rc::Rc<State>,
    name: &'static CStr,
    f: ffi::lua_CFunction,
) -> mlua::Result<Function> {
    let keep: AnyUserData = lua.create_any_userdata(st.clone())?;
    let ptr = std::rc::Rc::as_ptr(st) as *mut c_void;
    // SAFETY: the closure pushes exactly one function on top of the argument it got,
    // which it removes, so mlua reads one result.
    unsafe {
        lua.exec_raw::<Function>(keep, |l| {
            ffi::lua_pushlightuserdata(l, ptr);
            ffi::lua_pushstring(l, name.as_ptr());
            ffi::lua_pushvalue(l, -3);
            ffi::lua_pushcclosure(l, f, 3);
            ffi::lua_remove(l, -2);
        })
    }
}

/// `send`, `write` or `lwrite` (which is `low`).
pub fn send_function(
    lua: &Lua,
    st: &std::rc::Rc<State>,
    name: &'static CStr,
    low: bool,
) -> mlua::Result<Function> {
    c_closure(
        lua,
        st,
        name,
        if low {
            send_closure::<true>
        } else {
            send_closure::<false>
        },
    )
}

/// The raw closure behind the `"raw"` test hook: a panic under `catch_unwind`, raised
/// as a Lua error as every closure here does.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn panic_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        match catch_unwind(|| -> c_int { panic!("test hook: panic in a raw closure") }) {
            Ok(n) => n,
            Err(payload) => raise_panic(l, payload),
        }
    }
}

/// `_test_panic("raw")`'s closure (see `hooks`).
pub fn panic_function(lua: &Lua, st: &std::rc::Rc<State>) -> mlua::Result<Function> {
    c_closure(lua, st, c"_test_panic", panic_closure)
}

pub use co::{runner_function, waker_function};
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
pub use coread::coreader_function;
pub use deliver::deliver_data_run;
pub use read::read_functions;
pub use resp::resp_functions;

/// A service's Lua state (and values of it) made movable between the worker threads.
///
/// `Lua` and the `Rc`s of the module state inside it are not `Send`: they must never be
/// used by two threads at once, and no clone of them may stay behind on one thread while
/// another uses the rest. A service's state, its module `State` and the functions kept
/// for delivery are created together, wrapped here together, and never cloned out of
/// this wrapper; the service runtime hands the wrapper to one worker at a time (a
/// service is in the run queue at most once, and its body is taken out of its slot
/// for the whole turn), with the mutex hand-over ordering every access. Neither the Lua
/// interpreters nor mlua keep thread-local data for a state, so which thread runs the
/// next turn does not matter.
pub struct Sendable<T>(pub T);

// SAFETY: see the type's documentation: exclusive, mutex-ordered use by one thread at a
// time of a value whose non-Send parts are all owned by (or reachable only from) it.
unsafe impl<T> Send for Sendable<T> {}

/// A new Lua state for a service, with every standard library (`debug` for the
/// schedulers' tracebacks) and C modules allowed: a service `require`s what its
/// creator could.
pub fn new_service_lua() -> Lua {
    // SAFETY: "unsafe" here means the state may load C code (debug library, C modules),
    // as the interpreter that loaded this module can; nothing else is assumed.
    unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::new()) }
}
