//! `Handle`: the engine's operations from any thread. Sends write directly when the
//! socket's queue is empty (under the socket's lock); everything that touches the
//! poller becomes a command for the poll thread, which the waker interrupts.

use std::sync::Arc;

use super::core::{Command, Core, Sent, SocketInfo};
use super::error::{Error, Result};
use super::slots::SocketId;
use super::socket::Priority;
use crate::sys::net::{Addr, ListenOptions};

#[derive(Clone)]
pub struct Handle {
    core: Arc<Core>,
}

impl Handle {
    pub(crate) fn new(core: Arc<Core>) -> Handle {
        Handle { core }
    }

    fn sync_if(&self, id: SocketId, needed: bool) {
        if needed {
            self.core.command(Command::Sync(id));
        }
    }

    pub fn listen(
        &self,
        addr: &Addr,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        self.core.listen(addr, opts, owner)
    }

    pub fn connect(&self, addr: &Addr, owner: u64) -> Result<SocketId> {
        let mut reports: Vec<Command> = Vec::new();
        let id = self.core.connect(addr, owner, &mut reports)?;
        for r in reports {
            self.core.command(r);
        }
        self.core.command(Command::Sync(id));
        Ok(id)
    }

    /// `Engine::connect_host` from any thread: never blocks on DNS.
    pub fn connect_host(&self, host: &str, port: u16, owner: u64) -> Result<SocketId> {
        let mut reports: Vec<Command> = Vec::new();
        let id = self.core.connect_host(host, port, owner, &mut reports)?;
        for r in reports {
            self.core.command(r);
        }
        self.core.command(Command::Sync(id));
        Ok(id)
    }

    /// `Engine::listen_host`: blocks the calling thread for a name lookup.
    pub fn listen_host(
        &self,
        host: &str,
        port: u16,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        self.core.listen_host(host, port, opts, owner)
    }

    /// Blocking lookup (numeric addresses are parsed).
    pub fn resolve(&self, host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        self.core.resolver.lookup(host)
    }

    /// Background lookup answered by a `Resolved` message (`ud` = the returned id).
    pub fn resolve_async(&self, host: &str, owner: u64) -> u64 {
        let mut reports: Vec<Command> = Vec::new();
        let req = self.core.resolve_async(host, owner, &mut reports);
        for r in reports {
            self.core.command(r);
        }
        req
    }

    pub fn start(&self, id: SocketId, owner: u64) -> Result<()> {
        let needed = self.core.start(id, owner)?;
        self.sync_if(id, needed);
        Ok(())
    }

    pub fn pause(&self, id: SocketId) -> Result<()> {
        let needed = self.core.pause(id)?;
        self.sync_if(id, needed);
        Ok(())
    }

    pub fn resume(&self, id: SocketId) -> Result<()> {
        let needed = self.core.resume(id)?;
        self.sync_if(id, needed);
        Ok(())
    }

    /// Send with high priority.
    pub fn send(&self, id: SocketId, data: &[u8]) -> Result<()> {
        self.send_with(id, data, Priority::High)
    }

    pub fn send_with(&self, id: SocketId, data: &[u8], prio: Priority) -> Result<()> {
        let mut reports: Vec<Command> = Vec::new();
        let sent = self
            .core
            .send(id, data, prio, self.core.fresh_cs(), &mut reports);
        for r in reports {
            self.core.command(r);
        }
        match sent? {
            Sent::Done => Ok(()),
            Sent::NeedSync => {
                self.core.command(Command::Sync(id));
                Ok(())
            }
            Sent::Broken(err) => {
                let text = err.to_string();
                self.core.command(Command::Abort { id, err });
                Err(Error::Io(std::io::Error::other(text)))
            }
            Sent::Overflow(err) => {
                let text = err.to_string();
                self.core.command(Command::Abort {
                    id,
                    err: std::io::Error::other(text),
                });
                Err(err)
            }
        }
    }

    /// Close after flushing (`force`: drop the queue). Runs on the poll thread; an
    /// unknown id is reported here.
    pub fn close(&self, id: SocketId, force: bool) -> Result<()> {
        if self.core.slots.lock(id).is_none() {
            return Err(Error::UnknownId);
        }
        self.core.command(Command::Close { id, force });
        Ok(())
    }

    pub fn shutdown_write(&self, id: SocketId) -> Result<()> {
        let needed = self.core.shutdown_write(id)?;
        self.sync_if(id, needed);
        Ok(())
    }

    pub fn set_limit(&self, id: SocketId, limit: usize) -> Result<()> {
        self.core.set_limit(id, limit)
    }

    pub fn set_nodelay(&self, id: SocketId, on: bool) -> Result<()> {
        self.core.set_nodelay(id, on)
    }

    pub fn set_keepalive(&self, id: SocketId, on: bool) -> Result<()> {
        self.core.set_keepalive(id, on)
    }

    /// A UDP socket (see `Engine::udp`).
    pub fn udp(&self, bind: Option<&Addr>, v6: bool, owner: u64) -> Result<SocketId> {
        let id = self.core.udp(bind, v6, owner)?;
        self.core.command(Command::Sync(id));
        Ok(id)
    }

    pub fn udp_connect(&self, id: SocketId, peer: &Addr) -> Result<()> {
        self.core.udp_connect(id, peer)
    }

    /// Send one datagram to `to`, or to the `udp_connect` peer when `None`.
    pub fn sendto(&self, id: SocketId, to: Option<&Addr>, data: &[u8]) -> Result<()> {
        let mut reports: Vec<Command> = Vec::new();
        let needed = self.core.sendto(id, to, data, &mut reports)?;
        for r in reports {
            self.core.command(r);
        }
        self.sync_if(id, needed);
        Ok(())
    }

    pub fn info(&self, id: SocketId) -> Option<SocketInfo> {
        self.core.info(id)
    }

    /// Interrupt the poll thread's wait without a message: its `poll` returns (with
    /// whatever else it found). Used by the service runtime to wake the root service
    /// when its mailbox gets a message while it blocks in the poll.
    pub fn wake(&self) {
        self.core.waker.wake();
    }

    /// Make the poll thread report `Exit`.
    pub fn exit(&self) {
        self.core.command(Command::Exit);
    }

    pub fn socket_count(&self) -> usize {
        self.core.slots.live()
    }
}
