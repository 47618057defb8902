//! The coroutine layer's raw fast paths (part of the raw hot-path module `fast`; issue
//! 18): `waker(reader, queue)`, its `readable` handler, and `runner(queue, qargs,
//! parked)`, the inner loop of `sched.run`. Both are C closures over tables the Lua side
//! made and keeps (the run queue is never replaced, only cleared).
//!
//! ## waker
//!
//! `skysocket.socket` is notified of every arrival on a buffered socket by its
//! handler's `readable(id, unread)`. All that handler does is wake the coroutine
//! parked in a read of that socket, and as a Lua function (plus `sched.ready`) it cost
//! about 1,500 instructions per message on lua5.4. This closure does the same with raw
//! table operations on two tables of `skysocket.socket`/`skysocket.sched` it holds as
//! upvalues, and touches no table keyed by a coroutine (on Lua 5.4 a lookup keyed by a
//! coroutine costs 150-350 instructions once a few dozen coroutines share a table):
//!
//! - `reader[id]` is a coroutine (parked in a read of `id`, not yet woken): set
//!   `reader[id] = false` (woken; the reader checks it when it runs) and append the
//!   coroutine to `queue` (`queue[0]` is the index of the last queued entry; the
//!   scheduler's run loop resumes them in order);
//! - `reader[id]` is `true` (the last `read(id)` drained the buffer; nothing arrived
//!   since): set it to `nil` (something may be buffered now);
//! - anything else: nothing.
//!
//! Only raw gets and sets on tables the Lua side made, so no metamethod and no Lua code
//! runs; a memory error while setting may raise (nothing with a destructor is alive).
//!
//! ## runner
//!
//! `sched.run` resumes every queued coroutine; most were woken without values and
//! suspend again by yielding the scheduler's `PARKED` value. `runner(queue, qargs,
//! parked)` returns `run(h)`, which does that loop in C with `lua_resume` (no Lua loop
//! turn and no `coroutine.resume` call per message): from index `h` while `h <=
//! queue[0]` and `queue[-1]` (the exit flag) is not set, it takes `co = queue[h]`
//! (setting the slot to nil) and resumes it with no values; a coroutine that yields
//! exactly `parked` is done with. It returns to Lua as soon as anything else happens:
//! - `h` alone: the queue is empty from `h` on, the exit flag is set, or `qargs[h]` is
//!   set (the entry at `h`, left in place, has values to pass: Lua resumes it);
//! - `h, co, ok, v`: `co` (taken from slot `h - 1`) ended, failed or yielded something
//!   else; `ok` and `v` as the first two results of `coroutine.resume(co)` would be
//!   (an error object is moved off the coroutine's stack, as `coroutine.resume` does,
//!   which leaves its frames for a traceback).

use std::ffi::c_int;

use mlua::{ffi, Function, Lua};

/// Push `t[id]` for a socket id as the key; returns its type. `lua_rawgeti` takes a C
/// `int` key on Lua 5.1 and LuaJIT and socket ids pass 2^31 (issue 11; mlua's wrapper
/// panics there): on those the id is pushed as a number instead.
///
/// # Safety
///
/// `l` is a valid state with a free stack slot; `t` is a pseudo-index (an upvalue) or
/// an absolute index of a table (pushing the key must not move it).
pub(super) unsafe fn raw_get_id(l: *mut ffi::lua_State, t: c_int, id: ffi::lua_Integer) -> c_int {
    // SAFETY: as the function's # Safety note.
    unsafe {
        if cfg!(any(feature = "lua51", feature = "luajit")) {
            ffi::lua_pushinteger(l, id);
            ffi::lua_rawget(l, t)
        } else {
            ffi::lua_rawgeti(l, t, id) // a 64-bit lua_Integer key on 5.3+
        }
    }
}

