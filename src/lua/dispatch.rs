//! Delivering a batch of engine messages as Lua callbacks.
//!
//! Each callback runs in a protected call: an error goes to the error hook (default:
//! stderr) with its traceback and delivery continues with the next message.

use mlua::{Function, IntoLuaMulti, Lua, ObjectLike, Value};

use super::buffer::{self, Routed};
use super::state::State;
use crate::engine::{Batch, Message, MsgKind};

fn callback_name(kind: MsgKind) -> &'static str {
    match kind {
        MsgKind::Data => "data",
        MsgKind::Open => "open",
        MsgKind::Accept => "accept",
        MsgKind::Close => "close",
        MsgKind::Error => "error",
        MsgKind::Udp => "udp",
        MsgKind::Warning => "warning",
        MsgKind::Timer => "timer",
        MsgKind::Exit => "exit",
        MsgKind::Resolved => "resolved",
        MsgKind::Handshake => "handshake",
    }
}

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

pub fn deliver(lua: &Lua, st: &State, batch: &Batch, m: &Message) -> mlua::Result<()> {
    let id = m.id as i64;
    match m.kind {
        MsgKind::Timer => {
            let f: Value = st.timers.raw_get(m.ud as i64)?;
            st.timers.raw_set(m.ud as i64, Value::Nil)?;
            if let Value::Function(f) = f {
                call(st, &f, ());
            }
            return Ok(());
        }
        MsgKind::Exit => {
            st.exit.set(true);
            return Ok(());
        }
        MsgKind::Resolved => {
            // resolve(host, fn): fn(addresses) or fn(nil, message).
            let f: Value = st.resolves.raw_get(m.ud as i64)?;
            st.resolves.raw_set(m.ud as i64, Value::Nil)?;
            if let Value::Function(f) = f {
                let text = batch.data_str(m);
                if batch.extra(m) == crate::engine::RESOLVE_FAILED {
                    call(st, &f, (Value::Nil, text));
                } else {
                    let ips: Vec<String> = text.lines().map(str::to_string).collect();
                    call(st, &f, ips);
                }
            }
            return Ok(());
        }
        MsgKind::Accept => {
            // The accepted socket inherits its listener's own handler, if it has one.
            let own: Value = st.socket_handlers.raw_get(id)?;
            if !own.is_nil() {
                st.set_handler(m.ud as i64, own)?;
            }
        }
        _ => {}
    }
    let handler = handler_of(st, m.id);
    let terminal = m.kind == MsgKind::Close || (m.kind == MsgKind::Error && m.ud == 0);
    if terminal {
        st.set_handler(id, Value::Nil)?;
        // A socket closed for a framing error reports `error` instead of `close`.
        if let Some(msg) = buffer::on_close(st, m.id) {
            if let Some(f) = field(&handler, "error") {
                call(st, &f, (id, msg));
            }
            return Ok(());
        }
    }
    if m.kind == MsgKind::Data {
        match buffer::on_data(st, m.id, batch.data(m)) {
            Routed::Normal => {}
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
        }
    }
    let Some(f) = field(&handler, callback_name(m.kind)) else {
        return Ok(());
    };
    let data = || lua.create_string(batch.data(m));
    match m.kind {
        MsgKind::Data => call(st, &f, (id, data()?)),
        MsgKind::Open => call(st, &f, (id, data()?)),
        MsgKind::Handshake => call(st, &f, (id, data()?)),
        MsgKind::Accept => call(st, &f, (id, m.ud as i64, data()?)),
        MsgKind::Close => call(st, &f, id),
        MsgKind::Error => call(st, &f, (id, data()?)),
        MsgKind::Udp => call(st, &f, (id, data()?, lua.create_string(batch.extra(m))?)),
        MsgKind::Warning => call(st, &f, (id, m.ud as i64)),
        MsgKind::Timer | MsgKind::Exit | MsgKind::Resolved => {}
    }
    Ok(())
}
