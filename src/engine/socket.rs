//! One socket's data: descriptor, state machine position and flags, write queues,
//! stats. The transitions are in `fsm.rs`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use bytes::{Buf, Bytes};

use super::fsm::State;
use crate::sys::net::Addr;
use crate::sys::Interest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
    Unix,
    /// A descriptor adopted with `bind` (stdin, a pipe, a terminal, a socket made
    /// elsewhere): a stream read with read(2) and written with writev(2).
    Fd,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub read: u64,
    pub written: u64,
    /// Centiseconds since the engine started.
    pub rtime: u64,
    pub wtime: u64,
}

/// Write priority of a send (Skynet's PRIORITY_HIGH / PRIORITY_LOW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    High,
    Low,
}

/// Two FIFO queues. The buffer being sent is always at the front of `high`: a low
/// buffer is moved there as soon as its first byte goes out, so it finishes before
/// anything else is written and no two buffers ever interleave on the wire.
#[derive(Default)]
pub struct WriteQueue {
    high: VecDeque<Bytes>,
    low: VecDeque<Bytes>,
    bytes: usize,
}

impl WriteQueue {
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, data: Bytes, prio: Priority) {
        self.bytes += data.len();
        match prio {
            Priority::High => self.high.push_back(data),
            Priority::Low => self.low.push_back(data),
        }
    }

    /// Put every low-priority buffer behind the high ones, so what is queued now keeps
    /// its order against anything sent later (a STARTTLS upgrade needs this).
    #[cfg(feature = "tls")]
    pub fn promote_all_low(&mut self) {
        let low = std::mem::take(&mut self.low);
        self.high.extend(low);
    }

    /// Up to `max` buffers in send order (all high, then low).
    pub fn front_slices<'a>(&'a self, out: &mut Vec<&'a [u8]>, max: usize) {
        out.extend(
            self.high
                .iter()
                .chain(self.low.iter())
                .take(max)
                .map(|b| &b[..]),
        );
    }

    /// Drop `n` sent bytes from the front, raising a partly sent low buffer to the
    /// front of `high`.
    pub fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let from_high = !self.high.is_empty();
            let q = if from_high {
                &mut self.high
            } else {
                &mut self.low
            };
            let front = q.front_mut().expect("consumed more than queued");
            if n >= front.len() {
                n -= front.len();
                q.pop_front();
            } else {
                front.advance(n);
                n = 0;
                if !from_high {
                    let started = self.low.pop_front().expect("front exists");
                    self.high.push_front(started);
                }
            }
        }
    }
}

/// A slot's socket. `id == 0` means the slot is free.
#[derive(Default)]
pub struct Socket {
    pub id: u64,
    pub fd: Option<OwnedFd>,
    pub state: State,
    pub proto: Proto,
    /// The owner token carried by every message (Skynet's `opaque`).
    pub owner: u64,
    /// What the poller currently has for this fd (`None` = not registered).
    pub registered: Option<Interest>,
    /// Reading stopped by `pause`.
    pub paused: bool,
    /// `close` asked for: flush, then close. Reading has stopped.
    pub closing: bool,
    /// When `close` was asked for (centiseconds since engine start), for the close timeout.
    pub close_since: u64,
    /// A listener resting after an accept it could not serve (out of descriptors).
    pub accept_backoff: bool,
    /// `shutdown_write` asked for: send FIN once the queue drains.
    pub shut_wr: bool,
    /// The owner has been told `Close`/`Error` already; never tell it twice.
    pub reported: bool,
    /// Reading held back by the consumer: it has too many undelivered bytes of this
    /// socket (`Ops::hold`); independent of the owner's `pause`.
    pub held: bool,
    /// Released on another thread: the poll thread frees the slot soon. Until then
    /// operations see an unknown id and the poller's events are ignored.
    pub freeing: bool,
    /// After the peer's EOF, stay open (half-closed) for our replies until `close`,
    /// instead of closing as soon as nothing is queued (`set_keep_open`).
    pub keep_open: bool,
    pub read_size: u32,
    pub wq: WriteQueue,
    /// The next queue size that triggers a `Warning`.
    pub warn_at: usize,
    /// Hard limit on queued bytes (0 = none): sends beyond it fail.
    pub limit: usize,
    pub stats: Stats,
    /// UDP: the default peer set by `udp_connect`, and queued datagrams.
    pub udp: Option<Box<UdpState>>,
    /// `connect_host`: addresses still to try if the current connect fails.
    pub connect_rest: Option<VecDeque<std::net::SocketAddr>>,
    /// A Unix listener's socket file, removed when the listener is released (if the
    /// path still names the very file this listener created).
    pub unlink: Option<Box<SocketFile>>,
    /// A TLS stream's rustls connection (plaintext and ciphertext stay in the engine).
    #[cfg(feature = "tls")]
    pub tls: Option<Box<super::tls::TlsStream>>,
    /// A TLS listener: accepted sockets get a server connection of this context.
    #[cfg(feature = "tls")]
    pub tls_listen: Option<std::sync::Arc<super::tls::TlsContext>>,
}

/// A filesystem socket created by `listen`, identified by device and inode so closing
/// the listener never removes a file someone else put at the same path since.
pub struct SocketFile {
    pub path: std::path::PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl SocketFile {
    pub fn new(path: &std::path::Path) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Remove the file if it is still ours.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[derive(Default)]
pub struct UdpState {
    pub peer: Option<Addr>,
    pub queue: VecDeque<(Bytes, Addr)>,
}

impl Socket {
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Whether this is a TLS stream.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Whether this is a listener handing out TLS sockets.
    pub fn is_tls_listener(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls_listen.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }
}
