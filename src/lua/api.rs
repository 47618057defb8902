//! The functions of `require "skysocket"`.
//!
//! Conventions: a bad argument raises `bad argument #n to 'name' (...)`; a runtime
//! failure returns `nil, message` (functions that create sockets) or `false, message`
//! (operations on an id). Ids are plain integers.

use std::time::{Duration, Instant};

use mlua::{Lua, Table, Value};

use super::address::{resolve_one, split_host_port, unix_path};
use super::args::{false_msg, nil_msg, ret, Args, Fail, Ret};
use super::buffer::{self, Routed};
use super::crypt;
use super::dispatch;
use super::fast;
use super::service;
use super::state::State;
use crate::engine::{address, Error, SocketId};
use crate::sys::net::{Addr, ListenOptions};

/// Default listen backlog (Skynet's Lua default of 32 is too small under bursts).
pub const DEFAULT_BACKLOG: i32 = 1024;

pub type ApiFn = fn(&Lua, &State, &Args) -> Ret;

/// Every exported function, by name. Aliases appear once per name.
pub const FUNCTIONS: &[(&str, ApiFn)] = &[
    ("listen", listen),
    ("connect", connect),
    ("open", connect),
    ("start", start),
    ("close", close),
    ("shutdown", shutdown),
    ("close_write", close_write),
    ("pause", pause),
    ("resume", resume),
    ("nodelay", nodelay),
    ("keepalive", keepalive),
    ("sendlimit", sendlimit),
    ("keepopen", keepopen),
    ("udp", udp),
    ("udp_listen", udp_listen),
    ("udp_dial", udp_dial),
    ("udp_connect", udp_connect),
    ("sendto", sendto),
    ("udp_address", udp_address),
    ("info", info),
    ("netstat", info),
    ("resolve", resolve),
    ("timeout", timeout),
    ("cancel_timeout", cancel_timeout),
    ("dispatch", dispatch_handler),
    ("on_error", on_error),
    ("poll", poll),
    ("loop", run_loop),
    ("exit", exit),
    ("backend", backend),
    ("configure", configure),
    ("count", count),
    ("idle", idle),
    ("buffered", buffer::buffered),
    ("framed", buffer::framed),
    ("unbuffer", buffer::unbuffer),
    ("unread", buffer::unread),
    ("readframe", buffer::readframe),
    ("sendframe", buffer::sendframe),
    ("pack", buffer::pack),
    ("buffers", buffer::buffers),
    ("now", now),
    ("sha1", crypt::sha1),
    ("hmac_sha1", crypt::hmac_sha1),
    ("base64encode", crypt::base64encode),
    ("base64decode", crypt::base64decode),
    ("hexencode", crypt::hexencode),
    ("hexdecode", crypt::hexdecode),
    ("randomkey", crypt::randomkey),
    ("xor_str", crypt::xor_str),
];

/// `now()` → milliseconds (an integer) since the module was first loaded in this
/// process, from a monotonic clock: unaffected by `configure` and by changes of the
/// wall clock. (Skynet's `skynet.now()` is this divided by 10.)
fn now(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    let ms = CLOCK_START.get_or_init(Instant::now).elapsed().as_millis();
    ret(lua, ms.min(1 << 53) as i64)
}

static CLOCK_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Start `now()`'s clock (called when the module is opened).
pub fn start_clock() {
    CLOCK_START.get_or_init(Instant::now);
}

fn engine_err(lua: &Lua, e: Error) -> Ret {
    false_msg(lua, e)
}

fn ok_or_false(lua: &Lua, r: crate::engine::Result<()>) -> Ret {
    match r {
        Ok(()) => ret(lua, true),
        Err(e) => engine_err(lua, e),
    }
}

/// Read `(host, port)` starting at `pos`. Accepts `port` alone (number: 127.0.0.1),
/// `"unix:/path"`, `"host:port"`, or `host, port`. Returns the address and the next
/// argument position.
pub(super) fn host_port_args(
    a: &Args,
    pos: usize,
    default_host: &str,
) -> Result<(Result<Addr, String>, usize), Fail> {
    match a.get(pos) {
        Value::Integer(_) | Value::Number(_) => {
            let port = a.port(pos)?;
            Ok((resolve_one(default_host, port), pos + 1))
        }
        Value::String(_) => {
            let host = a.string(pos)?;
            if let Some(path) = unix_path(&host) {
                return Ok((Ok(Addr::Unix(path)), pos + 1));
            }
            if a.is_none(pos + 1) {
                if let Some((h, p)) = split_host_port(&host) {
                    return Ok((resolve_one(&h, p), pos + 1));
                }
            }
            let port = a.port(pos + 1)?;
            Ok((resolve_one(&host, port), pos + 2))
        }
        _ => Err(a.error(pos, format!("string expected, got {}", type_of(a, pos)))),
    }
}

