//! The service runtime: many independent bodies (Lua states, for the binding) run by a
//! pool of worker threads, each with a mailbox.
//!
//! Guarantees:
//! - a service never runs on two threads at once: it is in the run queue at most once,
//!   and only the worker that popped it touches its body until the turn ends;
//! - its messages are handled in arrival order (one FIFO mailbox per service);
//! - fairness: a turn handles at most [`TURN_BATCH`] messages, then the service goes
//!   to the back of the run queue if more are waiting; a body stuck in an endless loop
//!   holds only the worker running it;
//! - a call (request with a session) gets exactly one reply: from the body, or an
//!   error reply from the runtime when the target is dead, exits or is killed with the
//!   request queued or in hand.
//!
//! The root service (the interpreter that required the module) has no body: its
//! mailbox is drained by its own loop, and `notify` wakes that loop when a message
//! arrives. This layer knows nothing of Lua or of the socket engine.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

mod envelope;
mod timers;

pub use envelope::{Body, Envelope, Kind, Val};
use timers::Timers;

pub type ServiceId = u64;

/// Messages a turn handles before the service yields its worker to the others.
pub const TURN_BATCH: usize = 64;

/// The first timer id of the runtime (2^40).
pub const FIRST_TIMER: u64 = 1 << 40;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Run {
    Idle,
    Queued,
    Running,
}

struct Mail {
    queue: VecDeque<Envelope>,
    run: Run,
    dead: bool,
}

type Notify = Box<dyn Fn() + Send + Sync>;

pub struct Service {
    id: ServiceId,
    mail: Mutex<Mail>,
    body: Mutex<Option<Box<dyn Body>>>,
    /// The root's wake-up (its mailbox is drained by its own loop); `None` for the
    /// services the pool runs.
    notify: Option<Notify>,
    /// `exit()` was called: the service ends after the current turn.
    exiting: AtomicBool,
    /// Messages queued (for the root's cheap "any mail?" check).
    pending: AtomicUsize,
    /// Calls delivered to the body and not answered yet: (caller, session).
    open_calls: Mutex<HashSet<(ServiceId, i64)>>,
}

impl Service {
    pub fn id(&self) -> ServiceId {
        self.id
    }

    /// Mark the service to end once its current turn is over.
    pub fn request_exit(&self) {
        self.exiting.store(true, Ordering::Release);
    }

    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::Acquire)
    }

    /// Whether messages wait in the mailbox (one atomic load).
    pub fn has_mail(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    pub fn is_dead(&self) -> bool {
        self.mail.lock().dead
    }
}

/// Why a message could not be posted.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// No such service, or it has exited or been killed.
    Dead(ServiceId),
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostError::Dead(id) => write!(f, "service {id} is dead"),
        }
    }
}

struct RunQueue {
    queue: VecDeque<Arc<Service>>,
    shutdown: bool,
}

struct Pool {
    wanted: usize,
    handles: Vec<JoinHandle<()>>,
}

struct Inner {
    services: RwLock<HashMap<ServiceId, Arc<Service>>>,
    names: Mutex<HashMap<String, ServiceId>>,
    root: Mutex<Option<ServiceId>>,
    next_id: AtomicU64,
    next_timer: AtomicU64,
    runq: Mutex<RunQueue>,
    runq_cv: Condvar,
    pool: Mutex<Pool>,
    timers: Mutex<Timers>,
    timers_cv: Condvar,
}

