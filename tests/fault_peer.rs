//! Fault suite 5: peer misbehaviour. One test (it counts descriptors) running: RST in
//! the middle of a large write, FIN while our queue is non-empty, half-close in both
//! directions, a silent peer, and UDP datagrams from 200 sources.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{address, MsgKind, Priority};
use skysocket::sys::net::{set_linger_zero, Addr};

#[test]
fn peer_misbehaviour() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let fds0 = open_fds();

    // RST in the middle of a large write.
    {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        let big = vec![7u8; 32 << 20];
        h.engine.ops().send(sid, &big, Priority::High).unwrap();
        let mut got = vec![0u8; 1 << 20];
        p.read_exact(&mut got).unwrap();
        set_linger_zero(p.as_raw_fd()).unwrap();
        drop(p);
        let m = h.wait_for("error or close", |m| {
            matches!(m.kind, MsgKind::Error | MsgKind::Close) && m.id == sid
        });
        h.run_until("freed", |_, _| {}, |e| e.ops().info(sid).is_none());
        println!(
            "fault_peer: RST after 1 MiB of a 32 MiB write -> {:?} {:?}; socket freed",
            m.kind,
            m.text()
        );
    }

    // FIN while our queue is non-empty: everything is still flushed.
    {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        let data = Pattern::new(20 << 20, 3).0;
        h.engine.ops().send(sid, &data, Priority::High).unwrap();
        let queued = h.engine.ops().info(sid).unwrap().queued;
        p.shutdown(Shutdown::Write).unwrap();
        let reader = std::thread::spawn(move || read_to_eof(&mut p));
        h.wait_for("EOF seen", |m| m.kind == MsgKind::Close && m.id == sid);
        h.run_until(
            "freed after flush",
            |_, _| {},
            |e| e.ops().info(sid).is_none(),
        );
        let got = reader.join().unwrap();
        assert!(got == data, "got {} of {} bytes", got.len(), data.len());
        println!(
            "fault_peer: FIN with {} KiB queued -> all {} bytes flushed, then closed",
            queued / 1024,
            got.len()
        );
    }

    // Half-close, peer side: the peer stops writing, we keep sending.
    {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        p.write_all(b"last words").unwrap();
        p.shutdown(Shutdown::Write).unwrap();
        let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
        assert_eq!(d.data, b"last words");
        h.wait_for("EOF", |m| m.kind == MsgKind::Close && m.id == sid);
        // Still writable until the flush finishes the socket.
        let r = h.engine.ops().send(sid, b"reply", Priority::High);
        assert!(r.is_ok() || h.engine.ops().info(sid).is_none(), "{r:?}");
        h.run_until("freed", |_, _| {}, |e| e.ops().info(sid).is_none());
        let got = read_to_eof(&mut p);
        assert!(got == b"reply" || got.is_empty(), "{got:?}");
        println!(
            "fault_peer: peer half-close -> data then Close, reply {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    // Half-close, our side: FIN after the queue drains, reading goes on.
    {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        h.engine
            .ops()
            .send(sid, &vec![1u8; 3 << 20], Priority::High)
            .unwrap();
        h.engine.ops().shutdown_write(sid).unwrap();
        assert!(h.engine.ops().send(sid, b"late", Priority::High).is_err());
        let mut p2 = p.try_clone().unwrap();
        let reader = std::thread::spawn(move || read_to_eof(&mut p2));
        h.run_until(
            "queue drained",
            |_, _| {},
            |e| e.ops().info(sid).is_some_and(|i| i.queued == 0),
        );
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 3 << 20);
        p.write_all(b"still listening?").unwrap();
        let d = h.wait_for("data after our FIN", |m| {
            m.kind == MsgKind::Data && m.id == sid
        });
        assert_eq!(d.data, b"still listening?");
        drop(p);
        h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
        h.run_until("freed", |_, _| {}, |e| e.ops().info(sid).is_none());
        println!("fault_peer: our half-close -> peer got 3 MiB + EOF, we still read its reply");
    }

    // A silent peer: Accept and nothing else; then a clean close.
    {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        let end = Instant::now() + Duration::from_millis(300);
        while Instant::now() < end {
            h.step(Duration::from_millis(20));
        }
        let extra: Vec<_> = h.backlog.iter().filter(|m| m.id == sid).collect();
        assert!(extra.is_empty(), "messages from a silent peer: {extra:?}");
        h.engine.ops().close(sid, false).unwrap();
        assert!(read_to_eof(&mut p).is_empty());
        let closes = {
            h.step(Duration::from_millis(20));
            h.backlog
                .iter()
                .filter(|m| m.id == sid && m.kind == MsgKind::Close)
                .count()
        };
        assert!(closes <= 1);
        assert!(h.engine.ops().info(sid).is_none());
        println!("fault_peer: silent peer -> no messages in 300 ms, clean close ({closes} Close)");
    }

    // UDP from 200 sources: each datagram arrives with its sender's address.
    {
        let uid = h
            .engine
            .ops()
            .udp(Some(&Addr::Inet("127.0.0.1:0".parse().unwrap())), false, 3)
            .unwrap();
        let port: u16 = h
            .engine
            .ops()
            .info(uid)
            .unwrap()
            .local
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let senders: Vec<UdpSocket> = (0..200)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &senders {
            let me = s.local_addr().unwrap().to_string();
            s.send_to(me.as_bytes(), ("127.0.0.1", port)).unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        h.pump("200 datagrams", |_, m| {
            if m.kind == MsgKind::Udp && m.id == uid {
                let from = address::decode_compact(&m.extra).expect("sender address");
                assert_eq!(from.to_string(), m.text(), "sender address");
                seen.insert(from);
            }
            seen.len() == senders.len()
        });
        h.engine.ops().close(uid, true).unwrap();
        println!(
            "fault_peer: UDP from {} sources, every sender address correct",
            seen.len()
        );
    }

    h.step(Duration::from_millis(20));
    let fds1 = open_fds();
    println!(
        "fault_peer: fds before/after {fds0}/{fds1}, sockets {}",
        h.engine.socket_count()
    );
    assert_eq!(fds0, fds1, "descriptor leak");
    assert_eq!(h.engine.socket_count(), 1, "only the listener remains");
}