pub(super) fn type_of(a: &Args, pos: usize) -> &'static str {
    if pos > a.len() {
        "no value"
    } else {
        a.get(pos).type_name()
    }
}

pub(super) fn addr_results(lua: &Lua, id: SocketId, local: Option<Addr>) -> Ret {
    match local {
        Some(Addr::Inet(sa)) => ret(lua, (id as i64, sa.ip().to_string(), sa.port())),
        Some(Addr::Unix(p)) => ret(lua, (id as i64, format!("unix:{}", p.display()))),
        None => ret(lua, id as i64),
    }
}

/// `listen(host, port [, backlog | options])` → `id, ip, port` or `nil, message`.
/// `options` is a table `{ backlog = n, reuseport = bool }`.
fn listen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, next) = host_port_args(a, 1, "127.0.0.1")?;
    let opts = listen_options(a, next)?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().listen(&addr, opts, 0);
    match r {
        Ok((id, local)) => addr_results(lua, id, local),
        Err(e) => nil_msg(lua, format!("listen {addr}: {e}")),
    }
}

/// The listen options at `pos`: nil, a backlog, or `{ backlog = n, reuseport = bool }`.
pub(super) fn listen_options(a: &Args, pos: usize) -> Result<ListenOptions, Fail> {
    let mut opts = ListenOptions {
        backlog: DEFAULT_BACKLOG,
        reuseport: false,
    };
    match a.get(pos) {
        Value::Nil => {}
        Value::Table(t) => {
            if let Some(b) = t
                .get::<Option<i64>>("backlog")
                .map_err(|_| a.error(pos, "backlog must be an integer"))?
            {
                opts.backlog = i32::try_from(b)
                    .ok()
                    .filter(|b| *b > 0)
                    .ok_or_else(|| a.error(pos, "backlog out of range"))?;
            }
            opts.reuseport = t
                .get::<Option<bool>>("reuseport")
                .ok()
                .flatten()
                .unwrap_or(false);
        }
        _ => {
            let b = a.integer(pos)?;
            opts.backlog = i32::try_from(b)
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| a.error(pos, "backlog out of range"))?;
        }
    }
    Ok(opts)
}

/// `connect(host, port)` → `id` (then `open` or `error` arrives) or `nil, message`.
/// Host names are resolved off the poll thread: the id comes back at once.
fn connect(lua: &Lua, st: &State, a: &Args) -> Ret {
    if let Value::String(_) = a.get(1) {
        let host = a.string(1)?;
        let (name, port) = match (unix_path(&host), a.is_none(2), split_host_port(&host)) {
            (Some(_), _, _) => (None, 0),
            (None, true, Some((h, p))) => (Some(h), p),
            (None, _, _) => (Some(host.clone()), a.port(2)?),
        };
        if let Some(name) = name {
            if address::parse_numeric(&name, port).is_none() {
                let r = st.engine.borrow_mut().connect_host(&name, port, 0);
                return match r {
                    Ok(id) => ret(lua, id as i64),
                    Err(e) => nil_msg(lua, format!("connect {name}:{port}: {e}")),
                };
            }
        }
    }
    let (addr, _) = host_port_args(a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().connect(&addr, 0);
    match r {
        Ok(id) => ret(lua, id as i64),
        Err(e) => nil_msg(lua, format!("connect {addr}: {e}")),
    }
}

/// `start(id [, handler])`: activate a listening/accepted socket; with a handler the
/// socket's messages go to it (accepted sockets inherit their listener's).
fn start(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let handler = a.opt_handler(2)?;
    let r = st.engine.borrow_mut().start(id, 0);
    if r.is_ok() {
        if let Some(h) = handler {
            st.set_handler(id as i64, h)?;
        }
    }
    ok_or_false(lua, r)
}

/// `close(id [, force])`: flush then close (`force`: drop unsent data).
fn close(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let force = a.opt_bool(2, false);
    let r = st.engine.borrow_mut().close(id, force);
    ok_or_false(lua, r)
}

/// `shutdown(id)`: Skynet's name for a forced close.
fn shutdown(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().close(id, true);
    ok_or_false(lua, r)
}

/// `close_write(id)`: half-close the write side once queued data is sent.
fn close_write(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().shutdown_write(id);
    ok_or_false(lua, r)
}

fn pause(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().pause(id);
    if r.is_ok() {
        buffer::on_user_pause(st, id, true);
    }
    ok_or_false(lua, r)
}

fn resume(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().resume(id);
    if r.is_ok() {
        buffer::on_user_pause(st, id, false);
    }
    ok_or_false(lua, r)
}

fn nodelay(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().set_nodelay(id, on);
    ok_or_false(lua, r)
}

fn keepalive(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().set_keepalive(id, on);
    ok_or_false(lua, r)
}

/// `sendlimit(id, bytes)`: a send that would queue more than `bytes` fails and drops
/// the socket (0 = no limit).
fn sendlimit(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let limit = a.integer(2)?;
    let limit = usize::try_from(limit).map_err(|_| a.error(2, "limit must be >= 0"))?;
    let r = st.engine.borrow_mut().set_limit(id, limit);
    ok_or_false(lua, r)
}

/// `keepopen(id [, on])`: after the peer's EOF keep the socket open for replies until
/// `close(id)` (default: it closes as soon as nothing is queued).
fn keepopen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().set_keep_open(id, on);
    ok_or_false(lua, r)
}

