//! The functions of `require "skysocket"`.
//!
//! Conventions: a bad argument raises `bad argument #n to 'name' (...)`; a runtime
//! failure returns `nil, message` (functions that create sockets) or `false, message`
//! (operations on an id). Ids are plain integers.

use std::time::Instant;

use mlua::{Lua, Table, Value};

use super::address::{resolve_one, split_host_port, unix_path};
use super::args::{false_msg, nil_msg, ret, Args, Fail, Ret};
use super::buffer;
use super::buffer_api;
use super::codec;
use super::configure::configure;
use super::crypt;
use super::http_head;
use super::run::{cancel_timeout, dispatch_handler, exit, on_error, poll, run_loop, timeout};
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
    ("bind", bind),
    ("start", start),
    ("abandon", abandon),
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
    ("buffered", buffer_api::buffered),
    ("framed", buffer_api::framed),
    ("unbuffer", buffer_api::unbuffer),
    ("unread", buffer_api::unread),
    ("readframe", buffer_api::readframe),
    ("sendframe", buffer_api::sendframe),
    ("pack", buffer_api::pack),
    ("buffers", buffer_api::buffers),
    ("now", now),
    ("sha1", crypt::sha1),
    ("hmac_sha1", crypt::hmac_sha1),
    ("base64encode", crypt::base64encode),
    ("base64decode", crypt::base64decode),
    ("hexencode", crypt::hexencode),
    ("hexdecode", crypt::hexdecode),
    ("randomkey", crypt::randomkey),
    ("xor_str", crypt::xor_str),
    ("ws_mask", codec::ws_mask),
    ("utf8_valid", codec::utf8_valid),
    ("http_request_head", http_head::http_request_head),
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
    st: &State,
    a: &Args,
    pos: usize,
    default_host: &str,
) -> Result<(Result<Addr, String>, usize), Fail> {
    // Names go through the engine's resolver (`Config::resolver`), like every other
    // lookup of the module.
    let resolve_one = |host: &str, port: u16| {
        resolve_one(host, port, |h| st.engine.borrow_mut().ops().resolve(h))
    };
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
    let (addr, next) = host_port_args(st, a, 1, "127.0.0.1")?;
    let opts = listen_options(a, next)?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().ops().listen(&addr, opts, st.owner());
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
                let r = st
                    .engine
                    .borrow_mut()
                    .ops()
                    .connect_host(&name, port, st.owner());
                return match r {
                    Ok(id) => {
                        st.made(id);
                        ret(lua, id as i64)
                    }
                    Err(e) => nil_msg(lua, format!("connect {name}:{port}: {e}")),
                };
            }
        }
    }
    let (addr, _) = host_port_args(st, a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().ops().connect(&addr, st.owner());
    match r {
        Ok(id) => {
            st.made(id);
            ret(lua, id as i64)
        }
        Err(e) => nil_msg(lua, format!("connect {addr}: {e}")),
    }
}

/// `bind(fd)` → `id` (`open` with "binding" follows) or `nil, message`: adopt an open
/// OS descriptor (0 for stdin, a pipe, a terminal) as a stream socket, Skynet's
/// `bind`. The engine works on a duplicate: closing the id leaves `fd` open.
fn bind(lua: &Lua, st: &State, a: &Args) -> Ret {
    let v = a.integer(1)?;
    let fd = match std::os::fd::RawFd::try_from(v) {
        Ok(fd) if fd >= 0 => fd,
        _ => return Err(a.error(1, format!("descriptor {v} out of range"))),
    };
    let r = st.engine.borrow_mut().ops().bind(fd, st.owner());
    match r {
        Ok(id) => {
            st.made(id);
            ret(lua, id as i64)
        }
        Err(e) => nil_msg(lua, format!("bind {fd}: {e}")),
    }
}

/// `start(id [, handler])`: activate a listening/accepted socket; with a handler the
/// socket's messages go to it (accepted sockets inherit their listener's).
fn start(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let handler = a.opt_handler(2)?;
    let r = match (super::shared::get(), st.svc.get()) {
        (Some(sh), Some(svc)) if st.shared() => sh.claim(svc.id(), st.owner(), id).map(|parked| {
            if parked {
                // `abandon` paused it; a half-closed socket stays as it is.
                let _ = st.engine.borrow_mut().ops().resume(id);
            }
        }),
        _ => st.engine.borrow_mut().ops().start(id, st.owner()),
    };
    // A connection of ours that already ended on the socket thread: its messages are
    // in our mail, and the handler must be in place when they are delivered.
    let r = match r {
        Err(crate::engine::Error::UnknownId) if st.made_here(id) => Ok(()),
        r => r,
    };
    if r.is_ok() {
        if let Some(h) = handler {
            st.set_handler(id as i64, h)?;
        }
    }
    ok_or_false(lua, r)
}

/// `abandon(id)`: give the socket up without closing it, for another service to
/// `start` (Skynet's `socket.abandon`). Reading pauses; this state forgets the
/// socket's handler and read buffer. Once services exist, the unread bytes of the
/// buffer and every message that follows wait for the next owner, in order; in a
/// program without services they are dropped.
fn abandon(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let removed = st.buffers.borrow_mut().remove(&id);
    let (unread, closed) = match &removed {
        Some(b) => (b.bytes(), b.closed),
        None => (&[][..], false),
    };
    st.set_handler(id as i64, Value::Nil)?;
    // Its final message will reach whoever starts it next, not this state.
    st.made.borrow_mut().remove(&id);
    let r = match (super::shared::get(), st.svc.get()) {
        (Some(sh), Some(svc)) if st.shared() => sh.park(svc, st.owner(), id, unread, closed),
        _ => st.engine.borrow_mut().ops().pause(id),
    };
    ok_or_false(lua, r)
}

