//! The raw rustls ceiling: a TLS echo driven by one epoll loop, the way the engine
//! drives its TLS sockets (non-blocking, level-triggered, 64 KiB socket reads fed to
//! `read_tls`, plaintext echoed through the connection's writer, `write_tls` until the
//! kernel would block, write interest only while rustls has bytes to send). No Lua, no
//! message queues: what a server costs with nothing but rustls and the system calls.
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use rustls::ServerConnection;

const READ_SIZE: usize = 64 * 1024;
/// Plaintext waiting for room in rustls' send buffer stops further reads past this.
const SEND_LIMIT: usize = 1024 * 1024;
const LISTENER: u64 = u64::MAX;

struct Conn {
    sock: TcpStream,
    tls: ServerConnection,
    /// Echo bytes rustls' writer did not take yet (its buffer limit was reached).
    pending: Vec<u8>,
    writing: bool,
}

fn ctl(ep: i32, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ep` is our epoll descriptor, `fd` an open socket, `ev` a valid event.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn run(port: u16, cfg: Arc<rustls::ServerConfig>) {
    let l =
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| crate::die(format!("bind: {e}")));
    l.set_nonblocking(true).unwrap();
    println!("listening on {}", l.local_addr().unwrap());
    io::stdout().flush().ok();
    // SAFETY: plain system call, the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        crate::die(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        l.as_raw_fd(),
        libc::EPOLLIN as u32,
        LISTENER,
    )
    .unwrap();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut rbuf = vec![0u8; READ_SIZE];
    let mut pbuf = vec![0u8; READ_SIZE];
    loop {
        // SAFETY: `events` has room for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            crate::die(format!("epoll_wait: {e}"));
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            if token == LISTENER {
                while let Ok((s, _)) = l.accept() {
                    s.set_nonblocking(true).ok();
                    s.set_nodelay(true).ok();
                    let Ok(tls) = ServerConnection::new(cfg.clone()) else {
                        continue;
                    };
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    if ctl(
                        ep,
                        libc::EPOLL_CTL_ADD,
                        s.as_raw_fd(),
                        libc::EPOLLIN as u32,
                        slot as u64,
                    )
                    .is_err()
                    {
                        free.push(slot);
                        continue;
                    }
                    conns[slot] = Some(Conn {
                        sock: s,
                        tls,
                        pending: Vec::new(),
                        writing: false,
                    });
                }
                continue;
            }
            let slot = token as usize;
            let Some(c) = conns[slot].as_mut() else {
                continue;
            };
            if !serve(ep, slot, c, &mut rbuf, &mut pbuf) {
                c.tls.send_close_notify();
                let _ = c.tls.write_tls(&mut c.sock);
                conns[slot] = None; // closes the socket (and leaves the epoll set)
                free.push(slot);
            }
        }
    }
}

/// Moves what it can: echo pending plaintext, read and decrypt, write ciphertext, and
/// sets write interest. Returns false when the connection is over.
fn serve(ep: i32, slot: usize, c: &mut Conn, rbuf: &mut [u8], pbuf: &mut [u8]) -> bool {
    if !flush(c) {
        return false;
    }
    while c.pending.len() < SEND_LIMIT {
        let n = match c.sock.read(rbuf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        };
        let mut input = &rbuf[..n];
        while !input.is_empty() {
            if c.tls.read_tls(&mut input).is_err() {
                return false;
            }
            let st = match c.tls.process_new_packets() {
                Ok(st) => st,
                Err(_) => return false,
            };
            let closed = st.peer_has_closed();
            loop {
                match c.tls.reader().read(pbuf) {
                    Ok(0) => break,
                    Ok(m) => echo(c, m, pbuf),
                    Err(_) => break, // WouldBlock: nothing more decrypted yet
                }
            }
            if closed {
                return false;
            }
        }
        if !flush(c) {
            return false;
        }
        if n < rbuf.len() {
            break;
        }
    }
    let want = c.tls.wants_write() || !c.pending.is_empty();
    if want != c.writing {
        c.writing = want;
        let ev = libc::EPOLLIN as u32 | if want { libc::EPOLLOUT as u32 } else { 0 };
        if ctl(ep, libc::EPOLL_CTL_MOD, c.sock.as_raw_fd(), ev, slot as u64).is_err() {
            return false;
        }
    }
    true
}

fn echo(c: &mut Conn, m: usize, pbuf: &[u8]) {
    if !c.pending.is_empty() {
        c.pending.extend_from_slice(&pbuf[..m]);
        return;
    }
    let took = c.tls.writer().write(&pbuf[..m]).unwrap_or(0);
    if took < m {
        c.pending.extend_from_slice(&pbuf[took..m]);
    }
}

/// Hands pending plaintext to rustls and writes ciphertext until the kernel would
/// block. False on a write error.
fn flush(c: &mut Conn) -> bool {
    loop {
        if !c.pending.is_empty() {
            let took = c.tls.writer().write(&c.pending).unwrap_or(0);
            c.pending.drain(..took);
        }
        if !c.tls.wants_write() {
            return true;
        }
        match c.tls.write_tls(&mut c.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
