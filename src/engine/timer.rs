//! Timers driven by the poll timeout: a binary heap of deadlines. Cancelling removes
//! the id from `live`; its heap entry is skipped when it reaches the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Instant;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashSet<u64>,
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