/// `close(id [, force])`: flush then close (`force`: drop unsent data).
fn close(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let force = a.opt_bool(2, false);
    let r = st.engine.borrow_mut().ops().close(id, force);
    ok_or_false(lua, r)
}

/// `shutdown(id)`: Skynet's name for a forced close.
fn shutdown(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().ops().close(id, true);
    ok_or_false(lua, r)
}

/// `close_write(id)`: half-close the write side once queued data is sent.
fn close_write(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().ops().shutdown_write(id);
    ok_or_false(lua, r)
}

fn pause(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().ops().pause(id);
    if r.is_ok() {
        buffer::on_user_pause(st, id, true);
    }
    ok_or_false(lua, r)
}

fn resume(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().ops().resume(id);
    if r.is_ok() {
        buffer::on_user_pause(st, id, false);
    }
    ok_or_false(lua, r)
}

fn nodelay(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().ops().set_nodelay(id, on);
    ok_or_false(lua, r)
}

fn keepalive(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().ops().set_keepalive(id, on);
    ok_or_false(lua, r)
}

/// `sendlimit(id, bytes)`: a send that would queue more than `bytes` fails and drops
/// the socket (0 = no limit).
fn sendlimit(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let limit = a.integer(2)?;
    let limit = usize::try_from(limit).map_err(|_| a.error(2, "limit must be >= 0"))?;
    let r = st.engine.borrow_mut().ops().set_limit(id, limit);
    ok_or_false(lua, r)
}

/// `keepopen(id [, on])`: after the peer's EOF keep the socket open for replies until
/// `close(id)` (default: it closes as soon as nothing is queued).
fn keepopen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let on = a.opt_bool(2, true);
    let r = st.engine.borrow_mut().ops().set_keep_open(id, on);
    ok_or_false(lua, r)
}

/// `udp([host, port])` → id: bound when an address is given; unbound sockets are
/// dual-stack IPv6 and can send to IPv4 and IPv6 peers.
fn udp(lua: &Lua, st: &State, a: &Args) -> Ret {
    let bind = if a.is_none(1) {
        None
    } else {
        match host_port_args(st, a, 1, "127.0.0.1")?.0 {
            Ok(addr) => Some(addr),
            Err(msg) => return nil_msg(lua, msg),
        }
    };
    let r = st
        .engine
        .borrow_mut()
        .ops()
        .udp(bind.as_ref(), true, st.owner());
    match r {
        Ok(id) => ret(lua, id as i64),
        Err(e) => nil_msg(lua, format!("udp: {e}")),
    }
}

/// `udp_listen(host, port)` → id of a bound UDP socket.
fn udp_listen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, _) = host_port_args(st, a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let r = st
        .engine
        .borrow_mut()
        .ops()
        .udp(Some(&addr), false, st.owner());
    match r {
        Ok(id) => ret(lua, id as i64),
        Err(e) => nil_msg(lua, format!("udp_listen {addr}: {e}")),
    }
}

/// `udp_dial(host, port)` → id of an unbound UDP socket connected to that peer.
fn udp_dial(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, _) = host_port_args(st, a, 1, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let v6 = matches!(addr, Addr::Inet(sa) if sa.is_ipv6());
    let mut eng = st.engine.borrow_mut();
    let id = match eng.ops().udp(None, v6, st.owner()) {
        Ok(id) => id,
        Err(e) => return nil_msg(lua, format!("udp_dial: {e}")),
    };
    if let Err(e) = eng.ops().udp_connect(id, &addr) {
        let _ = eng.ops().close(id, true);
        return nil_msg(lua, format!("udp_dial {addr}: {e}"));
    }
    ret(lua, id as i64)
}

/// `udp_connect(id, host, port)`: set the default peer.
fn udp_connect(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let (addr, _) = host_port_args(st, a, 2, "127.0.0.1")?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return false_msg(lua, msg),
    };
    let r = st.engine.borrow_mut().ops().udp_connect(id, &addr);
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
            .ops()
            .sendto(id, to.as_ref(), &s.as_bytes()),
        _ => {
            let data = a.bytes(3)?;
            st.engine.borrow_mut().ops().sendto(id, to.as_ref(), &data)
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
    let all = st.engine.borrow_mut().ops().info_all();
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
        let req = st
            .engine
            .borrow_mut()
            .ops()
            .resolve_async(&host, st.owner());
        st.resolves.raw_set(req as i64, f)?;
        return ret(lua, true);
    }
    let r = st.engine.borrow_mut().ops().resolve(&host);
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

fn backend(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    ret(lua, crate::sys::backend_name())
}

/// `idle()` → true when no message can arrive any more without a new call: no open
/// socket, no timer, no undelivered message, no host-name lookup in flight (when
/// `loop()` returns). A scheduler uses it to tell "nothing to wait for" from a poll
/// that only flushed writes.
fn idle(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, super::run::is_idle(st))
}

/// `count()` → number of open sockets.
fn count(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, st.engine.borrow().socket_count() as i64)
}
