//! Timers driven by the poll timeout: a binary heap of deadlines. Cancelling removes
//! the id from `live`; its heap entry is skipped when it reaches the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Instant;

use super::IdHasher;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashSet<u64, BuildHasherDefault<IdHasher>>,
    next_id: u64,
}

impl Timers {
    pub fn add(&mut self, deadline: Instant) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(id);
        id
    }

    pub fn cancel(&mut self, id: u64) -> bool {
        let was = self.live.remove(&id);
        if self.live.is_empty() {
            self.heap.clear();
        }
        was
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.live.contains(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pop every timer due at `now`, in deadline order (ties in creation order).
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(u64)) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.live.remove(&id) {
                fire(id);
            }
        }
    }
}

/// Engine-internal deadlines (never reported as `Timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Internal {
    /// A listener's accept backoff is over.
    AcceptResume(u64),
    /// Check whether a flushing close has stalled past `close_timeout`.
    CloseCheck(u64),
    /// Fail a TLS socket still handshaking.
    #[cfg(feature = "tls")]
    HandshakeCheck(u64),
}

/// The poll thread's internal deadlines, earliest first.
#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, Internal)>>,
}

impl Deadlines {
    /// `what` is due `after` from now.
    pub fn push(&mut self, after: std::time::Duration, what: Internal) {
        self.heap.push(Reverse((deadline_after(after), what)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest entry if it is due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<Internal> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, w))| w),
            _ => None,
        }
    }
}

/// `now + after`, capped at a century from now so it can never overflow `Instant`
/// (a huge Lua number of milliseconds is a timer that never fires, not a panic).
pub(crate) fn deadline_after(after: std::time::Duration) -> Instant {
    const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    Instant::now() + after.min(MAX_DELAY)
}
