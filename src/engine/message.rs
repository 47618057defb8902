//! The messages the engine reports ([`Msg`], one variant per kind with exactly its
//! fields) and the [`Batch`] they are delivered in.
//!
//! A batch keeps every payload in one reused arena and each message as a small fixed
//! record pointing into it, so a poll that reads a hundred sockets allocates nothing
//! once the arena has grown to its working size. The record layout is private to this
//! file: producers push a [`Msg`], consumers read a [`Msg`] back.

use super::slots::SocketId;

/// One engine message. Byte fields borrow from the batch that holds the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// Bytes read from a stream socket (for a TLS socket: decrypted plaintext).
    Data {
        id: SocketId,
        owner: u64,
        data: &'a [u8],
    },
    /// A connect finished (for TLS: its handshake too); `peer` is the address text.
    Open {
        id: SocketId,
        owner: u64,
        peer: &'a [u8],
    },
    /// `listener` accepted socket `id` (state `paccept` until `start`) from `peer`.
    Accept {
        listener: SocketId,
        owner: u64,
        id: SocketId,
        peer: &'a [u8],
    },
    /// The socket is closed (peer EOF, or our close finished). `note` is empty, or
    /// says why a flushing close was cut short (the close timeout).
    Close {
        id: SocketId,
        owner: u64,
        note: &'a [u8],
    },
    /// Something failed on the socket; `text` says what. `open == false`: the socket
    /// is gone (its final message). `open == true`: it stays open (a listener that
    /// failed one accept, a UDP socket whose datagram failed).
    Error {
        id: SocketId,
        owner: u64,
        text: &'a [u8],
        open: bool,
    },
    /// A datagram: `data` the payload, `from` the sender in compact address form
    /// (`address::decode_compact`).
    Udp {
        id: SocketId,
        owner: u64,
        data: &'a [u8],
        from: &'a [u8],
    },
    /// The write queue reached `queued_kib` KiB (0: drained again after a warning).
    Warning {
        id: SocketId,
        owner: u64,
        queued_kib: u64,
    },
    /// A timer of `Engine::add_timer` fired.
    Timer { timer: u64 },
    /// `Handle::exit` was called.
    Exit,
    /// A `resolve_async` lookup finished. `Ok`: the addresses as text, one per line,
    /// in the order a connect would try them. `Err`: the resolver's error text.
    Resolved {
        owner: u64,
        request: u64,
        result: Result<&'a [u8], &'a [u8]>,
    },
    /// A TLS handshake finished; `alpn` is the negotiated protocol (may be empty).
    Handshake {
        id: SocketId,
        owner: u64,
        alpn: &'a [u8],
    },
}

/// The kind of a [`Msg`], without its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgKind {
    Data,
    Open,
    Accept,
    Close,
    Error,
    Udp,
    Warning,
    Timer,
    Exit,
    Resolved,
    Handshake,
}

impl Msg<'_> {
    pub fn kind(&self) -> MsgKind {
        match self {
            Msg::Data { .. } => MsgKind::Data,
            Msg::Open { .. } => MsgKind::Open,
            Msg::Accept { .. } => MsgKind::Accept,
            Msg::Close { .. } => MsgKind::Close,
            Msg::Error { .. } => MsgKind::Error,
            Msg::Udp { .. } => MsgKind::Udp,
            Msg::Warning { .. } => MsgKind::Warning,
            Msg::Timer { .. } => MsgKind::Timer,
            Msg::Exit => MsgKind::Exit,
            Msg::Resolved { .. } => MsgKind::Resolved,
            Msg::Handshake { .. } => MsgKind::Handshake,
        }
    }

    /// The socket the message is about (for `Accept`: the listener); 0 for timers,
    /// lookups and `Exit`.
    pub fn id(&self) -> SocketId {
        match *self {
            Msg::Data { id, .. }
            | Msg::Open { id, .. }
            | Msg::Close { id, .. }
            | Msg::Error { id, .. }
            | Msg::Udp { id, .. }
            | Msg::Warning { id, .. }
            | Msg::Handshake { id, .. } => id,
            Msg::Accept { listener, .. } => listener,
            Msg::Timer { .. } | Msg::Exit | Msg::Resolved { .. } => 0,
        }
    }

    /// The owner token of the socket (or of the lookup) the message is for: where a
    /// consumer with several owners routes it. 0 for timers and `Exit`.
    pub fn owner(&self) -> u64 {
        match *self {
            Msg::Data { owner, .. }
            | Msg::Open { owner, .. }
            | Msg::Accept { owner, .. }
            | Msg::Close { owner, .. }
            | Msg::Error { owner, .. }
            | Msg::Udp { owner, .. }
            | Msg::Warning { owner, .. }
            | Msg::Resolved { owner, .. }
            | Msg::Handshake { owner, .. } => owner,
            Msg::Timer { .. } | Msg::Exit => 0,
        }
    }

    /// Whether this is the socket's final message (`Close`, or an `Error` that closed
    /// it): its id is free afterwards.
    pub fn is_final(&self) -> bool {
        matches!(self, Msg::Close { .. } | Msg::Error { open: false, .. })
    }
}

