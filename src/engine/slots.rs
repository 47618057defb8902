//! The slot pool: tagged socket ids over lazily allocated pages of slots.
//!
//! An id is `(tag << index_bits) | index`. Each slot counts its own allocations in
//! `tag`, so an id whose socket was closed and whose slot now holds another socket has
//! a different tag: every lookup compares the full id and a stale id never reaches the
//! new owner. Ids stay below 2^53 so they are exact in every Lua number type.

use std::sync::OnceLock;

use parking_lot::{Mutex, MutexGuard};

use super::socket::Socket;

pub type SocketId = u64;

/// Slots per lazily allocated page.
const PAGE: usize = 1024;
/// Ids must be exact as Lua 5.1/LuaJIT doubles.
const ID_BITS: u32 = 53;

pub(crate) struct Slot {
    pub sock: Mutex<Socket>,
}

struct Alloc {
    /// Released slot indexes, reused last-in first-out (their memory is warm).
    free: Vec<u32>,
    /// Slots below this index have been handed out at least once.
    high_water: u32,
    live: usize,
    /// Allocation count per slot, the id's tag.
    tags: Vec<u64>,
}

/// A page of slots, a fixed-size array so an index within it needs no bounds check.
type Page = [Slot; PAGE];

pub(crate) struct Slots {
    pages: Box<[OnceLock<Box<Page>>]>,
    capacity: usize,
    index_bits: u32,
    /// `(1 << index_bits) - 1`: the index part of an id.
    index_mask: u64,
    /// Tag a fresh slot starts from (its first socket gets the next one).
    first_tag: u64,
    alloc: Mutex<Alloc>,
}

impl Slots {
    #[cfg(test)]
    pub fn new(capacity: usize) -> Slots {
        Slots::with_first_tag(capacity, 0)
    }

    /// A pool whose fresh slots start counting tags from `first_tag` (clamped to the
    /// id space), for tests of ids near 2^53 and of the wrap back to tag 1.
    pub fn with_first_tag(capacity: usize, first_tag: u64) -> Slots {
        let capacity = capacity.clamp(1, 1 << 30);
        let index_bits = (usize::BITS - (capacity - 1).leading_zeros()).max(1);
        let max_tag = (1u64 << (ID_BITS - index_bits)) - 1;
        let pages = capacity.div_ceil(PAGE);
        Slots {
            pages: (0..pages).map(|_| OnceLock::new()).collect(),
            capacity,
            index_bits,
            index_mask: (1u64 << index_bits) - 1,
            first_tag: first_tag.min(max_tag),
            alloc: Mutex::new(Alloc {
                free: Vec::new(),
                high_water: 0,
                live: 0,
                tags: Vec::new(),
            }),
        }
    }

    pub fn live(&self) -> usize {
        self.alloc.lock().live
    }

    #[inline]
    pub fn index_of(&self, id: SocketId) -> usize {
        (id & self.index_mask) as usize
    }

    #[inline]
    fn slot(&self, index: usize) -> Option<&Slot> {
        self.pages
            .get(index / PAGE)?
            .get()
            .map(|p| &p[index % PAGE])
    }

    /// Reserve a slot and return its new id with the socket locked, or `None` when all
    /// `capacity` slots are in use.
    pub fn reserve(&self) -> Option<(SocketId, MutexGuard<'_, Socket>)> {
        let (index, tag) = {
            let mut a = self.alloc.lock();
            let index = match a.free.pop() {
                Some(i) => i as usize,
                None if (a.high_water as usize) < self.capacity => {
                    a.high_water += 1;
                    a.tags.push(self.first_tag);
                    a.high_water as usize - 1
                }
                None => return None,
            };
            let max_tag = (1u64 << (ID_BITS - self.index_bits)) - 1;
            let tag = &mut a.tags[index];
            *tag = if *tag >= max_tag { 1 } else { *tag + 1 };
            let tag = *tag;
            a.live += 1;
            (index, tag)
        };
        let page = self.pages[index / PAGE].get_or_init(|| {
            let slots: Box<[Slot]> = (0..PAGE)
                .map(|_| Slot {
                    sock: Mutex::new(Socket::default()),
                })
                .collect();
            slots.try_into().ok().expect("a page has PAGE slots")
        });
        let id = (tag << self.index_bits) | index as u64;
        let mut sock = page[index % PAGE].sock.lock();
        debug_assert!(sock.id == 0, "reserved slot still in use");
        sock.id = id;
        Some((id, sock))
    }