/// `udp([host, port])` → id: bound when an address is given; unbound sockets are
/// dual-stack IPv6 and can send to IPv4 and IPv6 peers.
fn udp(lua: &Lua, st: &State, a: &Args) -> Ret {
    let bind = if a.is_none(1) {
        None
    } else {
        match host_port_args(a, 1, "127.0.0.1")?.0 {
            Ok(addr) => Some(addr),
            Err(msg) => return nil_msg(lua, msg),
        }
    };
    let r = st.engine.borrow_mut().udp(bind.as_ref(), true, 0);
    match r {
        Ok(id) => ret(lua, id as i64),
        Err(e) => nil_msg(lua, format!("udp: {e}")),
    }
}

/// `udp_listen(host, port)` → id of a bound UDP socket.
fn udp_listen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, _) = host_port_args(a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().udp(Some(&addr), false, 0);
    match r {
        Ok(id) => ret(lua, id as i64),
        Err(e) => nil_msg(lua, format!("udp_listen {addr}: {e}")),
    }
}

/// `udp_dial(host, port)` → id of an unbound UDP socket connected to that peer.
fn udp_dial(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, _) = host_port_args(a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let v6 = matches!(addr, Addr::Inet(sa) if sa.is_ipv6());
    let mut eng = st.engine.borrow_mut();
    let id = match eng.udp(None, v6, 0) {
        Ok(id) => id,
        Err(e) => return nil_msg(lua, format!("udp_dial: {e}")),
    };
    if let Err(e) = eng.udp_connect(id, &addr) {
        let _ = eng.close(id, true);
        return nil_msg(lua, format!("udp_dial {addr}: {e}"));
    }
    ret(lua, id as i64)
}