/// A message as plain fields: how it is carried where a [`Msg`] cannot go (another
/// thread's queue, a service's mailbox). `Msg::parts` and `Parts::msg` are inverses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    pub kind: MsgKind,
    /// `Error`: the socket stays open. `Resolved`: the lookup failed.
    pub flag: bool,
    /// The socket (`Accept`: the listener); 0 for timers, lookups and `Exit`.
    pub id: SocketId,
    pub owner: u64,
    /// `Accept`: the new id; `Warning`: KiB; `Timer`: the timer; `Resolved`: request.
    pub num: u64,
    pub a: &'a [u8],
    /// `Udp`: the sender; empty otherwise.
    pub b: &'a [u8],
}

impl MsgKind {
    const ALL: [MsgKind; 11] = [
        MsgKind::Data,
        MsgKind::Open,
        MsgKind::Accept,
        MsgKind::Close,
        MsgKind::Error,
        MsgKind::Udp,
        MsgKind::Warning,
        MsgKind::Timer,
        MsgKind::Exit,
        MsgKind::Resolved,
        MsgKind::Handshake,
    ];

    /// A small number for the kind (`from_code` reverses it).
    pub fn code(self) -> u8 {
        MsgKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Option<MsgKind> {
        MsgKind::ALL.get(code as usize).copied()
    }
}

impl<'a> Msg<'a> {
    /// The message as plain fields.
    pub fn parts(&self) -> Parts<'a> {
        let p = |kind, flag, id, owner, num, a, b| Parts {
            kind,
            flag,
            id,
            owner,
            num,
            a,
            b,
        };
        match *self {
            Msg::Data { id, owner, data } => p(MsgKind::Data, false, id, owner, 0, data, b""),
            Msg::Open { id, owner, peer } => p(MsgKind::Open, false, id, owner, 0, peer, b""),
            Msg::Accept {
                listener,
                owner,
                id,
                peer,
            } => p(MsgKind::Accept, false, listener, owner, id, peer, b""),
            Msg::Close { id, owner, note } => p(MsgKind::Close, false, id, owner, 0, note, b""),
            Msg::Error {
                id,
                owner,
                text,
                open,
            } => p(MsgKind::Error, open, id, owner, 0, text, b""),
            Msg::Udp {
                id,
                owner,
                data,
                from,
            } => p(MsgKind::Udp, false, id, owner, 0, data, from),
            Msg::Warning {
                id,
                owner,
                queued_kib,
            } => p(MsgKind::Warning, false, id, owner, queued_kib, b"", b""),
            Msg::Timer { timer } => p(MsgKind::Timer, false, 0, 0, timer, b"", b""),
            Msg::Exit => p(MsgKind::Exit, false, 0, 0, 0, b"", b""),
            Msg::Resolved {
                owner,
                request,
                result,
            } => {
                let (failed, text) = match result {
                    Ok(t) => (false, t),
                    Err(t) => (true, t),
                };
                p(MsgKind::Resolved, failed, 0, owner, request, text, b"")
            }
            Msg::Handshake { id, owner, alpn } => {
                p(MsgKind::Handshake, false, id, owner, 0, alpn, b"")
            }
        }
    }
}

