//! Helpers for the engine tests: a poll loop with a deadline, and peers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skysocket::engine::{Batch, Config, Engine, Msg as EngineMsg, MsgKind, SocketId};
use skysocket::sys::net::{Addr, ListenOptions};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A message copied out of a batch, flattened for easy matching in tests: `ud` is
/// the accepted id (`Accept`), KiB (`Warning`), the timer (`Timer`), the request
/// (`Resolved`) or 1 for an `Error` that leaves the socket open; `extra` is the
/// sender of a datagram, or `b"error"` for a failed lookup.
#[derive(Clone, Debug)]
pub struct Msg {
    pub kind: MsgKind,
    pub id: SocketId,
    pub owner: u64,
    pub ud: u64,
    pub data: Vec<u8>,
    pub extra: Vec<u8>,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

pub struct Harness {
    pub engine: Engine,
    batch: Batch,
    /// Messages polled but not yet consumed by a `wait_for`.
    pub backlog: Vec<Msg>,
}

pub fn copy(m: EngineMsg<'_>) -> Msg {
    let (ud, data, extra): (u64, &[u8], &[u8]) = match m {
        EngineMsg::Data { data, .. } => (0, data, b""),
        EngineMsg::Open { peer, .. } => (0, peer, b""),
        EngineMsg::Accept { id, peer, .. } => (id, peer, b""),
        EngineMsg::Close { note, .. } => (0, note, b""),
        EngineMsg::Error { text, open, .. } => (open as u64, text, b""),
        EngineMsg::Udp { data, from, .. } => (0, data, from),
        EngineMsg::Warning { queued_kib, .. } => (queued_kib, b"", b""),
        EngineMsg::Timer { timer } => (timer, b"", b""),
        EngineMsg::Exit => (0, b"", b""),
        EngineMsg::Resolved {
            request, result, ..
        } => match result {
            Ok(t) => (request, t, b""),
            Err(t) => (request, t, b"error"),
        },
        EngineMsg::Handshake { alpn, .. } => (0, alpn, b""),
    };
    Msg {
        kind: m.kind(),
        id: m.id(),
        owner: m.owner(),
        ud,
        data: data.to_vec(),
        extra: extra.to_vec(),
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Harness {
        Harness {
            engine: Engine::new(config).expect("engine"),
            batch: Batch::new(),
            backlog: Vec::new(),
        }
    }

    /// One poll step; messages go to the backlog.
    pub fn step(&mut self, timeout: Duration) {
        self.engine
            .poll(&mut self.batch, Some(timeout))
            .expect("poll");
        for m in self.batch.iter() {
            self.backlog.push(copy(m));
        }
    }

    /// Poll until a message matching `pred` arrives; earlier messages stay in the backlog.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.backlog.iter().position(&pred) {
                return self.backlog.remove(i);
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; backlog: {:?}",
                self.backlog
            );
            self.step(Duration::from_millis(20));
        }
    }

    /// Poll, letting `f` consume messages, until `done()` says so.
    pub fn run_until(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Engine, Msg),
        mut done: impl FnMut(&mut Engine) -> bool,
    ) {
        let end = Instant::now() + DEADLINE;
        while !done(&mut self.engine) {
            assert!(Instant::now() < end, "timed out: {what}");
            self.step(Duration::from_millis(10));
            for m in std::mem::take(&mut self.backlog) {
                f(&mut self.engine, m);
            }
        }
    }

    /// Feed every message to `f` until it returns true; later messages stay queued.
    pub fn pump(&mut self, what: &str, mut f: impl FnMut(&mut Engine, Msg) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            while !self.backlog.is_empty() {
                let m = self.backlog.remove(0);
                if f(&mut self.engine, m) {
                    return;
                }
            }
            assert!(Instant::now() < end, "timed out: {what}");
            self.step(Duration::from_millis(10));
        }
    }

    pub fn listen(&mut self, host: &str) -> (SocketId, SocketAddr) {
        let addr: SocketAddr = if host.contains(':') {
            format!("[{host}]:0")
        } else {
            format!("{host}:0")
        }
        .parse()
        .unwrap();
        let (id, local) = self
            .engine
            .ops()
            .listen(
                &Addr::Inet(addr),
                ListenOptions {
                    backlog: 128,
                    reuseport: false,
                },
                7,
            )
            .expect("listen");
        let Some(Addr::Inet(local)) = local else {
            panic!("no local address")
        };
        self.engine.ops().start(id, 7).expect("start listener");
        (id, local)
    }

    /// Wait for the next accept on `listener` and start the new socket.
    pub fn accept(&mut self, listener: SocketId) -> SocketId {
        let m = self.wait_for("accept", |m| m.kind == MsgKind::Accept && m.id == listener);
        self.engine.ops().start(m.ud, 7).expect("start accepted");
        m.ud
    }
}

pub fn peer(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("peer connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// A port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("peer read");
    buf
}

pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

pub fn write_all(s: &mut TcpStream, b: &[u8]) {
    s.write_all(b).expect("peer write");
}

/// A small deterministic PRNG (xorshift) so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "skysocket-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn opts() -> ListenOptions {
    ListenOptions {
        backlog: 128,
        reuseport: false,
    }
}

/// Resident set size of this process in KiB (VmRSS from /proc/self/status).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether the long soak variants were asked for (`SKYSOCKET_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("SKYSOCKET_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A repeating pseudo-random byte pattern: connection `c`'s stream byte `i` is
/// `pattern[(i + offset(c)) % len]`, so writers and checkers slice it without
/// generating bytes one by one.
pub struct Pattern(pub Vec<u8>);

impl Pattern {
    pub fn new(len: usize, seed: u64) -> Pattern {
        Pattern(Rng(seed).bytes(len))
    }

    pub fn offset(&self, conn: usize) -> usize {
        (conn * 7919) % self.0.len()
    }

    /// The longest slice (at most `max`) of connection `conn`'s stream from `pos`.
    pub fn slice(&self, conn: usize, pos: u64, max: usize) -> &[u8] {
        let start = ((pos as usize % self.0.len()) + self.offset(conn)) % self.0.len();
        let end = (start + max).min(self.0.len());
        &self.0[start..end]
    }

    /// Check `got` against the stream of `conn` at `pos`.
    pub fn verify(&self, conn: usize, mut pos: u64, mut got: &[u8]) -> bool {
        while !got.is_empty() {
            let want = self.slice(conn, pos, got.len());
            if &got[..want.len()] != want {
                return false;
            }
            pos += want.len() as u64;
            got = &got[want.len()..];
        }
        true
    }
}
