//! TLS inside the engine. A TLS socket owns a rustls connection driven by the poll
//! thread: readable → `read` → `read_tls` → `process_new_packets` → plaintext into the
//! normal `Data` path; queued plaintext → `writer()` (bounded by the connection's
//! buffer limit) → `write_tls` until the kernel would block. Ciphertext never leaves
//! this module; other threads only queue plaintext and ask the poll thread to flush.

use std::collections::BinaryHeap;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, SupportedProtocolVersion,
};

use super::core::Core;
use super::message::{Batch, MsgKind, Sink};
use super::socket::{Socket, State};
use super::{deadline_after, fail, free_socket, sync_socket, Internal};
use crate::sys::net;
use crate::sys::{Event, Poller};
use std::cmp::Reverse;
use std::time::Instant;

/// Most plaintext rustls holds for us beyond what is already encrypted: the bounded
/// buffer between the socket's write queue and the TLS writer.
const TLS_BUFFER: usize = 64 * 1024;
/// Smallest read on a TLS socket (a record is up to ~16 KiB).
const TLS_MIN_READ: usize = 16 * 1024;

/// Lowest protocol version a context accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What a [`TlsContext`] is made from. Certificates, keys and CAs are PEM text or the
/// path of a PEM file (anything without `-----BEGIN` is taken as a path).
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// Server side (accepts handshakes) or client side.
    pub server: bool,
    /// Certificate chain: required for servers, optional client certificate otherwise.
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// Trust anchors. Client: verifies the server (default: the system store).
    /// Server: when given, clients must present a certificate signed by one of these.
    pub ca: Option<Vec<u8>>,
    /// Client: verify the server's certificate and name. Turning this off accepts any
    /// server (unsafe: anyone on the path can impersonate it).
    pub verify: bool,
    /// ALPN protocols, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Client: the name to send (SNI) and verify; default: the host connected to.
    pub server_name: Option<String>,
    pub min_version: Option<TlsVersion>,
}

impl TlsOptions {
    pub fn server(cert: &[u8], key: &[u8]) -> TlsOptions {
        TlsOptions {
            server: true,
            cert: Some(cert.to_vec()),
            key: Some(key.to_vec()),
            ..TlsOptions::client()
        }
    }

    /// A verifying client using the system CA store.
    pub fn client() -> TlsOptions {
        TlsOptions {
            server: false,
            cert: None,
            key: None,
            ca: None,
            verify: true,
            alpn: Vec::new(),
            server_name: None,
            min_version: None,
        }
    }
}

enum Side {
    Server(Arc<ServerConfig>),
    Client(Arc<ClientConfig>),
}

/// A shareable TLS configuration: build once, use for any number of sockets.
pub struct TlsContext {
    side: Side,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsContext({})",
            if self.is_server() { "server" } else { "client" }
        )
    }
}

/// PEM text as is, or the contents of the file it names.
fn pem_source(what: &str, src: &[u8]) -> Result<Vec<u8>, String> {
    if src.windows(10).any(|w| w == b"-----BEGIN") {
        return Ok(src.to_vec());
    }
    let path =
        std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(src));
    std::fs::read(path).map_err(|e| format!("{what}: cannot read '{}': {e}", path.display()))
}

fn certs_from(what: &str, src: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = pem_source(what, src)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE found"));
    }
    Ok(certs)
}

fn key_from(src: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let pem = pem_source("key", src)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("key: no usable private key: {e}"))
}

fn roots_from(src: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certs_from("ca", src)? {
        roots
            .add(c)
            .map_err(|e| format!("ca: unusable certificate: {e}"))?;
    }
    Ok(roots)
}

/// The system trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`),
/// loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                Err("no system CA certificates found (install ca-certificates, or pass ca)".into())
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
}

