//! The Rust half of `skysocket.service` (the `_service` table of the module; the
//! public API is `lua/skysocket/service.lua`).
//!
//! A service is a Lua state made here, with its own globals, `require` cache and
//! module instance; the runtime (`crate::service`) runs it on a worker thread. Values
//! cross between states as [`Val`] trees: a message is copied out of the sender's
//! state and built again in the receiver's. The root service is the state that first
//! used the API without being a service: its mailbox is drained by its own poll loop
//! (`deliver_root_mail`), woken through the engine's waker.

use std::rc::Rc;
use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::api::ApiFn;
use super::args::{false_msg, nil_msg, ret, Args, Fail, Ret};
use super::dispatch;
use super::fast::{self, Sendable};
use super::shared;
use super::state::State;
use crate::service::{Body, Envelope, Kind, Runtime, Service, Val};

/// The `_service` functions.
pub const FUNCTIONS: &[(&str, ApiFn)] = &[
    ("self", svc_self),
    ("new", svc_new),
    ("spawn", svc_new),
    ("send", send),
    ("call", call),
    ("reply", reply),
    ("register", register),
    ("query", query),
    ("kill", kill),
    ("exit", exit),
    ("threads", threads),
    ("handler", handler),
    ("root", root),
    ("count", count),
    ("is_service", is_service),
];

/// Messages of the root taken per poll (the rest waits for the next one).
const ROOT_BATCH: usize = 256;
/// Deepest table nesting that crosses.
const MAX_DEPTH: usize = 100;

fn rt() -> &'static Runtime {
    Runtime::global()
}

/// This state's service, registering it as the root on first use.
fn me(st: &State) -> Result<Arc<Service>, Fail> {
    if let Some(s) = st.svc.get() {
        return Ok(s.clone());
    }
    let handle = Arc::new(parking_lot::Mutex::new(st.engine.borrow().handle()));
    let target = handle.clone();
    // Until services exist the root polls its engine, whose waker interrupts that
    // poll; afterwards it waits on the bell (`shared.rs`).
    let wake = move || {
        if shared::active() {
            shared::ROOT_BELL.ring();
        } else {
            target.lock().wake();
        }
    };
    let svc = rt().register_root(Box::new(wake)).map_err(|id| {
        Fail::Lua(mlua::Error::RuntimeError(format!(
            "skysocket.service: another Lua state is the root service (service {id})"
        )))
    })?;
    *st.svc_wake.borrow_mut() = Some(handle);
    let _ = st.svc.set(svc.clone());
    Ok(svc)
}

/// The engine was rebuilt (`configure`): wake the new one from now on.
pub fn engine_replaced(st: &State) {
    if let Some(h) = st.svc_wake.borrow().as_ref() {
        *h.lock() = st.engine.borrow().handle();
    }
}

// ---- values ----

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

fn push_key(path: &mut String, k: &Value) {
    use std::fmt::Write;
    match k {
        Value::String(s) => {
            let b = s.as_bytes();
            let ident = !b.is_empty()
                && !b[0].is_ascii_digit()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if ident {
                path.push('.');
                path.push_str(&String::from_utf8_lossy(&b));
            } else {
                let _ = write!(path, "[{:?}]", String::from_utf8_lossy(&b));
            }
        }
        Value::Integer(i) => {
            let _ = write!(path, "[{i}]");
        }
        Value::Number(n) => {
            let _ = write!(path, "[{n}]");
        }
        Value::Boolean(b) => {
            let _ = write!(path, "[{b}]");
        }
        _ => path.push_str("[?]"),
    }
}

fn cannot(path: &str, what: &str) -> String {
    if path.is_empty() {
        format!("{what} cannot cross services")
    } else {
        format!("{path}: {what} cannot cross services")
    }
}

