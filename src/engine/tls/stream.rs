//! A TLS stream socket on the poll thread: readable → `read` → `read_tls` →
//! `process_new_packets` → plaintext into the normal `Data` path; queued plaintext →
//! `writer()` (bounded by the connection's buffer limit) → `write_tls` until the
//! kernel would block. Ciphertext never leaves this file; other threads only queue
//! plaintext and ask the poll thread to flush. End-of-stream and drain decisions are
//! the socket state machine's (`fsm.rs`), as for a plain socket.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;

use rustls::Connection;

use crate::engine::core::Core;
use crate::engine::exec::PollIo;
use crate::engine::fsm::{State, Step};
use crate::engine::message::{Batch, Msg};
use crate::engine::socket::Socket;
use crate::engine::timer::Internal;
use crate::sys::net;
use crate::sys::Event;

/// Most plaintext rustls holds for us beyond what is already encrypted: the bounded
/// buffer between the socket's write queue and the TLS writer.
const TLS_BUFFER: usize = 64 * 1024;
/// Smallest read on a TLS socket (a record is up to ~16 KiB).
const TLS_MIN_READ: usize = 16 * 1024;

/// The TLS state of one stream socket.
pub(crate) struct TlsStream {
    conn: Connection,
    /// Whether the handshake was still going at the last look (to report its end once).
    handshaking: bool,
    /// `connect` with TLS: `Open` is held back until the handshake is done.
    pub announce_open: bool,
    /// Bytes at the front of the write queue that were queued before a STARTTLS
    /// upgrade: they go out as plaintext, before the handshake.
    plain_prefix: usize,
    /// Our `close_notify` is queued.
    notify_sent: bool,
}