/// `t[id] = v` for the value `v` on top of the stack (popped), `id` a socket id: as
/// `raw_get_id`, without `lua_rawseti`'s C `int` key.
///
/// # Safety
///
/// As `raw_get_id`, with a value on top of the stack.
pub(super) unsafe fn raw_set_id(l: *mut ffi::lua_State, t: c_int, id: ffi::lua_Integer) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        if cfg!(any(feature = "lua51", feature = "luajit")) {
            ffi::lua_pushinteger(l, id);
            ffi::lua_insert(l, -2);
            ffi::lua_rawset(l, t);
        } else {
            ffi::lua_rawseti(l, t, id);
        }
    }
}

const READER: c_int = ffi::lua_upvalueindex(1);
const QUEUE: c_int = ffi::lua_upvalueindex(2);

/// `queue[0]` as the waker sees it: `last`, the value cached between wakes in which no
/// Lua code runs in between (the delivery loop's runs of wakes; `None`: read it), and
/// whether `queue[0]` in the table is behind it (`unsaved`; only with `defer`).
#[derive(Clone, Copy, Default)]
pub(super) struct Tail {
    pub last: Option<ffi::lua_Integer>,
    /// The delivery loop writes `queue[0]` once per run of wakes (`save_tail`) instead
    /// of once per wake; the standalone closures write it at once.
    pub defer: bool,
    pub unsaved: bool,
}

/// Write a deferred `queue[0]` (see `Tail`) into the queue at stack index `queue`.
///
/// # Safety
///
/// `l` is a valid state with a free stack slot; `queue` an absolute index or pseudo-index
/// of the table the wakes behind `tail` appended to. Raises only on a memory error
/// (`queue[0]` is an existing key: it cannot).
#[inline(always)]
pub(super) unsafe fn save_tail(l: *mut ffi::lua_State, queue: c_int, tail: &mut Tail) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        if tail.unsaved {
            if let Some(t) = tail.last {
                ffi::lua_pushinteger(l, t);
                ffi::lua_rawseti(l, queue, 0);
            }
            tail.unsaved = false;
        }
    }
}

/// What the waker does for an arrival on socket `id`, on the tables at stack indices
/// `reader` and `queue` (see the module comment). Leaves the stack as it found it.
///
/// The coroutine is stored in the queue first, the only step that may allocate: if
/// that raises a memory error, nothing has changed but what `tail` says is unsaved
/// (`queue[0]` and the reader's state are existing keys; the delivery loop's caller
/// saves an unsaved tail after an error).
///
/// # Safety
///
/// `l` is a valid state with 3 free stack slots; `reader` and `queue` are
/// pseudo-indices (upvalues) or absolute indices of tables. Only raw gets and sets, so
/// no Lua code runs; a memory error while setting raises (the caller's frames must
/// hold no Rust value with a destructor). A `tail` given as `Some` is `queue[0]`.
#[inline(always)]
pub(super) unsafe fn wake(
    l: *mut ffi::lua_State,
    reader: c_int,
    queue: c_int,
    id: ffi::lua_Integer,
    tail: &mut Tail,
) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        match raw_get_id(l, reader, id) {
            ffi::LUA_TTHREAD => enqueue(l, reader, queue, id, tail),
            ffi::LUA_TBOOLEAN if ffi::lua_toboolean(l, -1) != 0 => {
                ffi::lua_settop(l, -2);
                ffi::lua_pushnil(l);
                raw_set_id(l, reader, id);
            }
            _ => ffi::lua_settop(l, -2),
        }
    }
}

/// `wake`'s step for a reader found: the coroutine on top of the stack (popped), the
/// value of `reader[id]`, is appended to the run queue and `reader[id]` set to `false`
/// (woken). Same contract as `wake`, with the coroutine pushed.
///
/// # Safety
///
/// As `wake`, with the coroutine on top of the stack and 2 free slots above it.
#[inline(always)]
pub(super) unsafe fn enqueue(
    l: *mut ffi::lua_State,
    reader: c_int,
    queue: c_int,
    id: ffi::lua_Integer,
    tail: &mut Tail,
) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        // [co]
        let last = match tail.last {
            Some(t) => t,
            None => {
                ffi::lua_rawgeti(l, queue, 0); // [co, tail]
                let t = ffi::lua_tointegerx(l, -1, std::ptr::null_mut());
                ffi::lua_settop(l, -2);
                t
            }
        } + 1;
        ffi::lua_rawseti(l, queue, last); // []
        tail.last = Some(last);
        if tail.defer {
            tail.unsaved = true;
        } else {
            ffi::lua_pushinteger(l, last);
            ffi::lua_rawseti(l, queue, 0);
        }
        ffi::lua_pushboolean(l, 0);
        raw_set_id(l, reader, id);
    }
}

