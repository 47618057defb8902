//! Host-name resolution off the poll thread.
//!
//! `getaddrinfo` blocks, sometimes for seconds, so names are looked up on a small pool
//! of worker threads (started lazily, at most `Config::resolver_threads`). A finished
//! lookup goes back to the poll thread as a command, like any other cross-thread work.
//! Numeric addresses never reach the resolver.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use super::core::{Command, Core};
use super::slots::SocketId;

/// The lookup function: a host name (or numeric address) to its addresses, in the
/// order they should be tried. `Config::resolver` may replace the system one (tests
/// use that to simulate slow or failing DNS).
pub type ResolveFn = fn(&str) -> io::Result<Vec<IpAddr>>;

/// The system resolver (`getaddrinfo` through `std::net::ToSocketAddrs`). Blocking.
/// Numeric addresses (also `[v6]`) are parsed without a lookup. Duplicates are removed,
/// order kept.
pub fn system_resolve(host: &str) -> io::Result<Vec<IpAddr>> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if h.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty host name",
        ));
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for a in (h, 0u16).to_socket_addrs()? {
        if !out.contains(&a.ip()) {
            out.push(a.ip());
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{h}: no addresses"),
        ));
    }
    Ok(out)
}

/// What a lookup is for.
#[derive(Debug)]
pub(crate) enum Job {
    /// `connect_host`: the socket `id` (state Reserve) waits for the addresses.
    Connect {
        id: SocketId,
        host: String,
        port: u16,
    },
    /// `resolve_async`: answered with a `Resolved` message.
    Request { req: u64, owner: u64, host: String },
}

impl Job {
    fn host(&self) -> &str {
        match self {
            Job::Connect { host, .. } | Job::Request { host, .. } => host,
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    workers: usize,
    idle: usize,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

pub(crate) struct Resolver {
    shared: Arc<Shared>,
    max_workers: usize,
    lookup: ResolveFn,
    /// Lookups submitted whose answer the poll thread has not processed yet.
    in_flight: AtomicUsize,
}

impl Resolver {
    pub fn new(lookup: ResolveFn, max_workers: usize) -> Resolver {
        Resolver {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    workers: 0,
                    idle: 0,
                    shutdown: false,
                }),
                ready: Condvar::new(),
            }),
            max_workers: max_workers.max(1),
            lookup,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Blocking lookup; numeric addresses are parsed here and never reach the hook.
    pub fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        match super::address::parse_numeric(host, 0) {
            Some(a) => Ok(vec![a.ip()]),
            None => (self.lookup)(host),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The poll thread processed one answer.
    pub fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queue a lookup; its answer arrives as `Command::Resolved` on `core`.
    pub fn submit(&self, core: &Arc<Core>, job: Job) -> io::Result<()> {
        let mut q = self.shared.queue.lock();
        if q.shutdown {
            return Err(io::Error::other("engine is shut down"));
        }
        if q.idle == 0 && q.workers < self.max_workers {
            let shared = self.shared.clone();
            let weak = Arc::downgrade(core);
            let lookup = self.lookup;
            std::thread::Builder::new()
                .name("skysocket-resolver".into())
                .spawn(move || worker(shared, weak, lookup))?;
            q.workers += 1;
            q.idle += 1;
        }
        q.jobs.push_back(job);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Stop the workers once their current lookup returns (a blocked `getaddrinfo`
    /// cannot be interrupted; its answer is dropped).
    pub fn shutdown(&self) {
        let mut q = self.shared.queue.lock();
        q.shutdown = true;
        q.jobs.clear();
        drop(q);
        self.shared.ready.notify_all();
    }
}

fn worker(shared: Arc<Shared>, core: Weak<Core>, lookup: ResolveFn) {
    loop {
        let job = {
            let mut q = shared.queue.lock();
            loop {
                if q.shutdown {
                    q.workers -= 1;
                    q.idle -= 1;
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    q.idle -= 1;
                    break job;
                }
                shared.ready.wait(&mut q);
            }
        };
        // A panicking lookup hook must not take the worker (and the answer) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lookup(job.host())))
            .unwrap_or_else(|_| Err(io::Error::other("the resolver panicked")));
        {
            let mut q = shared.queue.lock();
            q.idle += 1;
        }
        match core.upgrade() {
            Some(core) => core.command(Command::Resolved { job, result }),
            None => {
                let mut q = shared.queue.lock();
                q.workers -= 1;
                q.idle -= 1;
                return;
            }
        }
    }
}

/// The text of a successful answer: one address per line.
pub(crate) fn addresses_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