/// A runtime: the services, their names, the worker pool and the timer thread.
/// Cloning gives another handle to the same runtime.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// Number of CPUs (at least 1): the default pool size.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                services: RwLock::new(HashMap::new()),
                names: Mutex::new(HashMap::new()),
                root: Mutex::new(None),
                next_id: AtomicU64::new(1),
                // Far from the small ids a socket engine's own timers use, so that a
                // state that had engine timers before it used services cannot mix
                // the two up.
                next_timer: AtomicU64::new(FIRST_TIMER),
                runq: Mutex::new(RunQueue {
                    queue: VecDeque::new(),
                    shutdown: false,
                }),
                runq_cv: Condvar::new(),
                pool: Mutex::new(Pool {
                    wanted: default_threads(),
                    handles: Vec::new(),
                }),
                timers: Mutex::new(Timers {
                    heap: BinaryHeap::new(),
                    thread: None,
                    shutdown: false,
                }),
                timers_cv: Condvar::new(),
            }),
        }
    }

    /// The process-wide runtime used by the Lua binding.
    pub fn global() -> &'static Runtime {
        static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(Runtime::new)
    }

    /// Set the pool size; only before the first service starts (`Err` with the size in
    /// force otherwise). `n` is at least 1.
    pub fn set_threads(&self, n: usize) -> Result<(), usize> {
        let mut p = self.inner.pool.lock();
        if !p.handles.is_empty() {
            return Err(p.handles.len());
        }
        p.wanted = n.max(1);
        Ok(())
    }

    /// The pool size (started or to be started).
    pub fn threads(&self) -> usize {
        let p = self.inner.pool.lock();
        if p.handles.is_empty() {
            p.wanted
        } else {
            p.handles.len()
        }
    }

    fn start_pool(&self) {
        let mut p = self.inner.pool.lock();
        if !p.handles.is_empty() {
            return;
        }
        for i in 0..p.wanted {
            let rt = self.clone();
            let h = std::thread::Builder::new()
                .name(format!("skysocket-worker-{i}"))
                .spawn(move || rt.worker())
                .expect("cannot start a worker thread");
            p.handles.push(h);
        }
    }

    fn new_service(&self, body: Option<Box<dyn Body>>, notify: Option<Notify>) -> Arc<Service> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Service {
            id,
            mail: Mutex::new(Mail {
                queue: VecDeque::new(),
                run: Run::Idle,
                dead: false,
            }),
            body: Mutex::new(body),
            notify,
            exiting: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            open_calls: Mutex::new(HashSet::new()),
        })
    }

    /// Reserve a service id for a body made next (the body may need its id first).
    /// The service receives nothing until [`Runtime::start`].
    pub fn reserve(&self) -> Arc<Service> {
        self.new_service(None, None)
    }

    /// Give a reserved service its body, register it and post `Start` with `args`.
    pub fn start(&self, svc: &Arc<Service>, body: Box<dyn Body>, args: Vec<Val>) {
        *svc.body.lock() = Some(body);
        self.inner.services.write().insert(svc.id, svc.clone());
        self.start_pool();
        let _ = self.post_to(
            svc,
            Envelope {
                from: 0,
                kind: Kind::Start,
                args,
            },
        );
    }

    /// Register the root service (no body; `notify` wakes its loop). Fails when a root
    /// is registered already.
    pub fn register_root(&self, notify: Notify) -> Result<Arc<Service>, ServiceId> {
        let mut root = self.inner.root.lock();
        if let Some(id) = *root {
            if self.lookup(id).is_some() {
                return Err(id);
            }
        }
        let svc = self.new_service(None, Some(notify));
        self.inner.services.write().insert(svc.id, svc.clone());
        *root = Some(svc.id);
        Ok(svc)
    }

    pub fn root(&self) -> Option<ServiceId> {
        *self.inner.root.lock()
    }

    pub fn lookup(&self, id: ServiceId) -> Option<Arc<Service>> {
        self.inner.services.read().get(&id).cloned()
    }

    /// Services alive, the root included.
    pub fn count(&self) -> usize {
        self.inner.services.read().len()
    }

    /// Post a message to `to`.
    pub fn post(&self, to: ServiceId, env: Envelope) -> Result<(), PostError> {
        let svc = self.lookup(to).ok_or(PostError::Dead(to))?;
        self.post_to(&svc, env).map_err(|_| PostError::Dead(to))
    }

    fn post_to(&self, svc: &Arc<Service>, env: Envelope) -> Result<(), Envelope> {
        let mut m = svc.mail.lock();
        if m.dead {
            return Err(env);
        }
        m.queue.push_back(env);
        svc.pending.fetch_add(1, Ordering::Release);
        if let Some(notify) = &svc.notify {
            drop(m);
            notify();
            return Ok(());
        }
        if m.run == Run::Idle {
            m.run = Run::Queued;
            drop(m);
            self.enqueue(svc.clone());
        }
        Ok(())
    }

    fn enqueue(&self, svc: Arc<Service>) {
        self.inner.runq.lock().queue.push_back(svc);
        self.inner.runq_cv.notify_one();
    }

    /// Post a call; the reply (or an error reply) comes to `from` later.
    pub fn call(
        &self,
        from: ServiceId,
        to: ServiceId,
        session: i64,
        args: Vec<Val>,
    ) -> Result<(), PostError> {
        self.post(
            to,
            Envelope {
                from,
                kind: Kind::Call(session),
                args,
            },
        )
    }

    /// Answer call `session` of `to`, which `from` received. Ignored (returns false)
    /// when that call is not open (answered already, or never received).
    pub fn reply(
        &self,
        from: &Service,
        to: ServiceId,
        session: i64,
        ok: bool,
        args: Vec<Val>,
    ) -> bool {
        if !from.open_calls.lock().remove(&(to, session)) {
            return false;
        }
        let _ = self.post(
            to,
            Envelope {
                from: from.id,
                kind: Kind::Reply { session, ok },
                args,
            },
        );
        true
    }

    fn error_reply(&self, from: ServiceId, to: ServiceId, session: i64, text: String) {
        let _ = self.post(
            to,
            Envelope {
                from,
                kind: Kind::Reply { session, ok: false },
                args: vec![Val::Str(text.into_bytes().into())],
            },
        );
    }

    /// The next message of `svc` (a call among them becomes an open call).
    fn pop(&self, svc: &Service) -> Option<Envelope> {
        let env = {
            let mut m = svc.mail.lock();
            if m.dead {
                return None;
            }
            let env = m.queue.pop_front()?;
            svc.pending.fetch_sub(1, Ordering::Release);
            env
        };
        if let Kind::Call(s) = env.kind {
            svc.open_calls.lock().insert((env.from, s));
        }
        Some(env)
    }

    /// Take up to `max` messages of a service without a body (the root): calls among
    /// them become open calls.
    pub fn take_mail(&self, svc: &Service, max: usize) -> Vec<Envelope> {
        let mut m = svc.mail.lock();
        let n = m.queue.len().min(max);
        let out: Vec<Envelope> = m.queue.drain(..n).collect();
        svc.pending.fetch_sub(n, Ordering::Release);
        drop(m);
        self.open(svc, &out);
        out
    }

    /// Take the queued messages of `svc` that `pick` selects, in order, leaving the
    /// others (for a body that hands part of its work to another service).
    pub fn extract(&self, svc: &Service, mut pick: impl FnMut(&Envelope) -> bool) -> Vec<Envelope> {
        let mut m = svc.mail.lock();
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(m.queue.len());
        for e in m.queue.drain(..) {
            if pick(&e) {
                out.push(e);
            } else {
                keep.push_back(e);
            }
        }
        m.queue = keep;
        svc.pending.fetch_sub(out.len(), Ordering::Release);
        out
    }

    fn open(&self, svc: &Service, msgs: &[Envelope]) {
        let mut calls = None;
        for e in msgs {
            if let Kind::Call(s) = e.kind {
                calls
                    .get_or_insert_with(|| svc.open_calls.lock())
                    .insert((e.from, s));
            }
        }
    }

    /// Register `name` for `id` (replacing an earlier holder of the name).
    pub fn register(&self, name: &str, id: ServiceId) {
        self.inner.names.lock().insert(name.to_string(), id);
    }

    /// The live service registered under `name`.
    pub fn query(&self, name: &str) -> Option<ServiceId> {
        let id = *self.inner.names.lock().get(name)?;
        self.lookup(id).filter(|s| !s.is_dead()).map(|_| id)
    }

    /// Kill a service from outside: it receives nothing more, its queued and open
    /// calls fail, its body is dropped now if idle, else when its current turn ends.
    /// The root cannot be killed. Returns false for an unknown or dead id.
    pub fn kill(&self, id: ServiceId) -> bool {
        let Some(svc) = self.lookup(id) else {
            return false;
        };
        if svc.notify.is_some() {
            return false;
        }
        let body = {
            let mut m = svc.mail.lock();
            if m.dead {
                return false;
            }
            m.dead = true;
            if m.run == Run::Idle {
                svc.body.lock().take()
            } else {
                None // the worker drops it at the end of the turn
            }
        };
        self.bury(&svc);
        if let Some(body) = body {
            drop(body);
            self.unregister(&svc);
        }
        true
    }

    /// Remove the root (its state is going away): its queued and open calls fail.
    pub fn remove_root(&self, svc: &Arc<Service>) {
        svc.mail.lock().dead = true;
        self.bury(svc);
        self.unregister(svc);
        let mut root = self.inner.root.lock();
        if *root == Some(svc.id) {
            *root = None;
        }
    }

    /// A dead service's body is gone: drop it from the registry (so `count` covers
    /// every body still holding resources).
    fn unregister(&self, svc: &Arc<Service>) {
        self.inner.services.write().remove(&svc.id);
    }

    /// A service died: forget its names, and send an error reply for every call it
    /// will never answer. (It leaves the registry once its body is dropped.)
    fn bury(&self, svc: &Arc<Service>) {
        self.inner.names.lock().retain(|_, v| *v != svc.id);
        let queued: Vec<Envelope> = {
            let mut m = svc.mail.lock();
            let q: Vec<Envelope> = m.queue.drain(..).collect();
            svc.pending.store(0, Ordering::Release);
            q
        };
        let open: Vec<(ServiceId, i64)> = svc.open_calls.lock().drain().collect();
        let why = if svc.is_exiting() {
            format!("service {} exited", svc.id)
        } else {
            format!("service {} is dead", svc.id)
        };
        for e in queued {
            if let Kind::Call(s) = e.kind {
                self.error_reply(svc.id, e.from, s, why.clone());
            }
        }
        for (to, s) in open {
            self.error_reply(svc.id, to, s, why.clone());
        }
    }

    fn worker(&self) {
        loop {
            let svc = {
                let mut q = self.inner.runq.lock();
                loop {
                    if let Some(s) = q.queue.pop_front() {
                        break s;
                    }
                    if q.shutdown {
                        return;
                    }
                    self.inner.runq_cv.wait(&mut q);
                }
            };
            self.turn(&svc);
        }
    }

    fn turn(&self, svc: &Arc<Service>) {
        {
            let mut m = svc.mail.lock();
            if m.dead {
                m.run = Run::Idle;
                let body = svc.body.lock().take();
                drop(m);
                drop(body);
                self.unregister(svc);
                return;
            }
            m.run = Run::Running;
        }
        let mut body = svc.body.lock().take();
        if let Some(b) = body.as_mut() {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // One message at a time out of the mailbox: what is not handled yet
                // stays there, where `extract` can still reach it.
                for _ in 0..TURN_BATCH {
                    let Some(env) = self.pop(svc) else {
                        break;
                    };
                    b.handle(self, svc, env);
                    if svc.is_exiting() {
                        break;
                    }
                }
                b.end_turn(self, svc);
            }));
            if result.is_err() {
                eprintln!("skysocket: service {} panicked; killed", svc.id);
                svc.request_exit();
            }
        }
        let mut m = svc.mail.lock();
        if m.dead || svc.is_exiting() || body.is_none() {
            let was_dead = m.dead;
            m.dead = true;
            m.run = Run::Idle;
            drop(m);
            drop(body);
            if !was_dead {
                self.bury(svc);
            }
            self.unregister(svc);
            return;
        }
        *svc.body.lock() = body;
        if m.queue.is_empty() {
            m.run = Run::Idle;
        } else {
            m.run = Run::Queued;
            drop(m);
            self.enqueue(svc.clone());
        }
    }

    /// Stop the workers and the timer thread and wait for them (for tests; the global
    /// runtime lives as long as the process). Services left are killed.
    pub fn shutdown(&self) {
        let ids: Vec<ServiceId> = self.inner.services.read().keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        self.inner.runq.lock().shutdown = true;
        self.inner.runq_cv.notify_all();
        let handles = std::mem::take(&mut self.inner.pool.lock().handles);
        for h in handles {
            let _ = h.join();
        }
        let thread = {
            let mut t = self.inner.timers.lock();
            t.shutdown = true;
            t.thread.take()
        };
        self.inner.timers_cv.notify_all();
        if let Some(h) = thread {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
