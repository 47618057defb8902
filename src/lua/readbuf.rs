//! The read buffer data structures of buffered and framed mode (no Lua here): the
//! per-socket `ReadBuf` with its framing, the map of them, and the spare storage of
//! drained buffers. `buffer.rs` routes bytes into them; `buffer_api.rs` exposes them
//! to Lua.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::engine::{IdHasher, SocketId};

/// Storage of drained read buffers, kept for the next arrival on an empty buffer, so
/// neither the small-message hot path nor a stream pays malloc/free per read (for
/// reads of 64 KiB and more, a free at the top of the heap gives pages back to the
/// kernel with `brk` and the next read faults them in again). Bounded in count and
/// bytes, so idle connections hold no storage whatever they received before.
#[derive(Default)]
pub struct Spare {
    pub(super) small: Vec<Vec<u8>>,
    pub(super) large: Vec<Vec<u8>>,
    pub(super) large_bytes: usize,
}

/// Small vectors: up to `SMALL_BYTES` each, at most `SMALL_MAX` of them.
const SMALL_BYTES: usize = 4096;
const SMALL_MAX: usize = 128;
/// Large vectors: up to `LARGE_BYTES` each, `LARGE_TOTAL` bytes in all.
const LARGE_BYTES: usize = 512 * 1024;
const LARGE_TOTAL: usize = 4 * 1024 * 1024;

