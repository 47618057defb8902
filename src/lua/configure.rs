//! `configure([settings])`: the module engine's settings, read back or rebuilt.

use std::time::Duration;

use mlua::{Lua, Value};

use super::api::type_of;
use super::args::{false_msg, ret, Args, Fail, Ret};
use super::run::not_in_callback;
use super::state::State;

/// `configure([settings])`: with a table, rebuild the engine with these settings (only
/// while no socket or timer exists); always returns the settings now in force.
pub(super) fn configure(lua: &Lua, st: &State, a: &Args) -> Ret {
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
        if st.shared() {
            return false_msg(
                lua,
                "configure: the engine is shared with services now: configure before the first service.new",
            );
        }
        if !st.engine.borrow().is_idle() {
            return false_msg(lua, "configure: close every socket and timer first");
        }
        let engine = crate::engine::Engine::new(c)
            .map_err(|e| Fail::Lua(mlua::Error::RuntimeError(format!("configure: {e}"))))?;
        *st.engine.borrow_mut() = engine;
        super::service::engine_replaced(st);
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
