//! Per-Lua-state module state: the engine, the reusable batch, the handlers.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use super::buffer::Buffers;
use crate::engine::{Batch, Config, Engine};

pub struct State {
    pub engine: RefCell<Engine>,
    pub batch: RefCell<Batch>,
    /// Set while messages are being delivered: poll/loop are not reentrant.
    pub dispatching: Cell<bool>,
    /// `exit()` was called: `loop()` returns after the current batch.
    pub exit: Cell<bool>,
    /// The module-wide handler set by `dispatch(handler)`.
    pub default_handler: RefCell<Value>,
    /// Bumped by every `dispatch(handler)`, so the fast path notices a change made by
    /// a callback in the middle of a batch.
    pub handler_epoch: Cell<u64>,
    /// id -> handler, for sockets given one by `start(id, handler)` or inherited from
    /// their listener. Entries go when the socket's final message is delivered.
    pub socket_handlers: Table,
    /// Number of entries in `socket_handlers` (the fast path skips the lookup at 0).
    pub own_handlers: Cell<usize>,
    /// timer id -> function (see `timer_fns.rs`).
    pub timers: super::timer_fns::TimerFns,
    /// resolve request id -> function.
    pub resolves: Table,
    /// Receives callback errors; `None` writes them to stderr.
    pub on_error: RefCell<Option<Function>>,
    /// Read buffers of sockets in buffered or framed mode (see `readbuf.rs`).
    pub buffers: RefCell<Buffers>,
    /// Storage of drained read buffers, for reuse (see `readbuf.rs`).
    pub spare: RefCell<super::buffer::Spare>,
    /// Services (see `service.rs`): this state's service, once it is one (a state the
    /// runtime created, or the root once it used the service API).
    pub svc: OnceCell<Arc<crate::service::Service>>,
    /// Created by the service runtime (not the root): timers come from the runtime and
    /// the worker drives delivery (no poll/loop).
    pub in_service: Cell<bool>,
    /// `fn(kind, from, session, ...)` and `fn()` of `skysocket.service`: deliver one
    /// mailbox message; run what the messages made ready.
    pub svc_deliver: RefCell<Option<Function>>,
    pub svc_step: RefCell<Option<Function>>,
    /// Once the engine is shared: connections this state started whose final message
    /// it has not had yet. The socket thread may fail and free such a socket before
    /// the state gets to `start`/`buffered` it; those calls still set it up here,
    /// since its messages are on their way to this state (see `made_here`).
    pub made: RefCell<std::collections::HashSet<u64>>,
    /// The root's wake-up target (replaced when `configure` rebuilds the engine).
    pub svc_wake: RefCell<Option<Arc<parking_lot::Mutex<crate::engine::Handle>>>>,
}

impl State {
    pub fn new(lua: &Lua, config: Config) -> mlua::Result<State> {
        let engine = Engine::new(config).map_err(|e| {
            mlua::Error::RuntimeError(format!("skysocket: cannot start engine: {e}"))
        })?;
        State::with_engine(lua, engine)
    }

    /// A state over `engine` (a service's: a remote view of the process engine).
    pub fn with_engine(lua: &Lua, engine: Engine) -> mlua::Result<State> {
        Ok(State {
            engine: RefCell::new(engine),
            batch: RefCell::new(Batch::new()),
            dispatching: Cell::new(false),
            exit: Cell::new(false),
            default_handler: RefCell::new(Value::Nil),
            handler_epoch: Cell::new(0),
            socket_handlers: lua.create_table()?,
            own_handlers: Cell::new(0),
            timers: super::timer_fns::TimerFns::new(lua)?,
            resolves: lua.create_table()?,
            on_error: RefCell::new(None),
            buffers: RefCell::new(Buffers::default()),
            spare: RefCell::new(Default::default()),
            svc: OnceCell::new(),
            in_service: Cell::new(false),
            svc_deliver: RefCell::new(None),
            svc_step: RefCell::new(None),
            svc_wake: RefCell::new(None),
            made: RefCell::new(Default::default()),
        })
    }
}

impl State {
    /// The owner token of the sockets this state makes: its service id inside a
    /// service, 0 in the root (see `shared.rs`).
    #[inline]
    pub fn owner(&self) -> u64 {
        if self.in_service.get() {
            self.svc.get().map_or(0, |s| s.id())
        } else {
            0
        }
    }

    /// Whether the engine is polled by the socket thread (services exist): messages
    /// come as mail and timers from the service runtime.
    #[inline]
    pub fn shared(&self) -> bool {
        self.in_service.get() || self.engine.borrow().is_remote()
    }

    /// Remember a connection this state started until its final message is
    /// delivered: it may end (its messages on their way) before `start` names it.
    pub fn made(&self, id: u64) {
        self.made.borrow_mut().insert(id);
    }

    /// Whether `id` is a connection this state started whose final message is still
    /// to come (the engine may have freed it already: its messages are in the mail).
    pub fn made_here(&self, id: u64) -> bool {
        !self.made.borrow().is_empty() && self.made.borrow().contains(&id)
    }

    /// Give socket `id` its own handler (`nil` removes it), keeping `own_handlers` exact.
    pub fn set_handler(&self, id: i64, handler: Value) -> mlua::Result<()> {
        let had = !self.socket_handlers.raw_get::<Value>(id)?.is_nil();
        let has = !handler.is_nil();
        let table = match &handler {
            Value::Table(t) => t.to_pointer() as usize,
            _ => 0,
        };
        self.socket_handlers.raw_set(id, handler)?;
        // The read buffer's copy (see `ReadBuf::handler`).
        if let Some(b) = self.buffers.borrow_mut().get_mut(&(id as u64)) {
            b.handler = table;
        }
        let n = self.own_handlers.get();
        self.own_handlers.set(n + has as usize - had as usize);
        Ok(())
    }
}

impl State {
    /// The address of socket `id`'s own handler if it is a table, else 0 (a Lua lookup:
    /// see `ReadBuf::handler` for the copy the delivery loop reads).
    pub fn handler_table(&self, id: u64) -> usize {
        match self.socket_handlers.raw_get::<Value>(id as i64) {
            Ok(Value::Table(t)) => t.to_pointer() as usize,
            _ => 0,
        }
    }

    /// The copy of `handler_table(id)` in the socket's read buffer; `None` without a
    /// buffer (or while the buffers are borrowed).
    #[inline]
    pub fn buffered_handler(&self, id: u64) -> Option<usize> {
        self.buffers.try_borrow().ok()?.get(&id).map(|b| b.handler)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        super::fast::forget_state(self);
        if let (Some(svc), false) = (self.svc.get(), self.in_service.get()) {
            crate::service::Runtime::global().remove_root(svc);
        }
    }
}