impl Spare {
    /// Storage for an empty buffer about to receive `len` bytes, if any is kept.
    pub(super) fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        if len > SMALL_BYTES {
            if let Some(v) = self.large.pop() {
                self.large_bytes -= v.capacity();
                return Some(v);
            }
        }
        self.small.pop()
    }

    /// Keep the storage of a drained buffer, or free it.
    pub(super) fn give(&mut self, mut v: Vec<u8>) {
        v.clear();
        let cap = v.capacity();
        if cap <= SMALL_BYTES {
            if self.small.len() < SMALL_MAX {
                self.small.push(v);
            }
        } else if cap <= LARGE_BYTES && self.large_bytes + cap <= LARGE_TOTAL {
            self.large_bytes += cap;
            self.large.push(v);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Framing {
    pub(super) header: usize,
    pub(super) max: usize,
}

impl Framing {
    pub(super) fn encode(&self, len: usize, out: &mut Vec<u8>) {
        if self.header == 2 {
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    pub(super) fn decode(&self, b: &[u8]) -> usize {
        if self.header == 2 {
            u16::from_be_bytes([b[0], b[1]]) as usize
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        }
    }
}

/// One per buffered socket, so kept small (56 bytes): an idle coroutine server holds
/// one per connection. What only framing or readline need lives in `Extra`, allocated
/// the first time it is used.
#[derive(Default)]
pub struct ReadBuf {
    pub(super) data: Vec<u8>,
    /// Bytes before `pos` were consumed.
    pub(super) pos: usize,
    /// Pause threshold (0 = never pause); `u32`, clamped, so that `handler` fits in 56
    /// bytes (a 4 GiB threshold is as good as none).
    pub(super) limit: u32,
    pub(super) extra: Option<Box<Extra>>,
    /// The address (`lua_topointer`) of the socket's own handler table, 0 without one:
    /// the delivery loop sees that the socket's handler is the one it has cached
    /// without a Lua lookup (every socket of the coroutine layer has the same). Kept
    /// exact by `State::set_handler` and set when the buffer is made, so an address
    /// here is that of a live table (`socket_handlers` holds it).
    pub(super) handler: usize,
    /// Data stays here and `readable` is called (false: framed callback mode).
    pub(super) buffered: bool,
    /// We paused the engine's reading for back-pressure.
    pub(super) auto_paused: bool,
    /// The user paused the socket: never resume it on their behalf.
    pub(super) user_paused: bool,
    /// The `close`/`error` message was delivered (no more data will come).
    pub(super) closed: bool,
}

const _: () = assert!(std::mem::size_of::<ReadBuf>() <= 56);

#[derive(Default)]
pub(super) struct Extra {
    pub(super) framing: Option<Framing>,
    /// Set when we closed the socket for a protocol error (oversized frame).
    pub(super) error: Option<String>,
    /// readline: the separator last searched for and where the search can resume.
    pub(super) scan: Option<(Vec<u8>, usize)>,
}

impl ReadBuf {
    /// Set the pause threshold (clamped to `u32::MAX`).
    pub(super) fn set_limit(&mut self, bytes: usize) {
        self.limit = u32::try_from(bytes).unwrap_or(u32::MAX);
    }

    pub(super) fn framing(&self) -> Option<Framing> {
        self.extra.as_ref().and_then(|e| e.framing)
    }

    pub(super) fn error(&self) -> Option<&String> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    pub(super) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub(super) fn unread(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.pos += n;
        if let Some(e) = self.extra.as_mut() {
            e.scan = None;
        }
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.data.len() {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
    }

    pub(super) fn append(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.data.len() {
            // Most of the vector is consumed: compact before growing.
            if let Some((_, scanned)) = self.extra.as_mut().and_then(|e| e.scan.as_mut()) {
                *scanned -= self.pos;
            }
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    /// The effective pause threshold: in framed mode at least one whole frame fits.
    pub(super) fn pause_limit(&self) -> usize {
        match self.framing() {
            _ if self.limit == 0 => usize::MAX,
            Some(f) => (self.limit as usize).max(f.max + f.header),
            None => self.limit as usize,
        }
    }

    /// Length of the next complete frame's payload, `Ok(None)` if incomplete,
    /// `Err(len)` if the prefix claims more than the maximum.
    pub(super) fn next_frame(&self) -> Result<Option<usize>, usize> {
        let Some(f) = self.framing() else {
            return Ok(None);
        };
        let b = self.bytes();
        if b.len() < f.header {
            return Ok(None);
        }
        let len = f.decode(b);
        if len > f.max {
            return Err(len);
        }
        Ok((b.len() - f.header >= len).then_some(len))
    }

    /// Position of `sep` in the unread bytes, resuming the previous search.
    pub(super) fn find(&mut self, sep: &[u8]) -> Option<usize> {
        let from = match self.extra.as_ref().and_then(|e| e.scan.as_ref()) {
            Some((s, at)) if s.as_slice() == sep => *at,
            _ => self.pos,
        };
        let hay = &self.data[from..];
        match find_sep(hay, sep) {
            Some(i) => Some(from + i - self.pos),
            None => {
                // The separator may straddle the end: rescan its last len-1 bytes.
                let next = (self.data.len() + 1)
                    .saturating_sub(sep.len())
                    .max(self.pos);
                // Remember the progress (not when there is none: a miss on an empty
                // or short buffer, e.g. a server looking for the next request, then
                // costs no allocation).
                if next > from {
                    self.extra().scan = Some((sep.to_vec(), next));
                }
                None
            }
        }
    }
}

/// Position of `sep` (not empty) in `hay`: candidates by its first byte, then one
/// comparison each (not one comparison per position).
fn find_sep(hay: &[u8], sep: &[u8]) -> Option<usize> {
    let (&first, rest) = sep.split_first()?;
    let mut at = 0;
    while let Some(i) = hay.get(at..)?.iter().position(|&c| c == first) {
        let start = at + i;
        let end = start + sep.len();
        if end > hay.len() {
            return None;
        }
        if &hay[start + 1..end] == rest {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

pub type Buffers = HashMap<SocketId, ReadBuf, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_sep_matches_a_naive_search() {
        let naive = |h: &[u8], s: &[u8]| h.windows(s.len()).position(|w| w == s);
        let seps: [&[u8]; 4] = [b"\n", b"\r\n", b"\r\n\r\n", b"abcab"];
        let hays: [&[u8]; 9] = [
            b"",
            b"\r",
            b"\r\n\r",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"a\r\r\n\r\r\n\r\nb",
            b"\r\n\r\n",
            b"abcabcab",
            b"ababcabcab",
            b"xx\nyy",
        ];
        for h in hays {
            for s in seps {
                assert_eq!(find_sep(h, s), naive(h, s), "{h:?} {s:?}");
            }
        }
        assert_eq!(find_sep(b"abc", b""), None);
    }

    #[test]
    fn spare_storage_is_reused_by_size_and_bounded() {
        let mut spare = Spare::default();
        assert!(spare.take(10).is_none());
        spare.give(Vec::with_capacity(100));
        spare.give(Vec::with_capacity(256 * 1024));
        // A big arrival gets the big vector, a small one the small vector.
        assert!(spare.take(64 * 1024).unwrap().capacity() >= 256 * 1024);
        assert_eq!(spare.large_bytes, 0);
        assert!(spare.take(10).unwrap().capacity() >= 100);
        assert!(spare.take(10).is_none());
        // Vectors past the size cap are freed, and the large list stays in budget.
        spare.give(Vec::with_capacity(LARGE_BYTES + 1));
        assert!(spare.large.is_empty());
        for _ in 0..100 {
            spare.give(Vec::with_capacity(LARGE_BYTES));
        }
        assert!(spare.large_bytes <= LARGE_TOTAL);
        assert_eq!(spare.large.len(), LARGE_TOTAL / LARGE_BYTES);
        for _ in 0..1000 {
            spare.give(Vec::with_capacity(64));
        }
        assert_eq!(spare.small.len(), SMALL_MAX);
        // Given-back storage comes back empty.
        let mut v = Vec::with_capacity(200);
        v.extend_from_slice(b"leftover");
        let mut s = Spare::default();
        s.give(v);
        assert!(s.take(1).unwrap().is_empty());
    }
}