impl TlsStream {
    pub fn new(mut conn: Connection, announce_open: bool, plain_prefix: usize) -> TlsStream {
        conn.set_buffer_limit(Some(TLS_BUFFER));
        TlsStream {
            conn,
            handshaking: true,
            announce_open,
            plain_prefix,
            notify_sent: false,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the socket needs write readiness: TLS output pending, plaintext queued
    /// before an upgrade, or (after the handshake) plaintext or a `close_notify` to send.
    pub fn wants_write(&self, queued: bool, finishing: bool) -> bool {
        self.conn.wants_write()
            || self.plain_prefix > 0
            || (!self.conn.is_handshaking() && (queued || (finishing && !self.notify_sent)))
    }
}

/// Whether the socket is on its way out, so `close_notify` must follow its data.
fn finishing(sock: &Socket) -> bool {
    sock.closing || sock.shut_wr || (sock.state == State::HalfCloseRead && !sock.keep_open)
}

impl Socket {
    pub(crate) fn tls_wants_write(&self) -> Option<bool> {
        self.tls
            .as_ref()
            .map(|t| t.wants_write(!self.wq.is_empty(), finishing(self)))
    }
}

/// The descriptor as `Read`/`Write` for rustls.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        net::read(self.0, buf)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        net::write(self.0, buf)
    }
    /// rustls' `write_tls` hands over every queued record at once: one `sendmsg` for
    /// all of them (the default would send only the first, one syscall per record:
    /// six per server handshake flight instead of three, four per 64 KiB of bulk).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        const MAX: usize = 64;
        let mut slices: [&[u8]; MAX] = [&[]; MAX];
        let n = bufs.len().min(MAX);
        for (s, b) in slices.iter_mut().zip(bufs) {
            *s = b;
        }
        net::write_vectored(self.0, &slices[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Best effort: put what rustls has queued (an alert, a `close_notify`) on the wire
/// before the socket is released.
fn drain_best_effort(conn: &mut Connection, fd: RawFd) {
    for _ in 0..8 {
        if !conn.wants_write() {
            break;
        }
        if conn.write_tls(&mut Fd(fd)).is_err() {
            break;
        }
    }
}

fn tls_error_text(e: &rustls::Error, handshaking: bool) -> String {
    if handshaking {
        format!("tls: handshake failed: {e}")
    } else {
        format!("tls: {e}")
    }
}

/// Push the plaintext appended to the arena since `start` as one `Data` message.
fn push_data(out: &mut Batch, sock: &Socket, start: &mut usize) {
    let end = out.arena_len();
    if end > *start {
        out.push_read(sock.id, sock.owner, *start);
    }
    *start = out.arena_len();
}

/// Move the plaintext rustls holds into the arena.
fn take_plaintext(conn: &mut Connection, out: &mut Batch, avail: usize) {
    let arena = out.arena_mut();
    let base = arena.len();
    arena.resize(base + avail, 0);
    let mut got = 0;
    while got < avail {
        match conn.reader().read(&mut arena[base + got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    arena.truncate(base + got);
}

/// Report the end of the handshake: `Open` if it was held back, then `Handshake`
/// (`data`: the negotiated ALPN protocol, empty if none).
fn handshake_done(t: &mut TlsStream, sock: &Socket, out: &mut Batch) {
    if t.announce_open {
        t.announce_open = false;
        let peer = sock
            .raw_fd()
            .and_then(|fd| net::peer_addr(fd).ok().flatten());
        let text = crate::engine::address::display(peer.as_ref());
        out.push(Msg::Open {
            id: sock.id,
            owner: sock.owner,
            peer: text.as_bytes(),
        });
    }
    out.push(Msg::Handshake {
        id: sock.id,
        owner: sock.owner,
        alpn: t.conn.alpn_protocol().unwrap_or(b""),
    });
}

/// Readiness on a TLS stream socket.
pub(crate) fn on_event(
    core: &Core,
    io: &mut PollIo,
    sock: &mut Socket,
    ev: Event,
    out: &mut Batch,
    scratch: &mut Vec<u8>,
) {
    if (ev.readable() || ev.error()) && sock.wants_read() && !read(core, io, sock, out, scratch) {
        return;
    }
    if (ev.writable() || ev.error()) && sock.wants_write() {
        flush(core, io, sock, out);
    }
}

/// One read of ciphertext and everything it yields. Returns false when the socket was
/// released.
fn read(
    core: &Core,
    io: &mut PollIo,
    sock: &mut Socket,
    out: &mut Batch,
    scratch: &mut Vec<u8>,
) -> bool {
    let Some(fd) = sock.raw_fd() else {
        return true;
    };
    let size = (sock.read_size as usize)
        .max(TLS_MIN_READ)
        .min(core.config.max_read.max(TLS_MIN_READ));
    if scratch.len() < size {
        scratch.resize(size, 0);
    }
    let n = match net::read(fd, &mut scratch[..size]) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) => return fail(core, io, sock, &e.to_string(), out),
    };
    let Some(mut t) = sock.tls.take() else {
        return true;
    };
    if n > 0 {
        sock.stats.read += n as u64;
        sock.stats.rtime = core.now_cs();
        if n == size {
            sock.read_size = (size * 2).min(core.config.max_read) as u32;
        }
    }
    let mut input: &[u8] = &scratch[..n];
    let mut start = out.arena_len();
    let mut peer_closed = false;
    let mut fatal: Option<String> = None;
    while !input.is_empty() {
        match t.conn.read_tls(&mut input) {
            Ok(0) => break, // nothing more is taken (close_notify seen)
            Ok(_) => {}
            Err(e) => {
                fatal = Some(format!("tls: {e}"));
                break;
            }
        }
        match t.conn.process_new_packets() {
            Err(e) => {
                fatal = Some(tls_error_text(&e, t.handshaking));
                break;
            }
            Ok(st) => {
                let avail = st.plaintext_bytes_to_read();
                peer_closed = st.peer_has_closed();
                if avail > 0 {
                    take_plaintext(&mut t.conn, out, avail);
                }
            }
        }
        if t.handshaking && !t.conn.is_handshaking() {
            t.handshaking = false;
            push_data(out, sock, &mut start);
            handshake_done(&mut t, sock, out);
            start = out.arena_len();
        }
        if peer_closed {
            break;
        }
    }
    push_data(out, sock, &mut start);
    if let Some(msg) = fatal {
        drain_best_effort(&mut t.conn, fd);
        return fail(core, io, sock, &msg, out);
    }
    if n == 0 {
        let msg = if t.handshaking {
            "tls: the peer closed the connection during the handshake"
        } else {
            "tls: the peer closed the connection without close_notify (data may be truncated)"
        };
        return fail(core, io, sock, msg, out);
    }
    // A clean TLS end is the peer's EOF, as for a plain socket.
    if peer_closed && sock.on_eof(out) == Step::Free {
        if !t.notify_sent {
            t.conn.send_close_notify();
        }
        drain_best_effort(&mut t.conn, fd);
        io.free(core, sock);
        return false;
    }
    sock.tls = Some(t);
    if sock.wants_write() {
        return flush(core, io, sock, out);
    }
    sync(core, io, sock, out)
}

/// The socket failed: tell the owner, release it. Returns false (released).
fn fail(core: &Core, io: &mut PollIo, sock: &mut Socket, text: &str, out: &mut Batch) -> bool {
    let step = sock.fail(text, out);
    io.carry(core, sock, step, out);
    false
}

/// Bring the registration in line (a failure fails the socket). Returns false when
/// the socket was released.
fn sync(core: &Core, io: &mut PollIo, sock: &mut Socket, out: &mut Batch) -> bool {
    match io.sync(sock) {
        Ok(()) => true,
        Err(e) => fail(core, io, sock, &e.to_string(), out),
    }
}

/// Write what can be written: plaintext queued before an upgrade (raw), then queued
/// plaintext through the TLS writer, then `write_tls`. `Ok(true)`: the kernel would
/// block.
fn pump(t: &mut TlsStream, sock: &mut Socket, fd: RawFd, now: u64) -> io::Result<bool> {
    loop {
        while t.plain_prefix > 0 {
            let mut slices: Vec<&[u8]> = Vec::new();
            sock.wq.front_slices(&mut slices, 64);
            let mut left = t.plain_prefix;
            let capped: Vec<&[u8]> = slices
                .into_iter()
                .map_while(|s| {
                    (left > 0).then(|| {
                        let s = &s[..s.len().min(left)];
                        left -= s.len();
                        s
                    })
                })
                .collect();
            if capped.is_empty() {
                t.plain_prefix = 0; // nothing left of it (cannot happen: defensive)
                break;
            }
            let n = match net::write_vectored(fd, &capped) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            };
            sock.wq.consume(n);
            t.plain_prefix -= n;
            sock.stats.written += n as u64;
            sock.stats.wtime = now;
        }
        if !t.conn.is_handshaking() {
            while !sock.wq.is_empty() {
                let mut slices: Vec<&[u8]> = Vec::new();
                sock.wq.front_slices(&mut slices, 64);
                let io: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
                let n = t.conn.writer().write_vectored(&io)?;
                drop(io);
                drop(slices);
                if n == 0 {
                    break; // the TLS buffer is full: write some out first
                }
                sock.wq.consume(n);
            }
            if sock.wq.is_empty() && finishing(sock) && !t.notify_sent {
                t.conn.send_close_notify();
                t.notify_sent = true;
            }
        }
        if !t.conn.wants_write() {
            return Ok(false);
        }
        match t.conn.write_tls(&mut Fd(fd)) {
            Ok(n) => {
                sock.stats.written += n as u64;
                sock.stats.wtime = now;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Flush a TLS socket; on drain finish a pending close or write shutdown. Returns
/// false when the socket was released.
pub(crate) fn flush(core: &Core, io: &mut PollIo, sock: &mut Socket, out: &mut Batch) -> bool {
    let connected = matches!(
        sock.state,
        State::Connected | State::HalfCloseRead | State::HalfCloseWrite
    );
    let (Some(fd), true) = (sock.raw_fd(), connected) else {
        return sync(core, io, sock, out);
    };
    let Some(mut t) = sock.tls.take() else {
        return true;
    };
    let queued = sock.wq.len_bytes();
    let res = pump(&mut t, sock, fd, core.now_cs());
    // What left the queue (into rustls or, before an upgrade, the kernel) no longer
    // counts against the engine's write budget.
    core.sub_queued(queued - sock.wq.len_bytes());
    let handshaking = t.conn.is_handshaking();
    sock.tls = Some(t);
    match res {
        Err(e) => return fail(core, io, sock, &e.to_string(), out),
        Ok(false) if !handshaking && sock.wq.is_empty() => {
            if sock.on_drained(core, out) == Step::Free {
                io.free(core, sock);
                return false;
            }
        }
        Ok(_) => {}
    }
    sync(core, io, sock, out)
}

/// Arm the handshake timeout of a socket that just got a TLS connection.
pub(crate) fn arm_timeout(core: &Core, io: &mut PollIo, id: u64) {
    if let Some(t) = core.config.tls_handshake_timeout {
        io.deadlines.push(t, Internal::HandshakeCheck(id));
    }
}

/// The handshake timeout fired: fail the socket if it is still handshaking.
pub(crate) fn handshake_check(core: &Core, sock: &mut Socket, out: &mut Batch) -> Step {
    if sock.tls.as_ref().is_some_and(|t| t.handshaking) {
        let ms = core
            .config
            .tls_handshake_timeout
            .map_or(0, |d| d.as_millis());
        return sock.fail(&format!("tls: handshake timed out after {ms} ms"), out);
    }
    Step::Done
}

/// What is known about a TLS socket's session.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub handshaking: bool,
    pub server: bool,
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: Option<String>,
    /// e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// Server side: the name the client asked for (SNI).
    pub sni: Option<String>,
    /// The peer certificate's subject (`CN=..., O=...`) and alternative names
    /// (`DNS:...`, `IP:...`), when the peer presented one.
    pub peer_subject: Option<String>,
    pub peer_sans: Vec<String>,
}

pub(crate) fn info(sock: &Socket) -> Option<TlsInfo> {
    let t = sock.tls.as_ref()?;
    let c = &t.conn;
    let (peer_subject, peer_sans) = match c
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|der| crate::engine::x509::subject_and_sans(der))
    {
        Some((s, sans)) => (Some(s), sans),
        None => (None, Vec::new()),
    };
    Some(TlsInfo {
        handshaking: c.is_handshaking(),
        server: matches!(c, Connection::Server(_)),
        version: c.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        }),
        cipher: c.negotiated_cipher_suite().map(|s| {
            s.suite()
                .as_str()
                .map_or_else(|| format!("{:?}", s.suite()), str::to_string)
        }),
        alpn: c.alpn_protocol().map(<[u8]>::to_vec),
        sni: match c {
            Connection::Server(s) => s.server_name().map(str::to_string),
            Connection::Client(_) => None,
        },
        peer_subject,
        peer_sans,
    })
}
