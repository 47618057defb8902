//! Portable poll(2) backend: an array of `pollfd` rebuilt only when registrations change.
#![cfg_attr(
    not(any(feature = "poll-backend", not(any(epoll_os, kqueue_os)))),
    allow(dead_code)
)]

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{timeout_ms, Event, Interest};

pub struct Poller {
    fds: Vec<libc::pollfd>,
    tokens: Vec<u64>,
    /// fd -> index in `fds`/`tokens`, so add/modify/delete are O(1).
    index: HashMap<RawFd, usize>,
}

fn poll_events(interest: Interest) -> libc::c_short {
    let mut ev = 0;
    if interest.read {
        ev |= libc::POLLIN;
    }
    if interest.write {
        ev |= libc::POLLOUT;
    }
    ev
}

impl Poller {
    pub const NAME: &'static str = "poll";

    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            fds: Vec::new(),
            tokens: Vec::new(),
            index: HashMap::new(),
        })
    }

    pub fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        if self.index.contains_key(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    pub fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let i = *self
            .index
            .get(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds[i].events = poll_events(interest);
        self.tokens[i] = token;
        Ok(())
    }

    pub fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self
            .index
            .remove(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if i < self.fds.len() {
            self.index.insert(self.fds[i].fd, i);
        }
        Ok(())
    }

    pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms(timeout),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        let mut left = n as usize;
        for (pfd, &token) in self.fds.iter_mut().zip(&self.tokens) {
            if left == 0 {
                break;
            }
            let r = pfd.revents;
            if r == 0 {
                continue;
            }
            pfd.revents = 0;
            left -= 1;
            // A registration with no interest still gets POLLHUP/POLLERR: only report those
            // when the owner asked for something, as epoll does for our uses.
            if pfd.events == 0 {
                continue;
            }
            out.push(Event::new(
                token,
                r & (libc::POLLIN | libc::POLLHUP) != 0,
                r & libc::POLLOUT != 0,
                r & (libc::POLLERR | libc::POLLNVAL) != 0,
            ));
        }
        Ok(())
    }
}
