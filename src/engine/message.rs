//! Messages the engine reports, and the batch they are delivered in.
//!
//! A batch keeps every payload in one reused arena, so a poll that reads a hundred
//! sockets allocates nothing once the arena has grown to its working size.

use super::slots::SocketId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgKind {
    /// Bytes read from a stream socket: `data`.
    Data,
    /// A connect finished: `data` is the peer address text.
    Open,
    /// `id` is the listener, `ud` the accepted socket's id, `data` the peer address text.
    Accept,
    /// The socket is closed (peer EOF, or our close finished).
    Close,
    /// `data` is the error text. `ud == 0`: the socket is gone; `ud == 1`: it stays
    /// open (a listener that failed one accept).
    Error,
    /// A datagram: `data` the payload, `extra` the sender in compact address form.
    Udp,
    /// Write queue size in KiB (0 = drained after a warning).
    Warning,
    /// Timer `ud` fired (`id` is 0).
    Timer,
    /// `Handle::exit` was called.
    Exit,
    /// A `resolve_async` lookup finished. `id` is 0, `ud` the request id. Success:
    /// `extra` is empty and `data` the addresses as text, one per line (`\n`), in the
    /// order a connect would try them. Failure: `extra` is `b"error"`
    /// (`engine::RESOLVE_FAILED`) and `data` the resolver's error text.
    Resolved,
    /// A TLS handshake finished; `data` is the negotiated ALPN protocol (may be empty).
    Handshake,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MsgKind,
    pub id: SocketId,
    /// The socket owner's token (Skynet's `opaque`).
    pub owner: u64,
    pub ud: u64,
    data: Span,
    extra: Span,
}

/// Where engine operations put the messages they produce.
pub(crate) trait Sink {
    fn emit(&mut self, kind: MsgKind, id: SocketId, owner: u64, ud: u64, data: &[u8], extra: &[u8]);
}

#[derive(Default)]
pub struct Batch {
    msgs: Vec<Message>,
    arena: Vec<u8>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.arena.clear();
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn messages(&self) -> &[Message] {
        &self.msgs
    }

    pub fn data(&self, m: &Message) -> &[u8] {
        &self.arena[m.data.start as usize..(m.data.start + m.data.len) as usize]
    }

    pub fn extra(&self, m: &Message) -> &[u8] {
        &self.arena[m.extra.start as usize..(m.extra.start + m.extra.len) as usize]
    }

    pub fn data_str(&self, m: &Message) -> String {
        String::from_utf8_lossy(self.data(m)).into_owned()
    }

    pub(crate) fn arena_len(&self) -> usize {
        self.arena.len()
    }

    pub(crate) fn arena_mut(&mut self) -> &mut Vec<u8> {
        &mut self.arena
    }

    fn span_from(&self, start: usize) -> Span {
        Span {
            start: start as u32,
            len: (self.arena.len() - start) as u32,
        }
    }

    /// Record a message whose data was appended to the arena from `data_start` on, and
    /// whose `extra` follows it.
    pub(crate) fn push_appended(
        &mut self,
        kind: MsgKind,
        id: SocketId,
        owner: u64,
        ud: u64,
        data_start: usize,
        extra_start: usize,
    ) {
        let data = Span {
            start: data_start as u32,
            len: (extra_start - data_start) as u32,
        };
        let extra = self.span_from(extra_start);
        self.msgs.push(Message {
            kind,
            id,
            owner,
            ud,
            data,
            extra,
        });
    }
}

impl Sink for Batch {
    fn emit(
        &mut self,
        kind: MsgKind,
        id: SocketId,
        owner: u64,
        ud: u64,
        data: &[u8],
        extra: &[u8],
    ) {
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        let mid = self.arena.len();
        self.arena.extend_from_slice(extra);
        self.push_appended(kind, id, owner, ud, start, mid);
    }
}

/// A message kept outside a batch until the next poll delivers it.
#[derive(Debug)]
pub(crate) struct OwnedMessage {
    pub kind: MsgKind,
    pub id: SocketId,
    pub owner: u64,
    pub ud: u64,
    pub data: Vec<u8>,
    pub extra: Vec<u8>,
}

impl OwnedMessage {
    pub fn new(
        kind: MsgKind,
        id: SocketId,
        owner: u64,
        ud: u64,
        data: &[u8],
        extra: &[u8],
    ) -> Self {
        OwnedMessage {
            kind,
            id,
            owner,
            ud,
            data: data.to_vec(),
            extra: extra.to_vec(),
        }
    }
}

impl Sink for Vec<OwnedMessage> {
    fn emit(
        &mut self,
        kind: MsgKind,
        id: SocketId,
        owner: u64,
        ud: u64,
        data: &[u8],
        extra: &[u8],
    ) {
        self.push(OwnedMessage::new(kind, id, owner, ud, data, extra));
    }
}
