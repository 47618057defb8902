//! The process engine, once services exist: one engine for every Lua state of the
//! process, polled by a socket thread of its own, which posts each message to the
//! mailbox of the service that owns the socket.
//!
//! Before the first service starts, the root state polls its engine itself (the
//! single-state path, unchanged). `service.new` moves the poll side of the root's
//! engine to the socket thread (`Engine::detach`); the root and every service then hold
//! a remote view of it (their operations go through the engine's command queue like a
//! `Handle`'s) and receive their socket messages as mail.
//!
//! Owners: a socket's owner token is the service id of the state that made it (0 for
//! the root, whose early sockets were made before it had an id), [`PARKED`] while it is
//! between two owners. Handoff (`abandon` in one service, `start` in another) must not
//! lose or reorder bytes, though messages may already be on their way to the old owner
//! when it lets go. So `routes` (one lock, taken by the socket thread while it posts a
//! batch) records the sockets that changed hands: `abandon` pauses the socket, takes its
//! messages still in the old owner's mailbox (and the unread bytes of its read buffer)
//! into a parked list, and every later message joins that list; `start` posts the list
//! to the new owner and sends what follows there too. Messages are posted in the order
//! the engine produced them, so the new owner sees the bytes in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::engine::{Batch, Engine, Handle, Msg, MsgKind, Parts, SocketId};
use crate::service::{Envelope, Kind, Runtime, Service, ServiceId, Val};

/// Owner token of a socket between two owners (after `abandon`, before `start`).
pub const PARKED: u64 = u64::MAX;

/// Where the messages of a socket that changed hands go.
enum Dest {
    /// Abandoned: kept here, in order, until a service starts the socket.
    Parked(Vec<Envelope>),
    /// Started by this service after an abandon.
    To(ServiceId),
}

pub struct Shared {
    handle: Handle,
    routes: Mutex<HashMap<SocketId, Dest>>,
    /// Bytes of each socket posted to its owner and not delivered yet.
    inflight: Mutex<HashMap<SocketId, Flight>>,
}

/// Back-pressure between the socket thread and a service that does not keep up:
/// past `HOLD_AT` undelivered bytes the socket thread stops reading the socket, and
/// reads again once the owner has taken all but `RELEASE_AT` of them. (Without it a
/// fast sender could fill a slow service's mailbox without bound.)
const HOLD_AT: usize = 256 * 1024;
const RELEASE_AT: usize = 64 * 1024;

#[derive(Default)]
struct Flight {
    bytes: usize,
    held: bool,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The process engine, once services exist.
pub fn get() -> Option<&'static Shared> {
    SHARED.get()
}

/// Whether the socket thread runs (one load).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Make `engine` (the root state's) the process engine: its poll side goes to a new
/// socket thread and `engine` becomes a remote view. Idempotent.
pub fn start(engine: &mut Engine) -> Result<&'static Shared, String> {
    if let Some(s) = SHARED.get() {
        return Ok(s);
    }
    let poll = engine
        .detach()
        .ok_or("skysocket: this state's engine is not the one that polls")?;
    let shared = SHARED.get_or_init(|| Shared {
        handle: engine.handle(),
        routes: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashMap::new()),
    });
    std::thread::Builder::new()
        .name("skysocket-sockets".into())
        .spawn(move || socket_thread(poll, shared))
        .map_err(|e| format!("skysocket: cannot start the socket thread: {e}"))?;
    ACTIVE.store(true, Ordering::Release);
    Ok(shared)
}

