//! Delivering a batch of engine messages as Lua callbacks.
//!
//! Each callback runs in a protected call: an error goes to the error hook (default:
//! stderr) with its traceback and delivery continues with the next message.

use mlua::{Function, IntoLuaMulti, Lua, ObjectLike, Value};

use super::buffer::{self, Routed};
use super::state::State;
use crate::engine::Msg;

/// Text of an error coming back from a callback (mlua wraps it).
pub fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(s) => s.clone(),
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", error_text(cause))
        }
        other => other.to_string(),
    }
}

/// Hand a callback error to the error hook, or stderr.
pub fn report(st: &State, text: String) {
    let hook = st.on_error.borrow().clone();
    if let Some(f) = hook {
        if let Err(e) = f.call::<()>(text.clone()) {
            eprintln!(
                "skysocket: error hook failed: {}\n(original error: {text})",
                error_text(&e)
            );
        }
    } else {
        eprintln!("skysocket: error in callback: {text}");
    }
}

fn call(st: &State, f: &Function, args: impl IntoLuaMulti) {
    if let Err(e) = f.call::<()>(args) {
        report(st, error_text(&e));
    }
}

/// The handler for a socket: its own (or inherited) one, else the module default.
fn handler_of(st: &State, id: u64) -> Value {
    match st.socket_handlers.raw_get::<Value>(id as i64) {
        Ok(Value::Nil) | Err(_) => st.default_handler.borrow().clone(),
        Ok(v) => v,
    }
}

fn field(handler: &Value, name: &str) -> Option<Function> {
    let v = match handler {
        Value::Table(t) => t.get::<Value>(name).ok()?,
        Value::UserData(u) => u.get::<Value>(name).ok()?,
        _ => return None,
    };
    match v {
        Value::Function(f) => Some(f),
        _ => None,
    }
}

/// Deliver one message that is not a plain `data` run (those take the fast path):
/// timers, lookups and `exit` to their own tables, socket messages to the socket's
/// handler. `data` passes through the socket's read buffer (`route`) first.
pub fn deliver(
    lua: &Lua,
    st: &State,
    m: Msg<'_>,
    route: &dyn Fn(u64, &[u8]) -> Routed,
) -> mlua::Result<()> {
    match m {
        Msg::Timer { timer } => {
            if let Some(f) = st.timers.take(timer)? {
                call(st, &f, ());
            }
            return Ok(());
        }
        Msg::Exit => {
            st.exit.set(true);
            return Ok(());
        }
        Msg::Resolved {
            request, result, ..
        } => {
            // resolve(host, fn): fn(addresses) or fn(nil, message).
            let f: Value = st.resolves.raw_get(request as i64)?;
            st.resolves.raw_set(request as i64, Value::Nil)?;
            if let Value::Function(f) = f {
                match result {
                    Err(text) => call(st, &f, (Value::Nil, lua.create_string(text)?)),
                    Ok(text) => {
                        let ips: Vec<String> = String::from_utf8_lossy(text)
                            .lines()
                            .map(str::to_string)
                            .collect();
                        call(st, &f, ips);
                    }
                }
            }
            return Ok(());
        }
        Msg::Accept { listener, id, .. } => {
            // The accepted socket inherits its listener's own handler, if it has one.
            let own: Value = st.socket_handlers.raw_get(listener as i64)?;
            if !own.is_nil() {
                st.set_handler(id as i64, own)?;
            }
        }
        _ => {}
    }
    let sid = m.id();
    let id = sid as i64;
    let handler = handler_of(st, sid);
    if m.is_final() {
        st.set_handler(id, Value::Nil)?;
        if !st.made.borrow().is_empty() {
            st.made.borrow_mut().remove(&sid);
        }
        // A socket closed for a framing error reports `error` instead of `close`.
        if let Some(msg) = buffer::on_close(st, sid) {
            if let Some(f) = field(&handler, "error") {
                call(st, &f, (id, msg));
            }
            return Ok(());
        }
    }
    let name = match m {
        Msg::Data { data, .. } => match route(sid, data) {
            Routed::Normal => "data",
            Routed::Readable(n) => {
                if let Some(f) = field(&handler, "readable") {
                    call(st, &f, (id, n as i64));
                }
                return Ok(());
            }
            Routed::Frames(frames) => {
                if let Some(f) = field(&handler, "data") {
                    for fr in frames {
                        call(st, &f, (id, lua.create_string(&fr)?));
                    }
                }
                return Ok(());
            }
        },
        Msg::Open { .. } => "open",
        Msg::Accept { .. } => "accept",
        Msg::Close { .. } => "close",
        Msg::Error { .. } => "error",
        Msg::Udp { .. } => "udp",
        Msg::Warning { .. } => "warning",
        Msg::Handshake { .. } => "handshake",
        Msg::Timer { .. } | Msg::Exit | Msg::Resolved { .. } => return Ok(()),
    };
    let Some(f) = field(&handler, name) else {
        return Ok(());
    };
    let s = |b: &[u8]| lua.create_string(b);
    match m {
        Msg::Data { data, .. } => call(st, &f, (id, s(data)?)),
        Msg::Open { peer, .. } => call(st, &f, (id, s(peer)?)),
        Msg::Handshake { alpn, .. } => call(st, &f, (id, s(alpn)?)),
        Msg::Accept { id: new, peer, .. } => call(st, &f, (id, new as i64, s(peer)?)),
        Msg::Close { .. } => call(st, &f, id),
        Msg::Error { text, .. } => call(st, &f, (id, s(text)?)),
        Msg::Udp { data, from, .. } => call(st, &f, (id, s(data)?, s(from)?)),
        Msg::Warning { queued_kib, .. } => call(st, &f, (id, queued_kib as i64)),
        Msg::Timer { .. } | Msg::Exit | Msg::Resolved { .. } => {}
    }
    Ok(())
}
