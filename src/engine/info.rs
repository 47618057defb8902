//! `info`: a snapshot of one socket, or of all of them.

use super::fsm::State;
use super::ops::Ops;
use super::slots::SocketId;
use super::socket::Proto;
use crate::sys::net::{self, Addr};

/// A snapshot of one socket for `info`.
#[derive(Clone, Debug)]
pub struct SocketInfo {
    pub id: SocketId,
    pub kind: &'static str,
    pub state: &'static str,
    pub owner: u64,
    pub read: u64,
    pub written: u64,
    pub rtime: u64,
    pub wtime: u64,
    pub queued: usize,
    pub paused: bool,
    /// A TLS stream (or a TLS listener).
    pub tls: bool,
    pub peer: Option<String>,
    pub local: Option<String>,
    /// TCP_NODELAY of a TCP stream socket (`None` for listeners, UDP, Unix sockets).
    pub nodelay: Option<bool>,
}

impl Ops<'_> {
    pub fn info(&self, id: SocketId) -> Option<SocketInfo> {
        let sock = self.core.slots.lock(id)?;
        let fd = sock.raw_fd();
        let show = |a: Option<Addr>| a.map(|a| a.to_string());
        Some(SocketInfo {
            id,
            kind: match sock.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
                Proto::Unix => "unix",
                Proto::Fd => "bind",
            },
            state: sock.state.name(),
            owner: sock.owner,
            read: sock.stats.read,
            written: sock.stats.written,
            rtime: sock.stats.rtime,
            wtime: sock.stats.wtime,
            queued: sock.wq.len_bytes()
                + sock
                    .udp
                    .as_ref()
                    .map_or(0, |u| u.queue.iter().map(|(b, _)| b.len()).sum()),
            paused: sock.paused,
            tls: sock.is_tls() || sock.is_tls_listener(),
            peer: fd.and_then(|fd| show(net::peer_addr(fd).ok().flatten())),
            local: fd.and_then(|fd| show(net::local_addr(fd).ok().flatten())),
            nodelay: match (sock.proto, sock.state) {
                (Proto::Tcp, State::PListen | State::Listen) => None,
                (Proto::Tcp, _) => fd.and_then(|fd| net::nodelay(fd).ok()),
                _ => None,
            },
        })
    }

    pub fn info_all(&self) -> Vec<SocketInfo> {
        self.core
            .slots
            .live_ids()
            .into_iter()
            .filter_map(|id| self.info(id))
            .collect()
    }
}
