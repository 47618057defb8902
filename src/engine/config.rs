//! Engine settings.

use std::time::Duration;

use super::resolver::{self, ResolveFn};

/// Engine settings. `Default` gives Skynet's values where Skynet has one.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most sockets open at once (slot memory is allocated lazily, 1,024 at a time).
    pub max_sockets: usize,
    /// First read size of a new socket; reads double while they fill the buffer.
    pub min_read: usize,
    /// Upper bound of the adaptive read size.
    pub max_read: usize,
    /// Queue size that triggers the first `Warning` (then each doubling).
    pub warn_size: usize,
    /// Hard write-queue limit given to new sockets (0 = none). A send past a socket's
    /// limit fails with `Error::LimitExceeded` and the socket is dropped: closed by
    /// force, its owner told with `Error` (the stream is broken anyway).
    pub default_write_limit: usize,
    /// TCP_NODELAY on every accepted and connected TCP socket (default `true`, as
    /// Redis, nginx and Go do: request/response traffic otherwise stalls ~40 ms per
    /// round trip on Nagle's algorithm against the peer's delayed ACK).
    pub nodelay: bool,
    /// For tests: the tag a slot's first socket gets, so ids can start near the top of
    /// the id space (2^53) and wrap. Default 0 (tags count 1, 2, …).
    pub first_tag: u64,
    /// Most bytes queued for writing in all sockets together (0 = none). Past it, a
    /// send that must queue behind data already queued on its socket fails with
    /// `Error::BudgetExceeded` and the socket is dropped as for the write limit, so the
    /// peers that do not read pay, not the process; a socket with an empty queue (a
    /// peer that keeps up) may still queue one send.
    pub write_budget: usize,
    /// A poll stops taking events once its batch holds this many payload bytes.
    pub batch_bytes: usize,
    /// Accepts taken per listener readiness event.
    pub accept_burst: usize,
    /// Keep a spare descriptor open for the `EMFILE` accept trick (free it, accept the
    /// pending connection, close that, re-open the spare). Off only for tests.
    pub reserve_fd: bool,
    /// When an accept fails for lack of descriptors and the spare cannot take the
    /// connection off the queue, the listener stops reading for this long instead of
    /// spinning on its level-triggered readiness.
    pub accept_backoff: Duration,
    /// A flushing `close` whose queue makes no progress (not one byte written) for this
    /// long is finished by force: the rest of the queue is dropped and the owner gets
    /// `Close` with a note in `data`. Measured from the last successful write, so a
    /// slow but live peer is never cut off. `None`: wait forever (Skynet's behaviour).
    /// Default: 60 s.
    pub close_timeout: Option<Duration>,
    /// The host-name lookup used by `connect_host`, `listen_host` and `resolve*`
    /// (default: `resolver::system_resolve`, i.e. getaddrinfo).
    pub resolver: ResolveFn,
    /// Most resolver threads (started lazily, on the first lookup of a name).
    pub resolver_threads: usize,
    /// A TLS socket whose handshake has not finished this long after it started
    /// fails with a timeout error (`None`: no limit). Default: 30 s.
    pub tls_handshake_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_sockets: 65536,
            min_read: 64,
            max_read: 128 * 1024,
            warn_size: 1024 * 1024,
            default_write_limit: 0,
            nodelay: true,
            first_tag: 0,
            write_budget: 0,
            batch_bytes: 4 * 1024 * 1024,
            accept_burst: 32,
            reserve_fd: true,
            accept_backoff: Duration::from_millis(100),
            close_timeout: Some(Duration::from_secs(60)),
            resolver: resolver::system_resolve,
            resolver_threads: 2,
            tls_handshake_timeout: Some(Duration::from_secs(30)),
        }
    }
}