/// `verify = false`: accepts any server certificate (signatures are still checked, so
/// the handshake itself is sound; the peer's identity is not).
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl TlsContext {
    /// Build a context; the error says which option is wrong.
    pub fn new(o: &TlsOptions) -> Result<Arc<TlsContext>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static SupportedProtocolVersion] = match o.min_version {
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let alpn = o.alpn.clone();
        if alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err("alpn: each protocol name must be 1..255 bytes".into());
        }
        let side = if o.server {
            let (Some(cert), Some(key)) = (&o.cert, &o.key) else {
                return Err("a server context needs cert and key".into());
            };
            let chain = certs_from("cert", cert)?;
            let key = key_from(key)?;
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| format!("tls: {e}"))?;
            let builder = match &o.ca {
                Some(ca) => {
                    let roots = Arc::new(roots_from(ca)?);
                    let v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(|e| format!("ca: {e}"))?;
                    builder.with_client_cert_verifier(v)
                }
                None => builder.with_no_client_auth(),
            };
            let mut cfg = builder
                .with_single_cert(chain, key)
                .map_err(|e| format!("cert/key: {e}"))?;
            cfg.alpn_protocols = alpn;
            Side::Server(Arc::new(cfg))
        } else {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| format!("tls: {e}"))?;
            let builder = if !o.verify {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider.clone())))
            } else {
                let roots = match &o.ca {
                    Some(ca) => Arc::new(roots_from(ca)?),
                    None => system_roots()?,
                };
                builder.with_root_certificates(roots)
            };
            let mut cfg = match (&o.cert, &o.key) {
                (Some(cert), Some(key)) => builder
                    .with_client_auth_cert(certs_from("cert", cert)?, key_from(key)?)
                    .map_err(|e| format!("cert/key: {e}"))?,
                (None, None) => builder.with_no_client_auth(),
                _ => return Err("cert and key go together".into()),
            };
            cfg.alpn_protocols = alpn;
            Side::Client(Arc::new(cfg))
        };
        Ok(Arc::new(TlsContext {
            side,
            server_name: o.server_name.clone(),
        }))
    }

    pub fn is_server(&self) -> bool {
        matches!(self.side, Side::Server(_))
    }

    /// A new connection. A client needs a name to send and verify: `name`, else the
    /// context's `server_name`, else `fallback` (the host connected to, or the peer IP).
    pub(crate) fn connection(
        &self,
        name: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<Connection, String> {
        match &self.side {
            Side::Server(cfg) => ServerConnection::new(cfg.clone())
                .map(Connection::Server)
                .map_err(|e| format!("tls: {e}")),
            Side::Client(cfg) => {
                let name = name
                    .or(self.server_name.as_deref())
                    .or(fallback)
                    .ok_or("tls: a client needs a server name (server_name option)")?;
                let sn = ServerName::try_from(name.to_string())
                    .map_err(|_| format!("tls: invalid server name '{name}'"))?;
                ClientConnection::new(cfg.clone(), sn)
                    .map(Connection::Client)
                    .map_err(|e| format!("tls: {e}"))
            }
        }
    }
}

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
        out.push_appended(MsgKind::Data, sock.id, sock.owner, 0, *start, end);
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
fn handshake_done(t: &mut TlsStream, sock: &Socket, out: &mut impl Sink) {
    if t.announce_open {
        t.announce_open = false;
        let peer = sock
            .raw_fd()
            .and_then(|fd| net::peer_addr(fd).ok().flatten());
        let text = super::core::display_addr(peer.as_ref());
        out.emit(MsgKind::Open, sock.id, sock.owner, 0, text.as_bytes(), b"");
    }
    let alpn = t.conn.alpn_protocol().unwrap_or(b"").to_vec();
    out.emit(MsgKind::Handshake, sock.id, sock.owner, 0, &alpn, b"");
}

/// Readiness on a TLS stream socket.
pub(super) fn on_event(
    core: &Core,
    poller: &mut Poller,
    sock: &mut Socket,
    ev: Event,
    out: &mut Batch,
    scratch: &mut Vec<u8>,
) {
    if (ev.readable || ev.error) && sock.wants_read() && !read(core, poller, sock, out, scratch) {
        return;
    }
    if (ev.writable || ev.error) && sock.wants_write() {
        flush(core, poller, sock, out);
    }
}