/// `wake` for a socket whose reader state is field `slot` of its record `socks[id]`
/// (`waker(socks, queue, slot)`); nothing if the record is not a table. Leaves the stack
/// as it found it.
///
/// # Safety
///
/// As `wake`, with 4 free stack slots; `socks` and `queue` as `wake`'s tables.
#[inline(always)]
pub(super) unsafe fn wake_record(
    l: *mut ffi::lua_State,
    socks: c_int,
    queue: c_int,
    slot: ffi::lua_Integer,
    id: ffi::lua_Integer,
    tail: &mut Tail,
) {
    // SAFETY: as the function's # Safety note; the record is at an absolute index
    // while `wake` pushes above it.
    unsafe {
        if raw_get_id(l, socks, id) == ffi::LUA_TTABLE {
            wake(l, ffi::lua_gettop(l), queue, slot, tail);
        }
        ffi::lua_settop(l, -2);
    }
}

/// The `readable(id, unread)` closure (see the module comment).
///
/// # Safety
///
/// called by Lua as a C closure made by `waker_new`, whose two upvalues are
/// tables (checked there). Every stack slot used is within the `LUA_MINSTACK` (20)
/// slots a C function gets: at most 3 are pushed at a time.
unsafe extern "C-unwind" fn wake_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        let mut isnum: c_int = 0;
        let id = ffi::lua_tointegerx(l, 1, &mut isnum);
        if isnum == 0 {
            return 0;
        }
        wake(l, READER, QUEUE, id, &mut Tail::default());
        0
    }
}

const SLOT: c_int = ffi::lua_upvalueindex(3);

/// The `readable(id, unread)` closure of `waker(socks, queue, slot)`: `wake_record`.
///
/// # Safety
///
/// As `wake_closure`; upvalue 3 is the slot, an integer (checked by `waker_new`).
unsafe extern "C-unwind" fn wake_record_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        let mut isnum: c_int = 0;
        let id = ffi::lua_tointegerx(l, 1, &mut isnum);
        if isnum == 0 {
            return 0;
        }
        let slot = ffi::lua_tointegerx(l, SLOT, std::ptr::null_mut());
        wake_record(l, READER, QUEUE, slot, id, &mut Tail::default());
        0
    }
}

/// Which kind of waker's `readable` closure the function at stack index `f` is: then
/// the delivery loop does its work itself (`wake` or `wake_record` on its upvalues),
/// without a call.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Waker {
    /// Not a waker: call it.
    No,
    /// `waker(reader, queue)`.
    Plain,
    /// `waker(socks, queue, slot)`.
    Record,
}

/// See `Waker`.
///
/// # Safety
///
/// `l` is a valid state; `f` an acceptable index.
pub(super) unsafe fn waker_kind(l: *mut ffi::lua_State, f: c_int) -> Waker {
    // SAFETY: as the function's # Safety note.
    unsafe {
        match ffi::lua_tocfunction(l, f) {
            Some(cf) if cf as *const () == wake_closure as *const () => Waker::Plain,
            Some(cf) if cf as *const () == wake_record_closure as *const () => Waker::Record,
            _ => Waker::No,
        }
    }
}

