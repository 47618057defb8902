//! The loop side of the module: `poll`/`loop`/`exit`, timers, the handlers
//! (`dispatch`, `on_error`), and one poll step's delivery: runs of plain `data`
//! messages through the raw fast path, everything else through `dispatch.rs`, both
//! routing bytes through the socket's read buffer the same way (`route`).

use std::time::Duration;

use mlua::{Lua, Value};

use super::args::{ret, Args, Fail, Ret};
use super::buffer::{self, Routed};
use super::dispatch;
use super::fast;
use super::service;
use super::state::State;

/// `timeout(ms, fn)` → timer id; `fn()` runs once after `ms` milliseconds.
pub(super) fn timeout(lua: &Lua, st: &State, a: &Args) -> Ret {
    let ms = a.number(1)?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(a.error(1, "timeout must be a finite number >= 0"));
    }
    let f = a.function(2)?;
    let tid = match st.svc.get() {
        // Once services exist, timers come from the runtime, as mailbox messages.
        Some(svc) if st.shared() => {
            crate::service::Runtime::global().add_timer(svc.id(), millis(ms))
        }
        _ => st.engine.borrow_mut().add_timer(millis(ms)),
    };
    st.timers.insert(tid, f)?;
    ret(lua, tid as i64)
}

/// A finite, non-negative number of milliseconds as a `Duration`, saturating at
/// `Duration::MAX` (`from_secs_f64` would panic past `u64::MAX` seconds).
pub(super) fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

/// `cancel_timeout(timer)` → true if it was pending.
pub(super) fn cancel_timeout(lua: &Lua, st: &State, a: &Args) -> Ret {
    let tid = a.integer(1)?;
    let was = if st.shared() {
        // The runtime's timer still fires; with its function gone it does nothing.
        tid > 0 && st.timers.contains(tid as u64)
    } else {
        tid > 0 && st.engine.borrow_mut().cancel_timer(tid as u64)
    };
    if tid > 0 {
        st.timers.take(tid as u64)?;
    }
    ret(lua, was)
}

/// `dispatch(handler)`: the module-wide handler; returns the previous one.
pub(super) fn dispatch_handler(lua: &Lua, st: &State, a: &Args) -> Ret {
    let h = a.opt_handler(1)?.unwrap_or(Value::Nil);
    let old = st.default_handler.replace(h);
    st.handler_epoch.set(st.handler_epoch.get() + 1);
    ret(lua, old)
}

/// `on_error(fn)`: where callback errors go (nil: stderr); returns the previous hook.
pub(super) fn on_error(lua: &Lua, st: &State, a: &Args) -> Ret {
    let f = if a.is_none(1) {
        None
    } else {
        Some(a.function(1)?)
    };
    let old = st.on_error.replace(f);
    ret(lua, old)
}

/// One poll step and the delivery of its messages. Returns how many were delivered.
pub(super) fn step(lua: &Lua, st: &State, timeout: Option<Duration>) -> Result<usize, Fail> {
    if st.engine.borrow().is_remote() {
        return shared_step(lua, st, timeout);
    }
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

/// The root's step once the socket thread polls the engine: wait for mail (at most
/// `timeout`; `None`: until some arrives, or at once when nothing can arrive any more)
/// and deliver it.
fn shared_step(lua: &Lua, st: &State, timeout: Option<Duration>) -> Result<usize, Fail> {
    let until = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    while !service::root_has_mail(st) {
        let left = match until {
            Some(at) => match at.checked_duration_since(std::time::Instant::now()) {
                Some(d) if !d.is_zero() => Some(d),
                _ => return Ok(0),
            },
            None if is_idle(st) => return Ok(0),
            // Nothing is lost by waking now and then: the loop looks again.
            None => Some(Duration::from_millis(500)),
        };
        super::shared::ROOT_BELL.wait(left);
    }
    st.dispatching.set(true);
    let r = service::deliver_root_mail(lua, st);
    st.dispatching.set(false);
    Ok(r?)
}

/// Whether no message can arrive any more without a new call (what `idle()` says and
/// `loop()` stops at).
pub(super) fn is_idle(st: &State) -> bool {
    let eng = st.engine.borrow();
    if !eng.is_remote() {
        return eng.is_idle() && !service::root_waits(st);
    }
    // The socket thread polls: this state cannot see the engine's timers, only its
    // own (runtime) timers and lookups, and the process's sockets.
    !service::root_waits(st)
        && eng.socket_count() == 0
        && st.timers.is_empty()
        && st.resolves.pairs::<Value, Value>().next().is_none()
}

/// Bytes of socket `id` through its read buffer, if it has one (the fast path and the
/// dispatcher both route this way). A panic here is reported like a callback error,
/// the bytes are dropped and delivery goes on.
#[inline]
fn route(st: &State, id: u64, data: &[u8]) -> Routed {
    if st.buffers.borrow().is_empty() {
        return Routed::Normal;
    }
    route_buffered(st, id, data)
}

#[inline(never)]
fn route_buffered(st: &State, id: u64, data: &[u8]) -> Routed {
    let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        buffer::on_data(st, id, data)
    }));
    routed.unwrap_or_else(|payload| {
        dispatch::report(st, fast::panic_text(payload));
        Routed::Frames(Vec::new())
    })
}

/// Deliver one socket message that came as mail (see `shared.rs`).
pub(super) fn deliver_one(lua: &Lua, st: &State, msg: crate::engine::Msg) -> mlua::Result<()> {
    dispatch::deliver(lua, st, msg, &|id, data| route(st, id, data))
}

/// Deliver a batch in order: runs of plain `data` messages through the raw fast path,
/// everything else through the high-level dispatcher.
pub(super) fn deliver_batch(
    lua: &Lua,
    st: &State,
    batch: &crate::engine::Batch,
) -> mlua::Result<()> {
    let route = |id: u64, data: &[u8]| route(st, id, data);
    let mut i = 0;
    while i < batch.len() {
        let (next, errors) = fast::deliver_data_run(lua, st, batch, i, &route)?;
        for e in errors {
            dispatch::report(st, e);
        }
        if next > i {
            i = next;
            continue;
        }
        dispatch::deliver(lua, st, batch.get(i), &route)?;
        i += 1;
    }
    Ok(())
}

pub(super) fn not_in_callback(st: &State, a: &Args) -> Result<(), Fail> {
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
pub(super) fn poll(lua: &Lua, st: &State, a: &Args) -> Ret {
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
pub(super) fn run_loop(lua: &Lua, st: &State, a: &Args) -> Ret {
    not_in_callback(st, a)?;
    st.exit.set(false);
    while !st.exit.get() {
        if is_idle(st) {
            break;
        }
        step(lua, st, None)?;
    }
    st.exit.set(false);
    ret(lua, true)
}

/// `exit()`: make `loop()` return after the current message.
pub(super) fn exit(lua: &Lua, st: &State, _a: &Args) -> Ret {
    st.exit.set(true);
    ret(lua, ())
}