/// One read of ciphertext and everything it yields. Returns false when the socket was
/// released.
fn read(
    core: &Core,
    poller: &mut Poller,
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
        Err(e) => {
            fail(core, poller, sock, &e, out);
            return false;
        }
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
        fail(core, poller, sock, &io::Error::other(msg), out);
        return false;
    }
    if n == 0 {
        let msg = if t.handshaking {
            "tls: the peer closed the connection during the handshake"
        } else {
            "tls: the peer closed the connection without close_notify (data may be truncated)"
        };
        fail(core, poller, sock, &io::Error::other(msg), out);
        return false;
    }
    if peer_closed {
        // A clean TLS end: the peer's EOF, as for a plain socket.
        if !sock.reported {
            out.emit(MsgKind::Close, sock.id, sock.owner, 0, b"", b"");
        }
        if (sock.wq.is_empty() && !sock.keep_open) || sock.state == State::HalfCloseWrite {
            if !t.notify_sent {
                t.conn.send_close_notify();
            }
            drain_best_effort(&mut t.conn, fd);
            free_socket(core, poller, sock);
            return false;
        }
        sock.state = State::HalfCloseRead;
        sock.reported = true;
    }
    sock.tls = Some(t);
    if sock.wants_write() {
        return flush(core, poller, sock, out);
    }
    if let Err(e) = sync_socket(poller, sock) {
        fail(core, poller, sock, &e, out);
        return false;
    }
    true
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
pub(super) fn flush(
    core: &Core,
    poller: &mut Poller,
    sock: &mut Socket,
    out: &mut impl Sink,
) -> bool {
    let connected = matches!(
        sock.state,
        State::Connected | State::HalfCloseRead | State::HalfCloseWrite
    );
    let (Some(fd), true) = (sock.raw_fd(), connected) else {
        if let Err(e) = sync_socket(poller, sock) {
            fail(core, poller, sock, &e, out);
            return false;
        }
        return true;
    };
    let Some(mut t) = sock.tls.take() else {
        return true;
    };
    let queued = sock.wq.len_bytes();
    let res = pump(&mut t, sock, fd, core.now_cs());
    // What left the queue (into rustls or, before an upgrade, the kernel) no longer
    // counts against the engine's write budget.
    core.queued_total.fetch_sub(
        queued - sock.wq.len_bytes(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let handshaking = t.conn.is_handshaking();
    sock.tls = Some(t);
    match res {
        Err(e) => {
            fail(core, poller, sock, &e, out);
            return false;
        }
        Ok(false) if !handshaking && sock.wq.is_empty() => {
            if sock.warn_at > core.config.warn_size {
                sock.warn_at = core.config.warn_size;
                out.emit(MsgKind::Warning, sock.id, sock.owner, 0, b"", b"");
            }
            if sock.closing || (sock.state == State::HalfCloseRead && !sock.keep_open) {
                if !sock.reported {
                    out.emit(MsgKind::Close, sock.id, sock.owner, 0, b"", b"");
                }
                free_socket(core, poller, sock);
                return false;
            }
            if sock.shut_wr && sock.state != State::HalfCloseWrite {
                if let Err(e) = net::shutdown(fd, net::Shutdown::Write) {
                    fail(core, poller, sock, &e, out);
                    return false;
                }
                sock.state = State::HalfCloseWrite;
            }
        }
        Ok(_) => {}
    }
    if let Err(e) = sync_socket(poller, sock) {
        fail(core, poller, sock, &e, out);
        return false;
    }
    true
}

/// Arm the handshake timeout of a socket that just got a TLS connection.
pub(super) fn arm_timeout(
    core: &Core,
    internal: &mut BinaryHeap<Reverse<(Instant, Internal)>>,
    id: u64,
) {
    if let Some(t) = core.config.tls_handshake_timeout {
        internal.push(Reverse((deadline_after(t), Internal::HandshakeCheck(id))));
    }
}

/// The handshake timeout fired: fail the socket if it is still handshaking.
pub(super) fn handshake_check(
    core: &Core,
    poller: &mut Poller,
    sock: &mut Socket,
    out: &mut impl Sink,
) {
    if sock.tls.as_ref().is_some_and(|t| t.handshaking) {
        let ms = core
            .config
            .tls_handshake_timeout
            .map_or(0, |d| d.as_millis());
        let e = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("tls: handshake timed out after {ms} ms"),
        );
        fail(core, poller, sock, &e, out);
    }
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

pub(super) fn info(sock: &Socket) -> Option<TlsInfo> {
    let t = sock.tls.as_ref()?;
    let c = &t.conn;
    let (peer_subject, peer_sans) = match c
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|der| super::x509::subject_and_sans(der))
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