/// Raise `bad argument #i to 'name' (table expected, got X)` unless arguments 1 and 2
/// are tables (the constructors' check).
///
/// # Safety
///
/// `l` is inside a C function call; an error longjmps (PUC Lua) or throws (LuaJIT)
/// through the caller's frame, which must hold no Rust value with a destructor.
unsafe fn tables_expected(l: *mut ffi::lua_State, name: &std::ffi::CStr) {
    // SAFETY: as the function's # Safety note; the format's arguments match its
    // directives (%d an int, %s two C strings).
    unsafe {
        for i in 1..=2 {
            if ffi::lua_type(l, i) != ffi::LUA_TTABLE {
                let got = ffi::lua_typename(l, ffi::lua_type(l, i));
                ffi::luaL_where(l, 1);
                ffi::lua_pushfstring(
                    l,
                    c"bad argument #%d to '%s' (table expected, got %s)".as_ptr(),
                    i,
                    name.as_ptr(),
                    got,
                );
                ffi::lua_concat(l, 2);
                ffi::lua_error(l);
            }
        }
    }
}

/// `waker(reader, queue)`: checks its arguments (two tables) and returns
/// the closure above with them as upvalues.
///
/// # Safety
///
/// called by Lua as a C function. An argument error longjmps (PUC Lua) or
/// throws (LuaJIT) through this frame only, which holds no Rust value.
unsafe extern "C-unwind" fn waker_new(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        tables_expected(l, c"waker");
        if ffi::lua_type(l, 3) <= ffi::LUA_TNIL {
            ffi::lua_settop(l, 2);
            ffi::lua_pushcclosure(l, wake_closure, 2);
            return 1;
        }
        let mut isnum: c_int = 0;
        let slot = ffi::lua_tointegerx(l, 3, &mut isnum);
        if isnum == 0 || ffi::lua_type(l, 3) != ffi::LUA_TNUMBER {
            let got = ffi::lua_typename(l, ffi::lua_type(l, 3));
            ffi::luaL_where(l, 1);
            ffi::lua_pushfstring(
                l,
                c"bad argument #3 to 'waker' (integer expected, got %s)".as_ptr(),
                got,
            );
            ffi::lua_concat(l, 2);
            ffi::lua_error(l);
        }
        // waker(socks, queue, slot, hand): the record field the delivery loop hands
        // bytes to (see `deliver::hand_to_reader`); 0 without one.
        let mut hand: ffi::lua_Integer = 0;
        if ffi::lua_type(l, 4) > ffi::LUA_TNIL {
            hand = ffi::lua_tointegerx(l, 4, &mut isnum);
            if isnum == 0 || ffi::lua_type(l, 4) != ffi::LUA_TNUMBER || hand < 1 {
                ffi::luaL_where(l, 1);
                ffi::lua_pushstring(
                    l,
                    c"bad argument #4 to 'waker' (positive integer expected)".as_ptr(),
                );
                ffi::lua_concat(l, 2);
                ffi::lua_error(l);
            }
        }
        ffi::lua_settop(l, 2);
        ffi::lua_pushinteger(l, slot);
        ffi::lua_pushinteger(l, hand);
        ffi::lua_pushcclosure(l, wake_record_closure, 4);
        1
    }
}

const QUEUE_R: c_int = ffi::lua_upvalueindex(1);
const QARGS_R: c_int = ffi::lua_upvalueindex(2);
const PARKED_R: c_int = ffi::lua_upvalueindex(3);

