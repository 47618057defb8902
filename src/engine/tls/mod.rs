//! TLS inside the engine: contexts (`context.rs`), the per-socket stream driven by the
//! poll thread (`stream.rs`), and the TLS operations of [`Ops`] (here).

mod context;
mod sni;
mod stream;

use std::sync::Arc;

pub use context::{TlsContext, TlsOptions, TlsVersion};
pub use sni::SniCert;
pub use stream::TlsInfo;
pub(crate) use stream::{arm_timeout, flush, handshake_check, on_event, TlsStream};

use super::core::Command;
use super::error::{Error, Result};
use super::fsm::{State, Step};
use super::ops::Ops;
use super::slots::SocketId;
use super::socket::{Proto, Socket};
use crate::sys::net::{self, Addr};

impl Ops<'_> {
    /// Start TLS on a connected stream socket (STARTTLS): a server context answers a
    /// handshake, a client context starts one. Anything queued before this call is
    /// sent as plaintext first. `server_name` (client): the name to send and verify;
    /// default: the context's, else the peer's IP address. A `Handshake` message
    /// follows when the handshake is done, or `Error` if it fails.
    pub fn tls_upgrade(
        &mut self,
        id: SocketId,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
    ) -> Result<()> {
        let mut sock = self.core.slots.lock(id).ok_or(Error::UnknownId)?;
        if sock.is_tls() {
            return Err(Error::State("socket already uses TLS"));
        }
        if matches!(sock.proto, Proto::Udp | Proto::Fd)
            || !matches!(sock.state, State::Connected | State::PAccept)
        {
            return Err(Error::State("TLS needs a connected stream socket"));
        }
        if sock.closing || sock.shut_wr {
            return Err(Error::State("socket is closing"));
        }
        let peer_ip = sock
            .raw_fd()
            .and_then(|fd| net::peer_addr(fd).ok().flatten())
            .and_then(|a| match a {
                Addr::Inet(sa) => Some(sa.ip().to_string()),
                Addr::Unix(_) => None,
            });
        let conn = ctx
            .connection(server_name, peer_ip.as_deref())
            .map_err(Error::Invalid)?;
        sock.wq.promote_all_low();
        let prefix = sock.wq.len_bytes();
        sock.tls = Some(Box::new(TlsStream::new(conn, false, prefix)));
        self.tls_started(&mut sock);
        Ok(())
    }

    /// `connect` with TLS: `Open` is reported once the handshake is done (then
    /// `Handshake`); a failed handshake reports `Error`. The server name defaults to
    /// the context's, else the address's IP.
    pub fn tls_connect(
        &mut self,
        addr: &Addr,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
        owner: u64,
    ) -> Result<SocketId> {
        let ip = match addr {
            Addr::Inet(sa) => Some(sa.ip().to_string()),
            Addr::Unix(_) => None,
        };
        let conn = tls_client(ctx, server_name, ip.as_deref())?;
        let (id, mut sock) = self.connect_socket(addr, owner)?;
        sock.tls = Some(Box::new(TlsStream::new(conn, true, 0)));
        self.tls_started(&mut sock);
        Ok(id)
    }

    /// `connect_host` with TLS; the server name defaults to the context's, else `host`.
    pub fn tls_connect_host(
        &mut self,
        host: &str,
        port: u16,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
        owner: u64,
    ) -> Result<SocketId> {
        let conn = tls_client(ctx, server_name, Some(host))?;
        let (id, mut sock) = match super::address::parse_numeric(host, port) {
            Some(a) => self.connect_socket(&Addr::Inet(a), owner)?,
            None => self.connect_host_socket(host, port, owner)?,
        };
        sock.tls = Some(Box::new(TlsStream::new(conn, true, 0)));
        self.tls_started(&mut sock);
        Ok(id)
    }

    /// Make a listener hand out TLS sockets: each accepted socket gets a server
    /// connection of `ctx`; its `Handshake` (or `Error`) follows `start`.
    pub fn tls_listen(&mut self, id: SocketId, ctx: &Arc<TlsContext>) -> Result<()> {
        if !ctx.is_server() {
            return Err(Error::Invalid(
                "a TLS listener needs a server context".into(),
            ));
        }
        let mut sock = self.core.slots.lock(id).ok_or(Error::UnknownId)?;
        if !matches!(sock.state, State::PListen | State::Listen) {
            return Err(Error::State("not a listening socket"));
        }
        sock.tls_listen = Some(ctx.clone());
        Ok(())
    }

    /// The TLS session of a socket (`Err(State)` for a plain socket).
    pub fn tls_info(&self, id: SocketId) -> Result<TlsInfo> {
        let sock = self.core.slots.lock(id).ok_or(Error::UnknownId)?;
        stream::info(&sock).ok_or(Error::State("not a TLS socket"))
    }

    /// A TLS connection was just attached: arm the handshake timeout and flush (the
    /// ClientHello, or the plaintext queued before an upgrade).
    fn tls_started(&mut self, sock: &mut Socket) {
        let core = self.core;
        match self.io.as_deref_mut() {
            Some(io) => arm_timeout(core, io, sock.id),
            None => return core.command(Command::TlsStarted(sock.id)),
        }
        self.carry(sock, Step::Sync);
    }
}

fn tls_client(
    ctx: &Arc<TlsContext>,
    server_name: Option<&str>,
    fallback: Option<&str>,
) -> Result<rustls::Connection> {
    if ctx.is_server() {
        return Err(Error::Invalid("tls connect needs a client context".into()));
    }
    ctx.connection(server_name, fallback)
        .map_err(Error::Invalid)
}
