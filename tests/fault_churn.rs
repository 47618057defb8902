//! Fault suite 2: connect/echo/close churn mixing clean close, forced close and peer
//! RST. Alone in its binary: it counts this process's descriptors. Default 10,000
//! cycles; `SKYSOCKET_SOAK=1`: 100,000.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{MsgKind, Priority};
use skysocket::sys::net::set_linger_zero;

#[test]
fn churn_leaves_no_descriptor_or_socket_behind() {
    let cycles = if soak() { 100_000 } else { 10_000 };
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let fds_before = open_fds();
    let sockets_before = h.engine.socket_count();
    let t0 = Instant::now();
    let mut modes = [0u32; 4];
    let (mut bytes, mut resets_seen) = (0u64, 0u32);
    for i in 0..cycles {
        let mut p = TcpStreamExt::connect(addr);
        let sid = h.accept(lid);
        let msg = format!("ping {i}");
        p.write_all(msg.as_bytes()).unwrap();
        let got = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
        h.engine.ops().send(sid, &got.data, Priority::High).unwrap();
        let mut back = vec![0u8; got.data.len()];
        p.read_exact(&mut back).unwrap();
        bytes += 2 * back.len() as u64;
        let mode = i % 4;
        modes[mode] += 1;
        match mode {
            // The peer closes cleanly: the engine sees EOF and closes.
            0 => {
                drop(p);
                h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
            }
            // The engine closes after flushing; the peer sees EOF.
            1 => {
                h.engine.ops().send(sid, b"bye", Priority::High).unwrap();
                h.engine.ops().close(sid, false).unwrap();
                assert_eq!(read_to_eof(&mut p), b"bye");
            }
            // Forced close from the engine.
            2 => {
                h.engine.ops().close(sid, true).unwrap();
                let _ = read_to_eof(&mut p);
            }
            // The peer resets the connection (SO_LINGER 0).
            _ => {
                set_linger_zero(p.as_raw_fd()).unwrap();
                drop(p);
                let m = h.wait_for("close or error", |m| {
                    matches!(m.kind, MsgKind::Close | MsgKind::Error) && m.id == sid
                });
                if m.kind == MsgKind::Error {
                    resets_seen += 1;
                }
            }
        }
        h.run_until("socket freed", |_, _| {}, |e| e.ops().info(sid).is_none());
        h.backlog.clear();
    }
    h.step(Duration::from_millis(10));
    let fds_after = open_fds();
    let sockets_after = h.engine.socket_count();
    println!(
        "fault_churn: {cycles} cycles in {:.1} s (peer close {}, engine close {}, forced {}, \
         peer RST {} of which {resets_seen} reported as Error), {bytes} bytes echoed, \
         fds before/after {fds_before}/{fds_after}, sockets before/after \
         {sockets_before}/{sockets_after}",
        t0.elapsed().as_secs_f64(),
        modes[0],
        modes[1],
        modes[2],
        modes[3]
    );
    assert_eq!(fds_before, fds_after, "descriptors leaked");
    assert_eq!(sockets_before, sockets_after, "sockets leaked");
}

/// `peer` with short timeouts (a hang fails fast).
struct TcpStreamExt;
impl TcpStreamExt {
    fn connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
        let s = peer(addr);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}
