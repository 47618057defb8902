//! `IdHasher`: a fast hasher for engine-issued ids.

use std::hash::Hasher;

/// Hashes ids with one multiplication (Fibonacci hashing) instead of SipHash, for maps
/// looked up once or more per message (read buffers, timers) whose keys are ids the
/// engine hands out (a peer cannot choose them), so there is nothing to randomise
/// against.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