    /// Lock the socket of `id` if the id is current; `None` for stale or unknown ids.
    #[inline]
    pub fn lock(&self, id: SocketId) -> Option<MutexGuard<'_, Socket>> {
        // A free slot holds id 0; an id past the id space matches no socket (the
        // comparison below rejects it), so 0 is the only id to refuse up front.
        if id == 0 {
            return None;
        }
        let sock = self.slot(self.index_of(id))?.sock.lock();
        (sock.id == id).then_some(sock)
    }

    /// Return a slot to the pool. The caller has already reset the socket (id 0).
    pub fn release(&self, id: SocketId) {
        let index = self.index_of(id) as u32;
        let mut a = self.alloc.lock();
        a.free.push(index);
        a.live -= 1;
    }

    /// Every live id (for stats).
    pub fn live_ids(&self) -> Vec<SocketId> {
        let high = self.alloc.lock().high_water as usize;
        (0..high)
            .filter_map(|i| {
                let id = self.slot(i)?.sock.lock().id;
                (id != 0).then_some(id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn take(slots: &Slots) -> SocketId {
        slots.reserve().expect("a free slot").0
    }

    fn give_back(slots: &Slots, id: SocketId) {
        let mut s = slots.lock(id).expect("live id");
        *s = Socket::default();
        drop(s);
        slots.release(id);
    }

    #[test]
    fn two_hundred_thousand_slots() {
        let slots = Slots::new(200_000);
        assert_eq!(slots.index_bits, 18);
        let mut indexes = HashSet::new();
        let mut ids = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            let id = take(&slots);
            assert!(id < 1 << ID_BITS);
            assert!(indexes.insert(slots.index_of(id)), "index handed out twice");
            ids.push(id);
        }
        assert_eq!(slots.live(), 200_000);
        assert!(slots.reserve().is_none(), "capacity is a hard limit");
        assert!(ids.iter().any(|&id| slots.index_of(id) > 65_536));
        // Every id still resolves to its own socket, including the high pages.
        for &id in ids.iter().step_by(997).chain(ids.last()) {
            assert_eq!(slots.lock(id).unwrap().id, id);
        }
        let last = *ids.last().unwrap();
        give_back(&slots, last);
        let again = take(&slots);
        assert_eq!(slots.index_of(again), slots.index_of(last));
        assert_ne!(again, last);
        assert!(slots.lock(last).is_none());
    }

    #[test]
    fn stale_ids_never_reach_a_new_owner_over_a_million_allocations() {
        let slots = Slots::new(4);
        let mut seen = HashSet::new();
        let mut live: Vec<SocketId> = Vec::new();
        let mut stale: Vec<SocketId> = Vec::new();
        let mut x: u64 = 0x9e37_79b9;
        for round in 0..1_200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.len() < 4 && (live.is_empty() || x % 2 == 0) {
                let id = take(&slots);
                assert!(seen.insert(id), "id {id:#x} issued twice (round {round})");
                live.push(id);
            } else {
                let id = live.swap_remove((x % live.len() as u64) as usize);
                give_back(&slots, id);
                stale.push(id);
                if stale.len() > 64 {
                    stale.remove(0);
                }
            }
            if round % 1000 == 0 {
                for &old in &stale {
                    assert!(slots.lock(old).is_none(), "stale id {old:#x} resolved");
                }
            }
        }
        assert!(seen.len() > 500_000, "only {} allocations", seen.len());
        for &id in &live {
            assert_eq!(slots.lock(id).unwrap().id, id);
        }
    }

    #[test]
    fn first_tag_starts_ids_near_2_pow_53_and_wraps_to_tag_1() {
        let slots = Slots::with_first_tag(16, u64::MAX);
        let max_tag = (1u64 << (ID_BITS - slots.index_bits)) - 1;
        let first = take(&slots);
        // Clamped to the id space: the first socket is the wrap itself (tag 1).
        assert_eq!(first >> slots.index_bits, 1);
        give_back(&slots, first);
        let slots = Slots::with_first_tag(16, max_tag - 2);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = take(&slots);
            ids.push(id);
            give_back(&slots, id);
        }
        let tags: Vec<u64> = ids.iter().map(|id| id >> slots.index_bits).collect();
        assert_eq!(tags, [max_tag - 1, max_tag, 1, 2]);
        assert!(ids[1] < 1 << ID_BITS && ids[1] > (1 << ID_BITS) - 32);
        for id in ids {
            assert!(slots.lock(id).is_none(), "released id {id:#x} resolved");
        }
    }

    #[test]
    fn bogus_ids_are_rejected() {
        let slots = Slots::new(16);
        let id = take(&slots);
        assert!(slots.lock(0).is_none());
        assert!(slots.lock(u64::MAX).is_none());
        assert!(slots.lock(1 << ID_BITS).is_none());
        assert!(
            slots.lock(id + (1 << slots.index_bits)).is_none(),
            "wrong tag"
        );
        assert!(slots.lock(id).is_some());
    }
}