impl<'a> Parts<'a> {
    /// The message these fields describe.
    pub fn msg(&self) -> Msg<'a> {
        let (id, owner, a) = (self.id, self.owner, self.a);
        match self.kind {
            MsgKind::Data => Msg::Data { id, owner, data: a },
            MsgKind::Open => Msg::Open { id, owner, peer: a },
            MsgKind::Accept => Msg::Accept {
                listener: id,
                owner,
                id: self.num,
                peer: a,
            },
            MsgKind::Close => Msg::Close { id, owner, note: a },
            MsgKind::Error => Msg::Error {
                id,
                owner,
                text: a,
                open: self.flag,
            },
            MsgKind::Udp => Msg::Udp {
                id,
                owner,
                data: a,
                from: self.b,
            },
            MsgKind::Warning => Msg::Warning {
                id,
                owner,
                queued_kib: self.num,
            },
            MsgKind::Timer => Msg::Timer { timer: self.num },
            MsgKind::Exit => Msg::Exit,
            MsgKind::Resolved => Msg::Resolved {
                owner,
                request: self.num,
                result: if self.flag { Err(a) } else { Ok(a) },
            },
            MsgKind::Handshake => Msg::Handshake { id, owner, alpn: a },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// How a message sits in a batch: its kind, up to three numbers and two byte spans.
#[derive(Clone, Copy, Debug)]
struct Record {
    kind: MsgKind,
    /// `Error`: the socket stays open. `Resolved`: the lookup failed.
    flag: bool,
    id: SocketId,
    owner: u64,
    /// `Accept`: the new id; `Warning`: KiB; `Timer`: the timer; `Resolved`: request.
    num: u64,
    a: Span,
    b: Span,
}

/// Messages of one poll (or of operations between polls), in order.
#[derive(Default)]
pub struct Batch {
    recs: Vec<Record>,
    arena: Vec<u8>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn clear(&mut self) {
        self.recs.clear();
        self.arena.clear();
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    fn bytes(&self, s: Span) -> &[u8] {
        &self.arena[s.start as usize..(s.start + s.len) as usize]
    }

    /// Message `i` (panics past `len()`).
    pub fn get(&self, i: usize) -> Msg<'_> {
        let r = &self.recs[i];
        Parts {
            kind: r.kind,
            flag: r.flag,
            id: r.id,
            owner: r.owner,
            num: r.num,
            a: self.bytes(r.a),
            b: self.bytes(r.b),
        }
        .msg()
    }

    /// The socket and bytes of message `i` if it is `Data` (the delivery hot path).
    #[inline]
    pub fn data_at(&self, i: usize) -> Option<(SocketId, &[u8])> {
        match self.recs.get(i) {
            Some(r) if r.kind == MsgKind::Data => Some((r.id, self.bytes(r.a))),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Msg<'_>> + '_ {
        (0..self.recs.len()).map(|i| self.get(i))
    }

    /// Add a message, copying its bytes into the arena.
    pub fn push(&mut self, m: Msg<'_>) {
        let Parts {
            kind,
            flag,
            id,
            owner,
            num,
            a,
            b,
        } = m.parts();
        let start = self.arena.len();
        self.arena.extend_from_slice(a);
        let mid = self.arena.len();
        self.arena.extend_from_slice(b);
        self.push_record(kind, flag, id, owner, num, start, mid);
    }

    /// Append every message of `other`, in order.
    pub(crate) fn append(&mut self, other: &Batch) {
        let base = self.arena.len() as u32;
        self.arena.extend_from_slice(&other.arena);
        self.recs.extend(other.recs.iter().map(|r| {
            let mut r = *r;
            r.a.start += base;
            r.b.start += base;
            r
        }));
    }

    // ---- reads straight into the arena (no copy) ----

    pub(crate) fn arena_len(&self) -> usize {
        self.arena.len()
    }

    pub(crate) fn arena_mut(&mut self) -> &mut Vec<u8> {
        &mut self.arena
    }

    /// A `Data` message whose bytes were appended to the arena from `start` on.
    #[inline]
    pub(crate) fn push_read(&mut self, id: SocketId, owner: u64, start: usize) {
        let end = self.arena.len();
        self.push_record(MsgKind::Data, false, id, owner, 0, start, end);
    }

    /// A `Udp` message whose payload was appended from `start` and its sender's
    /// compact address from `mid` on.
    pub(crate) fn push_datagram(&mut self, id: SocketId, owner: u64, start: usize, mid: usize) {
        self.push_record(MsgKind::Udp, false, id, owner, 0, start, mid);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn push_record(
        &mut self,
        kind: MsgKind,
        flag: bool,
        id: SocketId,
        owner: u64,
        num: u64,
        start: usize,
        mid: usize,
    ) {
        let a = Span {
            start: start as u32,
            len: (mid - start) as u32,
        };
        let b = Span {
            start: mid as u32,
            len: (self.arena.len() - mid) as u32,
        };
        self.recs.push(Record {
            kind,
            flag,
            id,
            owner,
            num,
            a,
            b,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_a_batch() {
        let msgs = [
            Msg::Data {
                id: 1,
                owner: 2,
                data: b"abc",
            },
            Msg::Open {
                id: 3,
                owner: 4,
                peer: b"127.0.0.1:1",
            },
            Msg::Accept {
                listener: 5,
                owner: 6,
                id: 7,
                peer: b"[::1]:2",
            },
            Msg::Close {
                id: 8,
                owner: 9,
                note: b"",
            },
            Msg::Error {
                id: 10,
                owner: 11,
                text: b"boom",
                open: true,
            },
            Msg::Udp {
                id: 12,
                owner: 13,
                data: b"dgram",
                from: b"\x04\x7f\0\0\x01\0\x01",
            },
            Msg::Warning {
                id: 14,
                owner: 15,
                queued_kib: 1024,
            },
            Msg::Timer { timer: 16 },
            Msg::Exit,
            Msg::Resolved {
                owner: 17,
                request: 18,
                result: Ok(b"::1\n127.0.0.1"),
            },
            Msg::Resolved {
                owner: 19,
                request: 20,
                result: Err(b"no such host"),
            },
            Msg::Handshake {
                id: 21,
                owner: 22,
                alpn: b"h2",
            },
        ];
        let mut b = Batch::new();
        for m in msgs {
            b.push(m);
        }
        let mut c = Batch::new();
        c.push(Msg::Exit);
        c.append(&b);
        assert_eq!(c.len(), msgs.len() + 1);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(&b.get(i), m);
            assert_eq!(&c.get(i + 1), m);
        }
        assert_eq!(b.data_at(0), Some((1, &b"abc"[..])));
        assert_eq!(b.data_at(1), None);
    }
}
