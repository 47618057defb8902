//! The mlua binding: `require "skysocket"`.
//!
//! The first Lua state that requires the module gets an engine; services (see
//! `service.rs`, `shared.rs`) share it with the root through the socket thread. Module
//! functions are
//! Rust closures over the module state; a tiny Lua shim turns argument errors into
//! plain string errors (mlua would raise them as userdata).

mod address;
mod api;
mod args;
mod buffer;
mod buffer_api;
mod codec;
mod configure;
mod crypt;
mod dispatch;
mod fast;
mod hooks;
mod http_head;
mod readbuf;
mod resp;
mod run;
mod service;
mod shared;
mod state;
mod timer_fns;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_absent.rs"]
mod tls;

use std::rc::Rc;

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use args::{Args, Fail};
use state::State;

pub use api::FUNCTIONS;

/// Marks "raise the next value as an error" between the Rust functions and the shim.
static ARG_ERROR: u8 = 0;

const SHIM: &str = r#"
local raw, ERR = ...
local error = error
-- Raise argument errors as strings at the caller's line; pass everything else through.
-- The wrapper below tail-calls `check`: PUC Lua 5.1 keeps a frame for the tail call.
local LEVEL = (_VERSION == "Lua 5.1" and not jit) and 3 or 2
local function check(first, ...)
  if first == ERR then error((...), LEVEL) end
  return first, ...
end
local M = {}
for name, f in pairs(raw) do
  M[name] = function(...) return check(f(...)) end
end
return M
"#;

/// Per-socket write-queue limit of the module's engine (`configure{write_limit=}`).
pub const MODULE_WRITE_LIMIT: usize = 64 << 20;
/// Bytes queued in all sockets of the module's engine (`configure{write_budget=}`).
pub const MODULE_WRITE_BUDGET: usize = 256 << 20;

/// The largest read on LuaJIT (`configure{max_read=}`; the engine's default is 128 KiB
/// elsewhere). LuaJIT's allocator serves every block of 128 KiB or more with its own
/// `mmap` and gives it back with `munmap` when freed, so a 128 KiB read made into a Lua
/// string cost two system calls and 32 page faults per read: the stream case ran at
/// a third of luv's speed (issue 18; strace: 4,399 mmap + 4,367 munmap per 4,920
/// reads). A string of this length (plus LuaJIT's 24-byte header and padding) stays
/// under that threshold. `skysocket.socket` caps `read(id)` at the same size.
pub const LUAJIT_MAX_READ: usize = 127 * 1024;

/// The engine settings a new module state starts with: the engine's defaults, plus a
/// write limit per socket and a write budget for all of them, so that peers which
/// send and never read cannot grow a server without bound (they are dropped); on
/// LuaJIT reads stay under its allocator's mmap threshold (`LUAJIT_MAX_READ`).
pub fn module_config() -> crate::engine::Config {
    let config = crate::engine::Config {
        default_write_limit: MODULE_WRITE_LIMIT,
        write_budget: MODULE_WRITE_BUDGET,
        ..Default::default()
    };
    #[cfg(feature = "luajit")]
    let config = crate::engine::Config {
        max_read: config.max_read.min(LUAJIT_MAX_READ),
        ..config
    };
    config
}

/// Build the module table for `lua`.
pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let st = State::new(lua, module_config())?;
    build(lua, st).map(|(t, _)| t)
}

/// The module table over state `st`.
fn build(lua: &Lua, st: State) -> mlua::Result<(Table, Rc<State>)> {
    let st = Rc::new(st);
    api::start_clock();
    fast::register_state(&st);
    let sentinel = Value::LightUserData(LightUserData(&ARG_ERROR as *const u8 as *mut _));
    let raw = function_table(
        lua,
        &st,
        &sentinel,
        api::FUNCTIONS.iter().chain(tls::FUNCTIONS),
    )?;
    let module: Table = lua
        .load(SHIM)
        .set_name("=skysocket")
        .call((raw, sentinel.clone()))?;
    // The hot path: send/write/lwrite are raw C closures (see fast/mod.rs).
    module.raw_set("send", fast::send_function(lua, &st, c"send", false)?)?;
    module.raw_set("write", fast::send_function(lua, &st, c"write", false)?)?;
    module.raw_set("lwrite", fast::send_function(lua, &st, c"lwrite", true)?)?;
    for (name, f) in fast::read_functions(lua, &st)? {
        module.raw_set(name, f)?;
    }
    // Redis replies for skysocket.redis (raw closures too: see fast/resp.rs).
    for (name, f) in fast::resp_functions(lua, &st)? {
        module.raw_set(name, f)?;
    }
    // The coroutine layer's readable handler and run loop (internal; see fast/co.rs).
    module.raw_set("waker", fast::waker_function(lua)?)?;
    module.raw_set("runner", fast::runner_function(lua)?)?;
    // Its read(id) in C where C functions can yield (see fast/coread.rs).
    #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
    module.raw_set("coreader", fast::coreader_function(lua, &st)?)?;
    if hooks::enabled() {
        module.raw_set("_test_panic", test_panic_function(lua)?)?;
        module.raw_set("_test_panic_raw", fast::panic_function(lua, &st)?)?;
        module.raw_set(
            "_test_routed",
            lua.create_function(|_, ()| Ok(hooks::routed()))?,
        )?;
    }
    module.raw_set("_VERSION", env!("CARGO_PKG_VERSION"))?;
    // Whether this build has TLS (the `tls` Cargo feature).
    module.raw_set("tls", cfg!(feature = "tls"))?;
    // The Rust half of `skysocket.service`: its functions return (ERR, message) for a
    // bad argument, which the Lua half raises at its caller's line.
    let svc = function_table(lua, &st, &sentinel, service::FUNCTIONS.iter())?;
    svc.raw_set("ERR", sentinel)?;
    module.raw_set("_service", svc)?;
    Ok((module, st))
}

/// A table of the functions `fns`, each returning `(sentinel, message)` for a bad
/// argument.
fn function_table<'a>(
    lua: &Lua,
    st: &Rc<State>,
    sentinel: &Value,
    fns: impl Iterator<Item = &'a (&'static str, api::ApiFn)>,
) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    for &(name, f) in fns {
        let st = st.clone();
        let sentinel = sentinel.clone();
        let func = lua.create_function(move |lua, vals: MultiValue| {
            let a = Args::new(name, vals);
            match f(lua, &st, &a) {
                Ok(v) => Ok(v),
                Err(Fail::Arg(msg)) => Ok(MultiValue::from_vec(vec![
                    sentinel.clone(),
                    Value::String(lua.create_string(msg)?),
                ])),
                Err(Fail::Lua(e)) => Err(e),
            }
        })?;
        raw.raw_set(name, func)?;
    }
    Ok(raw)
}

/// `_test_panic(where)` (see `hooks`; `_test_panic_raw()` is the raw closure).
fn test_panic_function(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_, place: String| match place.as_str() {
        "function" => panic!("test hook: panic in a wrapped function"),
        "route" => {
            hooks::arm_route_panic();
            Ok(())
        }
        other => Err(mlua::Error::runtime(format!(
            "unknown panic place '{other}'"
        ))),
    })
}

#[cfg(feature = "module")]
#[mlua::lua_module(name = "skysocket", skip_memory_check)]
fn skysocket(lua: &Lua) -> mlua::Result<Table> {
    open(lua)
}