fn socket_thread(mut engine: Engine, shared: &'static Shared) {
    let mut batch = Batch::new();
    loop {
        match engine.poll(&mut batch, None) {
            Ok(_) => shared.route(&batch),
            Err(e) => {
                // epoll_wait/kevent do not fail on a sound poller; do not spin if so.
                eprintln!("skysocket: the socket thread's poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Shared {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Post every message of `batch` to its socket's owner.
    fn route(&self, batch: &Batch) {
        if batch.is_empty() {
            return;
        }
        let rt = Runtime::global();
        let root = rt.root();
        let mut orphans = Vec::new();
        {
            let mut routes = self.routes.lock();
            for msg in batch.iter() {
                let id = msg.id();
                let moved = if id != 0 && !routes.is_empty() {
                    routes.get_mut(&id)
                } else {
                    None
                };
                let to = match moved {
                    Some(Dest::Parked(list)) => {
                        if msg.is_final() {
                            // Gone before anyone took it over: nobody will read this.
                            routes.remove(&id);
                        } else {
                            list.push(encode(&msg));
                        }
                        continue;
                    }
                    Some(Dest::To(t)) => {
                        let t = *t;
                        if msg.is_final() {
                            routes.remove(&id);
                        }
                        Some(t)
                    }
                    None => match msg.owner() {
                        PARKED => continue,
                        0 => root,
                        t => Some(t),
                    },
                };
                // Counted before the post: the owner may take it at once.
                self.in_flight(&msg);
                let posted = to.is_some_and(|t| rt.post(t, encode(&msg)).is_ok());
                if !posted {
                    self.inflight.lock().remove(&id);
                    // The owner is gone: its sockets go with it.
                    match msg {
                        Msg::Accept { id, .. } => orphans.push(id),
                        m if id != 0 && !m.is_final() => orphans.push(id),
                        _ => {}
                    }
                }
            }
        }
        for id in orphans {
            let _ = self.handle.ops().close(id, true);
        }
    }

    /// Count a posted message's bytes; hold the socket past `HOLD_AT`.
    fn in_flight(&self, msg: &Msg) {
        let (id, len) = match *msg {
            Msg::Data { id, data, .. } | Msg::Udp { id, data, .. } => (id, data.len()),
            ref m if m.is_final() => {
                self.inflight.lock().remove(&m.id());
                return;
            }
            _ => return,
        };
        let mut f = self.inflight.lock();
        let e = f.entry(id).or_default();
        e.bytes += len;
        if e.bytes > HOLD_AT && !e.held {
            e.held = true;
            let _ = self.handle.ops().hold(id, true);
        }
    }

    /// The owner took `len` bytes of socket `id` out of its mailbox.
    pub fn delivered(&self, id: SocketId, len: usize) {
        let mut f = self.inflight.lock();
        let Some(e) = f.get_mut(&id) else {
            return;
        };
        e.bytes = e.bytes.saturating_sub(len);
        if e.held && e.bytes <= RELEASE_AT {
            e.held = false;
            let _ = self.handle.ops().hold(id, false);
        }
    }

    /// `abandon`: take socket `id` away from service `me` (reading pauses). Its
    /// messages still in `me`'s mailbox, after `unread` bytes (and a close the old
    /// owner's buffer had seen), wait for the next owner.
    ///
    /// A socket another service has started meanwhile (its `start` came first) is
    /// not taken back: this state only forgets it (`claim` moved what waited here).
    pub fn park(
        &self,
        me: &Service,
        token: u64,
        id: SocketId,
        unread: &[u8],
        closed: bool,
    ) -> crate::engine::Result<()> {
        let mut routes = self.routes.lock();
        let mut ops = self.handle.ops();
        if ops.owner_of(id)? != token {
            return Ok(());
        }
        ops.pause(id)?;
        ops.set_owner(id, PARKED)?;
        let mut list = Vec::new();
        if !unread.is_empty() {
            list.push(encode(&Msg::Data {
                id,
                owner: PARKED,
                data: unread,
            }));
        }
        if closed {
            list.push(encode(&Msg::Close {
                id,
                owner: PARKED,
                note: b"",
            }));
        }
        list.extend(Runtime::global().extract(me, |e| socket_of(e) == Some(id)));
        routes.insert(id, Dest::Parked(list));
        Ok(())
    }

    /// `start` in service `me` (owner token `token`): activate socket `id` for `me`,
    /// taking over what waited since an `abandon`. Returns whether it had been parked
    /// (its reading was paused by the abandon).
    ///
    /// Started while another service still owns it (no `abandon` first, or the
    /// `abandon` is yet to come): the socket's messages still in that service's
    /// mailbox come here first; bytes it had already buffered stay there.
    pub fn claim(&self, me: ServiceId, token: u64, id: SocketId) -> crate::engine::Result<bool> {
        let rt = Runtime::global();
        let mut routes = self.routes.lock();
        let mut ops = self.handle.ops();
        let before = ops.owner_of(id)?;
        ops.start(id, token)?;
        let (parked, waiting) = match routes.remove(&id) {
            Some(Dest::Parked(list)) => (true, list),
            _ if before != token && before != PARKED => {
                let prev = if before == 0 { rt.root() } else { Some(before) };
                let waiting = prev
                    .and_then(|p| rt.lookup(p))
                    .map(|svc| rt.extract(&svc, |e| socket_of(e) == Some(id)))
                    .unwrap_or_default();
                (false, waiting)
            }
            _ => return Ok(false),
        };
        for env in waiting {
            let _ = rt.post(me, env);
        }
        // Messages produced for the previous owner may still be on their way.
        routes.insert(id, Dest::To(me));
        Ok(parked)
    }

    /// A service ended: close the sockets it still owns.
    pub fn close_owned(&self, owner: u64) -> usize {
        self.handle.ops().close_owned(owner)
    }
}

// ---- messages as mail ----

/// A socket message as a mailbox message (`Kind::Socket`).
pub fn encode(msg: &Msg) -> Envelope {
    let p = msg.parts();
    Envelope {
        from: 0,
        kind: Kind::Socket,
        args: vec![
            Val::Int(p.kind.code() as i64 | (p.flag as i64) << 8),
            Val::Int(p.id as i64),
            Val::Int(p.owner as i64),
            Val::Int(p.num as i64),
            Val::Str(p.a.into()),
            Val::Str(p.b.into()),
        ],
    }
}

/// The socket message in a `Kind::Socket` envelope's arguments.
pub fn decode(args: &[Val]) -> Option<Msg<'_>> {
    let [Val::Int(code), Val::Int(id), Val::Int(owner), Val::Int(num), Val::Str(a), Val::Str(b)] =
        args
    else {
        return None;
    };
    Some(
        Parts {
            kind: MsgKind::from_code((*code & 0xff) as u8)?,
            flag: code & 0x100 != 0,
            id: *id as u64,
            owner: *owner as u64,
            num: *num as u64,
            a,
            b,
        }
        .msg(),
    )
}

/// The socket a mailbox message is about (for `Accept`: the listener).
fn socket_of(e: &Envelope) -> Option<SocketId> {
    match (&e.kind, e.args.get(1)) {
        (Kind::Socket, Some(Val::Int(id))) if *id != 0 => Some(*id as u64),
        _ => None,
    }
}

// ---- the root's wait ----

/// What the root waits on for mail once the socket thread polls the engine.
pub struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

pub static ROOT_BELL: Bell = Bell {
    rung: Mutex::new(false),
    cv: Condvar::new(),
};

impl Bell {
    pub fn ring(&self) {
        *self.rung.lock() = true;
        self.cv.notify_one();
    }

    /// Wait until rung (since the last wait) or `timeout` passes (`None`: no limit).
    pub fn wait(&self, timeout: Option<Duration>) {
        let mut rung = self.rung.lock();
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        while !*rung {
            match until {
                Some(at) => {
                    if self.cv.wait_until(&mut rung, at).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut rung),
            }
        }
        *rung = false;
    }
}