/// `run(h)` (see the module comment).
///
/// # Safety
///
/// called by Lua as a C closure made by `runner_new`, whose upvalues 1 and 2
/// are tables (checked there). `lua_resume` runs the coroutine protected: its errors
/// come back as a status, not as an unwind through this frame; only a memory error in
/// a raw set of ours can raise here, and no Rust value with a destructor is alive. The
/// stack of `l` holds at most 5 slots (within `LUA_MINSTACK`); on the coroutine's
/// stack only the values `lua_resume` left there are touched.
unsafe extern "C-unwind" fn run_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        let mut h = ffi::lua_tointegerx(l, 1, std::ptr::null_mut());
        // PARKED is a table (the scheduler's): compared by address (no API comparison);
        // any other value with lua_rawequal.
        let parked = if ffi::lua_type(l, PARKED_R) == ffi::LUA_TTABLE {
            ffi::lua_topointer(l, PARKED_R)
        } else {
            std::ptr::null()
        };
        // queue[0] as last read: while a drain runs it only grows (pushes append; the
        // Lua side resets it only between drains), so it is read again only once `h`
        // passes the value seen.
        let mut tail: ffi::lua_Integer = -1;
        loop {
            // [co, flag(, args)]: one settop for the lookups.
            ffi::lua_settop(l, 0);
            if h > tail {
                ffi::lua_rawgeti(l, QUEUE_R, 0);
                tail = ffi::lua_tointegerx(l, 1, std::ptr::null_mut());
                ffi::lua_settop(l, 0);
                if h > tail {
                    break;
                }
            }
            let kind = ffi::lua_rawgeti(l, QUEUE_R, h);
            // queue[-1]: nil, go on; a number, some entries have values (look at
            // qargs[h]); anything else, the exit flag.
            match ffi::lua_rawgeti(l, QUEUE_R, -1) {
                ffi::LUA_TNIL => {}
                ffi::LUA_TNUMBER if ffi::lua_rawgeti(l, QARGS_R, h) == ffi::LUA_TNIL => {}
                _ => break,
            }
            ffi::lua_pushnil(l);
            ffi::lua_rawseti(l, QUEUE_R, h);
            h += 1;
            if kind != ffi::LUA_TTHREAD {
                continue;
            }
            let co = ffi::lua_tothread(l, 1);
            let mut nres: c_int = 0;
            let status = ffi::lua_resume(co, l, 0, &mut nres);
            if status == ffi::LUA_YIELD && nres == 1 {
                // Two live tables at the same address are the same table: PARKED is
                // recognised on the coroutine's stack and popped there, as a resume
                // needs (the type test: a light userdata's pointer is its own value).
                if !parked.is_null()
                    && ffi::lua_topointer(co, -1) == parked
                    && ffi::lua_type(co, -1) == ffi::LUA_TTABLE
                {
                    ffi::lua_settop(co, -2);
                    continue;
                }
                // Moved over (off the coroutine's stack).
                ffi::lua_xmove(co, l, 1); // [co, flag(, args), v]
                let v = ffi::lua_gettop(l);
                if parked.is_null() && ffi::lua_rawequal(l, v, PARKED_R) != 0 {
                    continue;
                }
                ffi::lua_replace(l, 2); // [co, v, ...]
                ffi::lua_settop(l, 2); // [co, v]
                ffi::lua_pushinteger(l, h); // [co, v, h]
                ffi::lua_insert(l, 1); // [h, co, v]
                ffi::lua_pushboolean(l, 1);
                ffi::lua_insert(l, 3); // [h, co, true, v]
                return 4;
            }
            ffi::lua_settop(l, 1); // [co]
            ffi::lua_pushinteger(l, h);
            ffi::lua_insert(l, 1); // [h, co]
            if status == ffi::LUA_OK || status == ffi::LUA_YIELD {
                ffi::lua_pushboolean(l, 1);
                if nres > 0 {
                    ffi::lua_pushvalue(co, -nres);
                    ffi::lua_xmove(co, l, 1);
                    ffi::lua_settop(co, -nres - 1);
                } else {
                    ffi::lua_pushnil(l);
                }
            } else {
                ffi::lua_pushboolean(l, 0);
                ffi::lua_xmove(co, l, 1); // the error object
            }
            return 4;
        }
        ffi::lua_settop(l, 0);
        ffi::lua_pushinteger(l, h);
        1
    }
}

/// `runner(queue, qargs, parked)`: checks its arguments and returns `run` (above) with
/// them as upvalues.
///
/// # Safety
///
/// As `waker_new`.
unsafe extern "C-unwind" fn runner_new(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        tables_expected(l, c"runner");
        ffi::lua_settop(l, 3);
        ffi::lua_pushcclosure(l, run_closure, 3);
        1
    }
}

/// The module's `runner` function.
pub fn runner_function(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `runner_new` follows the C function protocol (see its comment).
    unsafe { lua.create_c_function(runner_new) }
}

/// The module's `waker` function.
pub fn waker_function(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `waker_new` follows the C function protocol (see its comment).
    unsafe { lua.create_c_function(waker_new) }
}
