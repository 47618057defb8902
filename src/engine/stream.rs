//! The poll thread's I/O on a ready socket: accept, connect completion, stream reads
//! and writes, datagrams. Each does the system calls and hands the outcome to the
//! socket's state machine (`fsm.rs`), then carries out the step it returns.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::address;
use super::core::Core;
use super::exec::PollIo;
use super::fsm::{State, Step};
use super::message::{Batch, Msg};
use super::socket::{Proto, Socket};
use crate::sys::adopt;
use crate::sys::net::{self, Addr};

/// Largest UDP payload we receive (IPv6 jumbograms aside).
const UDP_MAX: usize = 65535;

/// Report a failed accept to the listener's owner; the listener stays open.
fn listener_error(listener: &Socket, msg: &str, out: &mut Batch) {
    out.push(Msg::Error {
        id: listener.id,
        owner: listener.owner,
        text: msg.as_bytes(),
        open: true,
    });
}

/// Accept what is pending. Returns false when the listener must back off: out of
/// descriptors and the spare could not take the connection off the queue.
pub(super) fn accept_ready(
    core: &Core,
    io: &mut PollIo,
    reserve: &mut Option<OwnedFd>,
    listener: &mut Socket,
    out: &mut Batch,
) -> bool {
    #[cfg(not(feature = "tls"))]
    let _ = &io;
    let lfd = listener.raw_fd().expect("listener has an fd");
    for _ in 0..core.config.accept_burst {
        match net::accept(lfd) {
            Ok((fd, peer)) => {
                let Some((id, mut sock)) = core.slots.reserve() else {
                    drop(fd); // closing it tells the peer at once
                    let msg = "accept: too many sockets (max_sockets reached)";
                    listener_error(listener, msg, out);
                    return true;
                };
                core.init_socket(
                    &mut sock,
                    Some(fd),
                    State::PAccept,
                    listener.proto,
                    listener.owner,
                );
                #[cfg(feature = "tls")]
                if let Some(ctx) = &listener.tls_listen {
                    match ctx.connection(None, None) {
                        Ok(conn) => {
                            sock.tls = Some(Box::new(super::tls::TlsStream::new(conn, false, 0)));
                            super::tls::arm_timeout(core, io, id);
                        }
                        Err(e) => {
                            core.discard(&mut sock); // closes the descriptor
                            listener_error(listener, &format!("accept: {e}"), out);
                            continue;
                        }
                    }
                }
                let text = address::display(peer.as_ref());
                out.push(Msg::Accept {
                    listener: listener.id,
                    owner: listener.owner,
                    id,
                    peer: text.as_bytes(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                // Out of descriptors: free the spare, take the connection off the queue
                // and close it (the peer sees EOF), so the level-triggered listener does
                // not spin on it. Without a spare, or if that fails, back off instead.
                let shed = if reserve.take().is_some() {
                    let shed = match net::accept(lfd) {
                        Ok((fd, _)) => {
                            drop(fd);
                            true
                        }
                        Err(_) => false,
                    };
                    *reserve = if core.config.reserve_fd {
                        net::reserve_fd().ok()
                    } else {
                        None
                    };
                    shed && reserve.is_some()
                } else {
                    false
                };
                let msg = if shed {
                    format!("accept: {e}; the pending connection was closed")
                } else {
                    format!(
                        "accept: {e}; not accepting for {} ms",
                        core.config.accept_backoff.as_millis()
                    )
                };
                listener_error(listener, &msg, out);
                return shed;
            }
            // The peer gave up before we accepted: nothing to report.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNABORTED) | Some(libc::EPROTO)
                ) => {}
            Err(e) => {
                let msg = format!("accept: {e}");
                listener_error(listener, &msg, out);
                return true;
            }
        }
    }
    true
}

/// `connect_host`: start a connect to the next address left, after `last` failed.
/// With none left, report the last error and release the socket.
pub(super) fn connect_next(
    core: &Core,
    io: &mut PollIo,
    sock: &mut Socket,
    out: &mut Batch,
    mut last: Option<io::Error>,
) {
    io.deregister(sock);
    sock.fd = None;
    sock.state = State::Reserve;
    while let Some(addr) = sock.connect_rest.as_mut().and_then(|r| r.pop_front()) {
        match net::connect(&Addr::Inet(addr)) {
            Ok((fd, done)) => {
                core.apply_nodelay(fd.as_raw_fd());
                sock.fd = Some(fd);
                sock.state = State::Connecting;
                let step = if done {
                    connected(sock, out)
                } else {
                    Step::Sync
                };
                io.carry(core, sock, step, out);
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no address to connect to"));
    let step = sock.fail(&e.to_string(), out);
    io.carry(core, sock, step, out);
}

/// The connect of `sock` finished: the transition, with the peer's address.
fn connected(sock: &mut Socket, out: &mut Batch) -> Step {
    let peer = sock
        .raw_fd()
        .and_then(|fd| net::peer_addr(fd).ok().flatten());
    let text = address::display(peer.as_ref());
    sock.connected(&text, out)
}

pub(super) fn connect_ready(core: &Core, io: &mut PollIo, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("connecting socket has an fd");
    let step = match net::take_error(fd) {
        Ok(None) => connected(sock, out),
        Ok(Some(e)) | Err(e) => {
            if sock.connect_rest.as_ref().is_some_and(|r| !r.is_empty()) {
                return connect_next(core, io, sock, out, Some(e));
            }
            sock.fail(&e.to_string(), out)
        }
    };
    io.carry(core, sock, step, out);
}

/// One read. Returns false when the socket was released. The common case (bytes
/// read) is inlined into the poll loop; the end of a read (EOF, an error, nothing
/// there) is `read_ended`'s.
#[inline(always)]
pub(super) fn stream_read(
    core: &Core,
    io: &mut PollIo,
    sock: &mut Socket,
    out: &mut Batch,
) -> bool {
    let fd = sock.raw_fd().expect("stream socket has an fd");
    let size = sock.read_size as usize;
    let start = out.arena_len();
    match net::read_append(fd, out.arena_mut(), size) {
        Ok(n) if n > 0 => {
            sock.stats.read += n as u64;
            sock.stats.rtime = core.now_cs();
            if n == size {
                sock.read_size = (size * 2).min(core.config.max_read) as u32;
            } else if size > core.config.min_read && n * 2 < size {
                sock.read_size = (size / 2) as u32;
            }
            out.push_read(sock.id, sock.owner, start);
            true
        }
        res => read_ended(core, io, sock, out, res),
    }
}

/// A read that brought no bytes: EOF (`Ok(0)`), nothing there, or an error.
#[inline(never)]
fn read_ended(
    core: &Core,
    io: &mut PollIo,
    sock: &mut Socket,
    out: &mut Batch,
    res: io::Result<usize>,
) -> bool {
    let step = match res {
        Ok(_) => sock.on_eof(out),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) => sock.fail(&e.to_string(), out),
    };
    io.carry(core, sock, step, out);
    sock.id != 0
}

/// One write of `slices` on a stream: `send`/`sendmsg` on a socket (SIGPIPE
/// suppressed by flag), `writev` on an adopted descriptor (a pipe or terminal too).
#[inline]
pub(super) fn write_slices(proto: Proto, fd: RawFd, slices: &[&[u8]]) -> io::Result<usize> {
    match (proto, slices.len()) {
        (Proto::Fd, _) => adopt::write(fd, slices),
        (_, 1) => net::write(fd, slices[0]),
        _ => net::write_vectored(fd, slices),
    }
}

/// Write as much of the queue as the kernel takes, with one gathering syscall per
/// round; once drained, the state machine decides what comes next.
pub(super) fn stream_flush(core: &Core, io: &mut PollIo, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("stream socket has an fd");
    loop {
        if sock.wq.is_empty() {
            break;
        }
        let mut slices: Vec<&[u8]> = Vec::new();
        sock.wq.front_slices(&mut slices, 64);
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let res = write_slices(sock.proto, fd, &slices);
        drop(slices);
        match res {
            Ok(n) => {
                sock.wq.consume(n);
                core.sub_queued(n);
                sock.stats.written += n as u64;
                sock.stats.wtime = core.now_cs();
                if n < total {
                    break; // the kernel buffer is full: wait for the next writable event
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                let step = sock.fail(&e.to_string(), out);
                return io.carry(core, sock, step, out);
            }
        }
    }
    let step = if sock.wq.is_empty() {
        sock.on_drained(core, out)
    } else {
        Step::Done
    };
    io.carry(core, sock, step, out);
}

pub(super) fn udp_read(core: &Core, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("udp socket has an fd");
    let start = out.arena_len();
    match net::recvfrom_append(fd, out.arena_mut(), UDP_MAX) {
        Ok((n, from)) => {
            sock.stats.read += n as u64;
            sock.stats.rtime = core.now_cs();
            let mid = start + n;
            if let Some(a) = from {
                address::encode_compact(&a, out.arena_mut());
            }
            out.push_datagram(sock.id, sock.owner, start, mid);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            // ICMP errors (e.g. port unreachable after a connected send) fail a
            // datagram, not the socket.
            out.arena_mut().truncate(start);
            out.push(Msg::Error {
                id: sock.id,
                owner: sock.owner,
                text: e.to_string().as_bytes(),
                open: true,
            });
        }
    }
}

pub(super) fn udp_flush(core: &Core, io: &mut PollIo, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("udp socket has an fd");
    let (id, owner) = (sock.id, sock.owner);
    let now = core.now_cs();
    let mut written = 0u64;
    if let Some(udp) = sock.udp.as_mut() {
        while let Some((data, to)) = udp.queue.front() {
            match net::sendto(fd, data, Some(to)) {
                Ok(_) => {
                    written += data.len() as u64;
                    udp.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    udp.queue.pop_front();
                    out.push(Msg::Error {
                        id,
                        owner,
                        text: e.to_string().as_bytes(),
                        open: true,
                    });
                }
            }
        }
    }
    if written > 0 {
        sock.stats.written += written;
        sock.stats.wtime = now;
    }
    io.carry(core, sock, Step::Sync, out);
}
