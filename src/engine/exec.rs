//! What only the poll thread holds ([`PollIo`]: the poller and the internal
//! deadlines) and how it carries out a state machine [`Step`].

use std::io;

use super::core::Core;
use super::fsm::Step;
use super::message::Batch;
use super::socket::Socket;
use super::timer::{Deadlines, Internal};
use crate::sys::Poller;

/// The poll thread's own tools, lent to the operations it runs.
pub(crate) struct PollIo {
    pub poller: Poller,
    pub deadlines: Deadlines,
}

impl PollIo {
    /// Carry out `step` for `sock` (locked by the caller). Messages go to `out`.
    pub fn carry(&mut self, core: &Core, sock: &mut Socket, step: Step, out: &mut Batch) {
        match step {
            Step::Done => {}
            Step::Closing => {
                if let Some(t) = core.config.close_timeout {
                    self.deadlines.push(t, Internal::CloseCheck(sock.id));
                }
                self.carry(core, sock, Step::Sync, out);
            }
            Step::Sync => {
                #[cfg(feature = "tls")]
                if sock.is_tls() {
                    // A TLS socket's writes and registration are its flush's job.
                    super::tls::flush(core, self, sock, out);
                    return;
                }
                if let Err(e) = self.sync(sock) {
                    let step = sock.fail(&e.to_string(), out);
                    self.carry(core, sock, step, out);
                }
            }
            Step::Free => self.free(core, sock),
        }
    }

    /// Make the poller registration match what the socket wants now.
    pub fn sync(&mut self, sock: &mut Socket) -> io::Result<()> {
        let want = sock.interest();
        let Some(fd) = sock.raw_fd() else {
            return Ok(());
        };
        match sock.registered {
            None if want.is_none() => {}
            None => {
                self.poller.add(fd, sock.id, want)?;
                sock.registered = Some(want);
            }
            Some(_) if want.is_none() => {
                // Deregister rather than keep a no-interest entry: hang-ups are
                // reported regardless of interest and would spin a level-triggered loop.
                self.poller.delete(fd)?;
                sock.registered = None;
            }
            Some(cur) if cur != want => {
                self.poller.modify(fd, sock.id, want)?;
                sock.registered = Some(want);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Release the socket: deregister, close the fd, return the slot.
    pub fn free(&mut self, core: &Core, sock: &mut Socket) {
        if let (Some(_), Some(fd)) = (sock.registered, sock.raw_fd()) {
            let _ = self.poller.delete(fd);
        }
        let id = sock.id;
        let file = sock.unlink.take();
        core.sub_queued(sock.wq.len_bytes());
        *sock = Socket::default(); // drops the OwnedFd: the descriptor is closed here
        if let Some(f) = file {
            f.remove(); // after the close, so nobody can connect to a dead listener's file
        }
        core.slots.release(id);
    }

    /// Drop the socket's registration (it is about to get another descriptor).
    pub fn deregister(&mut self, sock: &mut Socket) {
        if let (Some(_), Some(fd)) = (sock.registered, sock.raw_fd()) {
            let _ = self.poller.delete(fd);
        }
        sock.registered = None;
    }
}