/// Copy a Lua value out of its state; `Err(text)` names the offending value's path.
fn to_val(
    v: &Value,
    path: &mut String,
    seen: &mut Vec<usize>,
) -> mlua::Result<Result<Val, String>> {
    Ok(Ok(match v {
        Value::Nil => Val::Nil,
        Value::Boolean(b) => Val::Bool(*b),
        Value::Integer(i) => Val::Int(*i),
        Value::Number(n) => Val::Num(*n),
        Value::String(s) => Val::Str(s.as_bytes().to_vec().into()),
        Value::Table(t) => {
            let p = t.to_pointer() as usize;
            if seen.contains(&p) {
                return Ok(Err(cannot(path, "a table cycle")));
            }
            if seen.len() >= MAX_DEPTH {
                return Ok(Err(cannot(path, "a table nested this deep")));
            }
            seen.push(p);
            let mut items = Vec::new();
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let key = match &k {
                    Value::Boolean(_) | Value::Integer(_) | Value::Number(_) | Value::String(_) => {
                        match to_val(&k, path, seen)? {
                            Ok(x) => x,
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    other => {
                        let what = format!("a {} key", type_name(other));
                        return Ok(Err(cannot(path, &what)));
                    }
                };
                let len = path.len();
                push_key(path, &k);
                let val = match to_val(&v, path, seen)? {
                    Ok(x) => x,
                    Err(e) => return Ok(Err(e)),
                };
                path.truncate(len);
                items.push((key, val));
            }
            seen.pop();
            Val::Table(items)
        }
        other => return Ok(Err(cannot(path, type_name(other)))),
    }))
}

/// Arguments `from..` of `a` as values; an error names the argument as the caller
/// counts it (`pos - shift`).
fn collect(a: &Args, from: usize, shift: usize) -> Result<Vec<Val>, Fail> {
    let mut out = Vec::with_capacity(a.len().saturating_sub(from - 1));
    let mut path = String::new();
    let mut seen = Vec::new();
    for pos in from..=a.len() {
        match to_val(a.get(pos), &mut path, &mut seen)? {
            Ok(v) => out.push(v),
            Err(e) => return Err(a.error(pos - shift, e)),
        }
    }
    Ok(out)
}

/// Build a value in `lua`.
fn to_lua(lua: &Lua, v: Val) -> mlua::Result<Value> {
    Ok(match v {
        Val::Nil => Value::Nil,
        Val::Bool(b) => Value::Boolean(b),
        Val::Int(i) => Value::Integer(i),
        Val::Num(n) => Value::Number(n),
        Val::Str(s) => Value::String(lua.create_string(&s)?),
        Val::Table(items) => {
            let narr = items
                .iter()
                .filter(|(k, _)| matches!(k, Val::Int(_)))
                .count();
            let t = lua.create_table_with_capacity(narr, items.len() - narr)?;
            for (k, v) in items {
                t.raw_set(to_lua(lua, k)?, to_lua(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

// ---- delivery ----

/// Hand one mailbox message to `st`'s `deliver(kind, from, session, ...)`: kind 0
/// start (`chunk, args...`), 1 send, 2 call, 3 reply (`ok, values...`). Timers call
/// their function directly.
fn deliver_env(
    lua: &Lua,
    st: &State,
    env: Envelope,
    chunk: &mut Option<Function>,
) -> mlua::Result<()> {
    if env.kind == Kind::Socket {
        if let Some(msg) = shared::decode(&env.args) {
            if let (
                crate::engine::Msg::Data { id, data, .. }
                | crate::engine::Msg::Udp { id, data, .. },
                Some(sh),
            ) = (msg, shared::get())
            {
                sh.delivered(id, data.len());
            }
            super::run::deliver_one(lua, st, msg)?;
        }
        return Ok(());
    }
    if let Kind::Timer(id) = env.kind {
        if let Some(f) = st.timers.take(id)? {
            if let Err(e) = f.call::<()>(()) {
                dispatch::report(st, dispatch::error_text(&e));
            }
        }
        return Ok(());
    }
    let Some(deliver) = st.svc_deliver.borrow().clone() else {
        return Ok(());
    };
    let mut args = Vec::with_capacity(env.args.len() + 4);
    let from = Value::Integer(env.from as i64);
    match env.kind {
        Kind::Start => {
            args.extend([Value::Integer(0), from, Value::Integer(0)]);
            args.push(chunk.take().map_or(Value::Nil, Value::Function));
        }
        Kind::Send => args.extend([Value::Integer(1), from, Value::Integer(0)]),
        Kind::Call(s) => args.extend([Value::Integer(2), from, Value::Integer(s)]),
        Kind::Reply { session, ok } => args.extend([
            Value::Integer(3),
            from,
            Value::Integer(session),
            Value::Boolean(ok),
        ]),
        Kind::Timer(_) | Kind::Socket => {}
    }
    for v in env.args {
        args.push(to_lua(lua, v)?);
    }
    if let Err(e) = deliver.call::<()>(MultiValue::from_vec(args)) {
        dispatch::report(st, dispatch::error_text(&e));
    }
    Ok(())
}

fn run_step(st: &State) {
    let step = st.svc_step.borrow().clone();
    if let Some(f) = step {
        if let Err(e) = f.call::<()>(()) {
            dispatch::report(st, dispatch::error_text(&e));
        }
    }
}

/// Whether the root must keep waiting for mail: it has some, or services exist that
/// could send it some. False (one load) for a state that never used services.
pub fn root_waits(st: &State) -> bool {
    match st.svc.get() {
        None => false,
        Some(s) => !st.in_service.get() && (s.has_mail() || rt().count() > 1),
    }
}

/// Whether the root has mail (one load when it is not a root).
pub fn root_has_mail(st: &State) -> bool {
    st.svc.get().is_some_and(|s| s.has_mail())
}

/// Deliver the root's mail (from its poll). Returns the number of messages.
pub fn deliver_root_mail(lua: &Lua, st: &State) -> mlua::Result<usize> {
    let Some(svc) = st.svc.get() else {
        return Ok(0);
    };
    if st.in_service.get() || !svc.has_mail() {
        return Ok(0);
    }
    // One at a time: what is not delivered yet stays in the mailbox, where an
    // `abandon` can still take a socket's messages out.
    let mut n = 0;
    let mut none = None;
    while n < ROOT_BATCH {
        let Some(env) = rt().take_mail(svc, 1).pop() else {
            break;
        };
        n += 1;
        deliver_env(lua, st, env, &mut none)?;
    }
    run_step(st);
    Ok(n)
}

struct Inner {
    lua: Lua,
    st: Rc<State>,
    chunk: Option<Function>,
}

/// A service's Lua state as the runtime runs it.
struct LuaBody(Sendable<Inner>);

impl Drop for LuaBody {
    fn drop(&mut self) {
        // The service ended: the sockets it still owns are closed.
        if let (Some(sh), Some(svc)) = (shared::get(), self.0 .0.st.svc.get()) {
            sh.close_owned(svc.id());
        }
    }
}

impl Body for LuaBody {
    fn handle(&mut self, _rt: &Runtime, _svc: &Arc<Service>, env: Envelope) {
        let inner = &mut self.0 .0;
        if let Err(e) = deliver_env(&inner.lua, &inner.st, env, &mut inner.chunk) {
            dispatch::report(&inner.st, dispatch::error_text(&e));
        }
    }

    fn end_turn(&mut self, _rt: &Runtime, _svc: &Arc<Service>) {
        run_step(&self.0 .0.st);
    }
}

// ---- the functions ----

fn svc_self(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, me(st)?.id() as i64)
}

fn target(a: &Args, pos: usize) -> Result<u64, Fail> {
    let id = a.integer(pos)?;
    if id <= 0 {
        return Err(a.error(pos, "service id must be positive"));
    }
    Ok(id as u64)
}

/// `new(code, chunkname, ...)` → id | nil, message: a service running `code` with the
/// given arguments (crossing values; argument #2 as the caller counts is the first).
fn svc_new(lua: &Lua, st: &State, a: &Args) -> Ret {
    let code = a.bytes(1)?;
    let name = a.string(2)?;
    let args = collect(a, 3, 1)?;
    let parent = me(st)?;
    // The first service: the engine becomes the process engine, polled by the
    // socket thread; every state, the root included, reaches it as a remote view.
    let handle = if st.in_service.get() {
        shared::get().map(|s| s.handle().clone())
    } else {
        let mut eng = st.engine.borrow_mut();
        shared::start(&mut eng).ok().map(|s| s.handle().clone())
    };
    let Some(handle) = handle else {
        return nil_msg(lua, "skysocket.service: the socket thread could not start");
    };
    let package: Option<Table> = lua.globals().get("package").ok();
    let path: Option<mlua::LuaString> = package.as_ref().and_then(|p| p.get("path").ok());
    let cpath: Option<mlua::LuaString> = package.as_ref().and_then(|p| p.get("cpath").ok());
    crate::sys::dl::pin_self();
    let svc = rt().reserve();
    let child = fast::new_service_lua();
    let made = (|| -> mlua::Result<Result<(Rc<State>, Function), String>> {
        let pkg: Table = child.globals().get("package")?;
        if let Some(p) = &path {
            pkg.set("path", child.create_string(p.as_bytes())?)?;
        }
        if let Some(p) = cpath {
            pkg.set("cpath", child.create_string(p.as_bytes())?)?;
        }
        let (module, cst) = super::build(&child, State::with_engine(&child, handle.engine())?)?;
        cst.in_service.set(true);
        let _ = cst.svc.set(svc.clone());
        let loaded: Table = pkg.get("loaded")?;
        loaded.set("skysocket", module)?;
        let chunk = match child.load(&code[..]).set_name(&name).into_function() {
            Ok(f) => f,
            Err(e) => return Ok(Err(dispatch::error_text(&e))),
        };
        if let Some(p) = &path {
            preload_compiled(&child, &pkg, &p.to_string_lossy())?;
        }
        let boot = child
            .load("require 'skysocket.service'")
            .set_name("=skysocket.service boot")
            .exec();
        if let Err(e) = boot {
            return Ok(Err(dispatch::error_text(&e)));
        }
        if cst.svc_deliver.borrow().is_none() {
            return Ok(Err("skysocket.service did not install its handler".into()));
        }
        // Errors go where the creator's go, until the service sets its own hook.
        Ok(Ok((cst, chunk)))
    })();
    let (cst, chunk) = match made {
        Ok(Ok(x)) => x,
        Ok(Err(msg)) => return nil_msg(lua, msg),
        Err(e) => return nil_msg(lua, dispatch::error_text(&e)),
    };
    let _ = parent;
    let id = svc.id();
    let body = LuaBody(Sendable(Inner {
        lua: child,
        st: cst,
        chunk: Some(chunk),
    }));
    rt().start(&svc, Box::new(body), args);
    ret(lua, id as i64)
}

/// The Lua modules every service loads at start.
const BOOT_MODULES: &[&str] = &["skysocket.compat", "skysocket.sched", "skysocket.service"];

/// module name and `package.path` -> (file, bytecode).
type CodeCache = std::collections::HashMap<(String, String), (String, Vec<u8>)>;

/// Put the boot modules into `package.preload` of a new service state as bytecode
/// compiled once per process: compiling their source made up half the cost of
/// starting a service. They are found along `package.path` as `require` would; a
/// module not found is left to `require` (which reports it).
fn preload_compiled(child: &Lua, pkg: &Table, path: &str) -> mlua::Result<()> {
    static CACHE: std::sync::OnceLock<parking_lot::Mutex<CodeCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let preload: Table = pkg.get("preload")?;
    for &name in BOOT_MODULES {
        let key = (name.to_string(), path.to_string());
        let hit = cache.lock().get(&key).cloned();
        let (file, code) = match hit {
            Some(x) => x,
            None => {
                let rel = name.replace('.', "/");
                let Some(file) = path
                    .split(';')
                    .map(|t| t.replace('?', &rel))
                    .find(|f| std::path::Path::new(f).is_file())
                else {
                    continue;
                };
                let Ok(src) = std::fs::read(&file) else {
                    continue;
                };
                let f = child
                    .load(&src[..])
                    .set_name(format!("@{file}"))
                    .into_function()?;
                let x = (file, f.dump(false));
                cache.lock().insert(key, x.clone());
                x
            }
        };
        let f = child
            .load(&code[..])
            .set_name(format!("@{file}"))
            .set_mode(mlua::chunk::ChunkMode::Binary)
            .into_function()?;
        preload.set(name, f)?;
    }
    Ok(())
}

/// `send(to, ...)` → true | false, "service N is dead".
fn send(lua: &Lua, st: &State, a: &Args) -> Ret {
    let to = target(a, 1)?;
    let args = collect(a, 2, 0)?;
    let from = me(st)?.id();
    match rt().post(
        to,
        Envelope {
            from,
            kind: Kind::Send,
            args,
        },
    ) {
        Ok(()) => ret(lua, true),
        Err(e) => false_msg(lua, e),
    }
}

/// `call(to, session, ...)` → true | false, message (the reply comes as a message).
fn call(lua: &Lua, st: &State, a: &Args) -> Ret {
    let to = target(a, 1)?;
    let session = a.integer(2)?;
    let args = collect(a, 3, 1)?;
    let from = me(st)?.id();
    match rt().call(from, to, session, args) {
        Ok(()) => ret(lua, true),
        Err(e) => false_msg(lua, e),
    }
}

/// `reply(to, session, ok, ...)` → true (false: that call is not open).
fn reply(lua: &Lua, st: &State, a: &Args) -> Ret {
    let to = target(a, 1)?;
    let session = a.integer(2)?;
    let ok = matches!(a.get(3), Value::Boolean(true));
    let args = collect(a, 4, 3)?;
    let svc = me(st)?;
    ret(lua, rt().reply(&svc, to, session, ok, args))
}

fn register(lua: &Lua, st: &State, a: &Args) -> Ret {
    let name = a.string(1)?;
    let id = me(st)?.id();
    rt().register(&name, id);
    ret(lua, true)
}

fn query(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let name = a.string(1)?;
    ret(lua, rt().query(&name).map(|id| id as i64))
}

/// `kill(id)` → true | false, message. Killing oneself is `exit()`.
fn kill(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = target(a, 1)?;
    if let Some(s) = st.svc.get() {
        if s.id() == id && st.in_service.get() {
            s.request_exit();
            return ret(lua, true);
        }
    }
    if rt().root() == Some(id) {
        return false_msg(lua, "the root service cannot be killed");
    }
    if rt().kill(id) {
        ret(lua, true)
    } else {
        false_msg(lua, format!("service {id} is dead"))
    }
}

fn exit(lua: &Lua, st: &State, _a: &Args) -> Ret {
    if st.in_service.get() {
        if let Some(s) = st.svc.get() {
            s.request_exit();
        }
    }
    ret(lua, ())
}

/// `threads([n])` → the pool size; with `n`, set it (before the first service only:
/// `false, message` after).
fn threads(lua: &Lua, _st: &State, a: &Args) -> Ret {
    if !a.is_none(1) {
        let n = a.integer(1)?;
        if !(1..=1024).contains(&n) {
            return Err(a.error(1, "thread count must be in 1..1024"));
        }
        if let Err(k) = rt().set_threads(n as usize) {
            return false_msg(lua, format!("the worker pool has started ({k} threads)"));
        }
    }
    ret(lua, rt().threads() as i64)
}

/// `handler(deliver, step)`: install the Lua side (registers the root on first use).
fn handler(lua: &Lua, st: &State, a: &Args) -> Ret {
    let deliver = a.function(1)?;
    let step = a.function(2)?;
    me(st)?;
    *st.svc_deliver.borrow_mut() = Some(deliver);
    *st.svc_step.borrow_mut() = Some(step);
    ret(lua, ())
}

fn root(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    ret(lua, rt().root().map(|id| id as i64))
}

fn count(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    ret(lua, rt().count() as i64)
}

fn is_service(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, st.in_service.get())
}
