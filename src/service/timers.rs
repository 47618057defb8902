//! Service timers: a heap of deadlines served by one thread, which posts `Timer(id)`
//! to the service when one is due. A timer due at once skips the thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Envelope, Kind, Runtime, ServiceId};

pub(super) struct Timers {
    pub(super) heap: BinaryHeap<Reverse<(Instant, u64, ServiceId)>>,
    pub(super) thread: Option<JoinHandle<()>>,
    pub(super) shutdown: bool,
}

impl Runtime {
    /// A timer: `Timer(id)` is posted to `to` after `after`. Returns the id.
    pub fn add_timer(&self, to: ServiceId, after: Duration) -> u64 {
        let id = self.inner.next_timer.fetch_add(1, Ordering::Relaxed);
        if after.is_zero() {
            // Due now: straight into the mailbox, behind what is there already (no
            // round trip through the timer thread).
            self.fire(to, id);
            return id;
        }
        let at = Instant::now() + after.min(Duration::from_secs(100 * 365 * 24 * 3600));
        let mut t = self.inner.timers.lock();
        let first = t
            .heap
            .peek()
            .map_or(true, |Reverse((next, _, _))| at < *next);
        t.heap.push(Reverse((at, id, to)));
        if t.thread.is_none() {
            let rt = self.clone();
            t.thread = Some(
                std::thread::Builder::new()
                    .name("skysocket-timers".into())
                    .spawn(move || rt.timer_thread())
                    .expect("cannot start the timer thread"),
            );
        }
        drop(t);
        if first {
            self.inner.timers_cv.notify_one();
        }
        id
    }

    fn timer_thread(&self) {
        let mut t = self.inner.timers.lock();
        loop {
            if t.shutdown {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse((at, id, to))) = t.heap.peek().copied() {
                if at > now {
                    break;
                }
                t.heap.pop();
                due.push((id, to));
            }
            if !due.is_empty() {
                drop(t);
                for (id, to) in due {
                    self.fire(to, id);
                }
                t = self.inner.timers.lock();
                continue;
            }
            match t.heap.peek().map(|Reverse((at, _, _))| *at) {
                Some(at) => {
                    self.inner.timers_cv.wait_until(&mut t, at);
                }
                None => self.inner.timers_cv.wait(&mut t),
            }
        }
    }

    /// Post `Timer(id)` to `to` (a dead service's timer is dropped).
    fn fire(&self, to: ServiceId, id: u64) {
        let _ = self.post(
            to,
            Envelope {
                from: 0,
                kind: Kind::Timer(id),
                args: Vec::new(),
            },
        );
    }
}