/// `udp_connect(id, host, port)`: set the default peer.
fn udp_connect(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let (addr, _) = host_port_args(a, 2, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return false_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().udp_connect(id, &addr);
    ok_or_false(lua, r)
}

/// `sendto(id, address, data)`: `address` in the compact form a `udp` callback gets
/// (or `nil` for the connected peer).
fn sendto(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let to = if a.is_none(2) {
        None
    } else {
        let raw = a.bytes(2)?;
        let sa =
            address::decode_compact(&raw).ok_or_else(|| a.error(2, "malformed UDP address"))?;
        Some(Addr::Inet(sa))
    };
    let r = match a.get(3) {
        Value::String(s) => st
            .engine
            .borrow_mut()
            .sendto(id, to.as_ref(), &s.as_bytes()),
        _ => {
            let data = a.bytes(3)?;
            st.engine.borrow_mut().sendto(id, to.as_ref(), &data)
        }
    };
    ok_or_false(lua, r)
}

/// `udp_address(address)` → `ip, port`.
fn udp_address(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let raw = a.bytes(1)?;
    match address::decode_compact(&raw) {
        Some(sa) => ret(lua, (sa.ip().to_string(), sa.port())),
        None => Err(a.error(1, "malformed UDP address")),
    }
}

/// `info()` → array of `{ id, type, state, read, write, rtime, wtime, wbuffer, paused,
/// peer, sock }` tables.
fn info(lua: &Lua, st: &State, _a: &Args) -> Ret {
    let all = st.engine.borrow().info_all();
    let out = lua.create_table_with_capacity(all.len(), 0)?;
    for (i, s) in all.iter().enumerate() {
        let t: Table = lua.create_table_with_capacity(0, 12)?;
        t.raw_set("id", s.id as i64)?;
        t.raw_set("type", s.kind)?;
        t.raw_set("state", s.state)?;
        t.raw_set("read", s.read as i64)?;
        t.raw_set("write", s.written as i64)?;
        t.raw_set("rtime", s.rtime as i64)?;
        t.raw_set("wtime", s.wtime as i64)?;
        t.raw_set("wbuffer", s.queued as i64)?;
        t.raw_set("paused", s.paused)?;
        if s.tls {
            t.raw_set("tls", true)?;
        }
        if let Some(p) = &s.peer {
            t.raw_set("peer", p.as_str())?;
        }
        if let Some(l) = &s.local {
            t.raw_set("sock", l.as_str())?;
        }
        if let Some(on) = s.nodelay {
            t.raw_set("nodelay", on)?;
        }
        out.raw_set(i + 1, t)?;
    }
    ret(lua, out)
}

/// `resolve(host)` → array of address strings, or `nil, message` (blocks the caller
/// for the lookup). `resolve(host, fn)` returns at once and later calls `fn(addresses)`
/// or `fn(nil, message)` from the loop; the lookup runs on a resolver thread.
fn resolve(lua: &Lua, st: &State, a: &Args) -> Ret {
    let host = a.string(1)?;
    if !a.is_none(2) {
        let f = a.function(2)?;
        let req = st.engine.borrow_mut().resolve_async(&host, 0);
        st.resolves.raw_set(req as i64, f)?;
        return ret(lua, true);
    }
    let r = st.engine.borrow().resolve(&host);
    match r {
        Ok(ips) => {
            let mut out: Vec<String> = Vec::new();
            for ip in ips {
                let s = ip.to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            ret(lua, out)
        }
        Err(e) => nil_msg(lua, format!("cannot resolve '{host}': {e}")),
    }
}

/// `timeout(ms, fn)` → timer id; `fn()` runs once after `ms` milliseconds.
fn timeout(lua: &Lua, st: &State, a: &Args) -> Ret {
    let ms = a.number(1)?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(a.error(1, "timeout must be a finite number >= 0"));
    }
    let f = a.function(2)?;
    let tid = match st.svc.get() {
        // A service's timers come from the runtime, as mailbox messages.
        Some(svc) if st.in_service.get() => {
            crate::service::Runtime::global().add_timer(svc.id(), millis(ms))
        }
        _ => st.engine.borrow_mut().add_timer(millis(ms)),
    };
    st.timers.raw_set(tid as i64, f)?;
    ret(lua, tid as i64)
}

/// A finite, non-negative number of milliseconds as a `Duration`, saturating at
/// `Duration::MAX` (`from_secs_f64` would panic past `u64::MAX` seconds).
fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

/// `cancel_timeout(timer)` → true if it was pending.
fn cancel_timeout(lua: &Lua, st: &State, a: &Args) -> Ret {
    let tid = a.integer(1)?;
    let was = if st.in_service.get() {
        // The runtime's timer still fires; with its function gone it does nothing.
        !st.timers.raw_get::<Value>(tid)?.is_nil()
    } else {
        tid > 0 && st.engine.borrow_mut().cancel_timer(tid as u64)
    };
    st.timers.raw_set(tid, Value::Nil)?;
    ret(lua, was)
}

/// `dispatch(handler)`: the module-wide handler; returns the previous one.
fn dispatch_handler(lua: &Lua, st: &State, a: &Args) -> Ret {
    let h = a.opt_handler(1)?.unwrap_or(Value::Nil);
    let old = st.default_handler.replace(h);
    st.handler_epoch.set(st.handler_epoch.get() + 1);
    ret(lua, old)
}

/// `on_error(fn)`: where callback errors go (nil: stderr); returns the previous hook.
fn on_error(lua: &Lua, st: &State, a: &Args) -> Ret {
    let f = if a.is_none(1) {
        None
    } else {
        Some(a.function(1)?)
    };
    let old = st.on_error.replace(f);
    ret(lua, old)
}

/// One poll step and the delivery of its messages. Returns how many were delivered.
fn step(lua: &Lua, st: &State, timeout: Option<Duration>) -> Result<usize, Fail> {
    let mut batch = st.batch.borrow_mut();
    {
        let mut eng = st.engine.borrow_mut();
        if timeout.is_none() && eng.is_idle() && !service::root_waits(st) {
            return Ok(0);
        }
        // Without a timeout, wait until there is something to deliver: readiness that
        // yields no message (a flush, a TLS handshake round trip) is not "something";
        // mail for the root service is (its arrival wakes the poll).
        loop {
            eng.poll(&mut batch, timeout).map_err(|e| {
                Fail::Lua(mlua::Error::RuntimeError(format!(
                    "skysocket poll failed: {e}"
                )))
            })?;
            if !batch.is_empty()
                || timeout.is_some()
                || service::root_has_mail(st)
                || (eng.is_idle() && !service::root_waits(st))
            {
                break;
            }
        }
    }
    st.dispatching.set(true);
    let mut result = deliver_batch(lua, st, &batch);
    let mut mail = 0;
    if result.is_ok() && st.svc.get().is_some() {
        match service::deliver_root_mail(lua, st) {
            Ok(n) => mail = n,
            Err(e) => result = Err(e),
        }
    }
    st.dispatching.set(false);
    result?;
    Ok(batch.len() + mail)
}

/// Deliver a batch in order: runs of plain `data` messages through the raw fast path,
/// everything else through the high-level dispatcher.
fn deliver_batch(lua: &Lua, st: &State, batch: &crate::engine::Batch) -> mlua::Result<()> {
    let msgs = batch.messages();
    let route = |id: u64, data: &[u8]| {
        if st.buffers.borrow().is_empty() {
            Routed::Normal
        } else {
            buffer::on_data(st, id, data)
        }
    };
    let mut i = 0;
    while i < msgs.len() {
        let (next, errors) = fast::deliver_data_run(lua, st, batch, i, &route)?;
        for e in errors {
            dispatch::report(st, e);
        }
        if next > i {
            i = next;
            continue;
        }
        dispatch::deliver(lua, st, batch, &msgs[i])?;
        i += 1;
    }
    Ok(())
}

fn not_in_callback(st: &State, a: &Args) -> Result<(), Fail> {
    if st.in_service.get() {
        return Err(Fail::Arg(format!(
            "'{}' cannot be called inside a service (its worker delivers its messages)",
            a.name()
        )));
    }
    if st.dispatching.get() {
        return Err(Fail::Arg(format!(
            "'{}' cannot be called from inside a callback",
            a.name()
        )));
    }
    Ok(())
}

/// `poll([timeout_ms])`: wait at most `timeout_ms` (nil: until something happens;
/// returns at once when nothing is open) and deliver what arrived.
fn poll(lua: &Lua, st: &State, a: &Args) -> Ret {
    not_in_callback(st, a)?;
    let timeout = if a.is_none(1) {
        None
    } else {
        let ms = a.number(1)?;
        if ms.is_nan() {
            return Err(a.error(1, "timeout is NaN"));
        }
        if ms < 0.0 || ms.is_infinite() {
            None
        } else {
            Some(millis(ms))
        }
    };
    let n = step(lua, st, timeout)?;
    ret(lua, n as i64)
}

/// `loop()`: deliver messages until `exit()` is called or nothing is left to wait on.
fn run_loop(lua: &Lua, st: &State, a: &Args) -> Ret {
    not_in_callback(st, a)?;
    st.exit.set(false);
    while !st.exit.get() {
        if st.engine.borrow().is_idle() && !service::root_waits(st) {
            break;
        }
        step(lua, st, None)?;
    }
    st.exit.set(false);
    ret(lua, true)
}

/// `exit()`: make `loop()` return after the current message.
fn exit(lua: &Lua, st: &State, _a: &Args) -> Ret {
    st.exit.set(true);
    ret(lua, ())
}

/// `configure([settings])`: with a table, rebuild the engine with these settings (only
/// while no socket or timer exists); always returns the settings now in force.
fn configure(lua: &Lua, st: &State, a: &Args) -> Ret {
    not_in_callback(st, a)?;
    if !a.is_none(1) {
        let Value::Table(t) = a.get(1) else {
            return Err(a.error(1, format!("table expected, got {}", type_of(a, 1))));
        };
        let mut c = st.engine.borrow().config().clone();
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            let key = match &k {
                Value::String(s) => s.to_string_lossy(),
                _ => return Err(a.error(1, "setting names must be strings")),
            };
            if key == "nodelay" {
                let Value::Boolean(on) = v else {
                    return Err(a.error(1, "setting 'nodelay' must be a boolean"));
                };
                c.nodelay = on;
                continue;
            }
            let n = match v {
                Value::Integer(i) => i,
                Value::Number(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                _ => return Err(a.error(1, format!("setting '{key}' must be an integer"))),
            };
            let positive = || {
                usize::try_from(n)
                    .ok()
                    .filter(|&v| v > 0)
                    .ok_or_else(|| a.error(1, format!("setting '{key}' must be > 0")))
            };
            match key.as_str() {
                "max_sockets" => c.max_sockets = positive()?.min(1 << 30),
                "max_read" => c.max_read = positive()?.max(c.min_read),
                "warn_size" => c.warn_size = positive()?,
                "write_limit" => {
                    c.default_write_limit = usize::try_from(n)
                        .map_err(|_| a.error(1, "setting 'write_limit' must be >= 0"))?
                }
                "write_budget" => {
                    c.write_budget = usize::try_from(n)
                        .map_err(|_| a.error(1, "setting 'write_budget' must be >= 0"))?
                }
                "close_timeout" => {
                    let ms = u64::try_from(n)
                        .map_err(|_| a.error(1, "setting 'close_timeout' must be >= 0"))?;
                    c.close_timeout = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "accept_burst" => c.accept_burst = positive()?,
                "resolver_threads" => c.resolver_threads = positive()?.min(64),
                "tls_handshake_timeout" => {
                    let ms = u64::try_from(n)
                        .map_err(|_| a.error(1, "setting 'tls_handshake_timeout' must be >= 0"))?;
                    c.tls_handshake_timeout = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "first_tag" => {
                    c.first_tag = u64::try_from(n)
                        .map_err(|_| a.error(1, "setting 'first_tag' must be >= 0"))?
                }
                other => return Err(a.error(1, format!("unknown setting '{other}'"))),
            }
        }
        if !st.engine.borrow().is_idle() {
            return false_msg(lua, "configure: close every socket and timer first");
        }
        let engine = crate::engine::Engine::new(c)
            .map_err(|e| Fail::Lua(mlua::Error::RuntimeError(format!("configure: {e}"))))?;
        *st.engine.borrow_mut() = engine;
        service::engine_replaced(st);
    }
    let eng = st.engine.borrow();
    let c = eng.config();
    let t = lua.create_table()?;
    t.raw_set("max_sockets", c.max_sockets as i64)?;
    t.raw_set("max_read", c.max_read as i64)?;
    t.raw_set("warn_size", c.warn_size as i64)?;
    t.raw_set("write_limit", c.default_write_limit as i64)?;
    t.raw_set("write_budget", c.write_budget as i64)?;
    t.raw_set(
        "close_timeout",
        c.close_timeout.map_or(0, |d| d.as_millis() as i64),
    )?;
    t.raw_set("accept_burst", c.accept_burst as i64)?;
    t.raw_set("nodelay", c.nodelay)?;
    t.raw_set("first_tag", c.first_tag as i64)?;
    t.raw_set("resolver_threads", c.resolver_threads as i64)?;
    t.raw_set(
        "tls_handshake_timeout",
        c.tls_handshake_timeout.map_or(0, |d| d.as_millis() as i64),
    )?;
    ret(lua, t)
}

fn backend(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    ret(lua, crate::sys::backend_name())
}

/// `idle()` → true when no message can arrive any more without a new call: no open
/// socket, no timer, no undelivered message, no host-name lookup in flight (when
/// `loop()` returns). A scheduler uses it to tell "nothing to wait for" from a poll
/// that only flushed writes.
fn idle(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(
        lua,
        st.engine.borrow().is_idle() && !service::root_waits(st),
    )
}

/// `count()` → number of open sockets.
fn count(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, st.engine.borrow().socket_count() as i64)
}
