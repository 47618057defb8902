//! Random bytes from the operating system (`/dev/urandom`, on every Unix we support).

use std::io::{self, Read};

/// Fill `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
