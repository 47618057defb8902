//! UDP over IPv4 and IPv6: bound and unbound sockets, big datagrams, default peers,
//! compact sender addresses, and ICMP errors that must not kill the socket.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::address::decode_compact;
use skysocket::engine::{Error, MsgKind, SocketId};
use skysocket::sys::net::Addr;

fn inet(s: &str) -> Addr {
    Addr::Inet(s.parse().unwrap())
}

fn bound(h: &mut Harness, at: &str, owner: u64) -> (SocketId, SocketAddr) {
    let id = h
        .engine
        .ops()
        .udp(Some(&inet(at)), false, owner)
        .expect("udp bind");
    let local = h.engine.ops().info(id).unwrap().local.unwrap();
    (id, local.parse().unwrap())
}

fn std_peer(at: &str) -> UdpSocket {
    let s = UdpSocket::bind(at).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s.recv_from(&mut buf).expect("peer recv");
    buf.truncate(n);
    (buf, from)
}

fn round_trip(family_any: &str, loopback: &str, max: usize) {
    let mut h = Harness::new();
    let (id, local) = bound(&mut h, family_any, 5);
    assert_ne!(local.port(), 0);
    let peer = std_peer(loopback);
    let target: SocketAddr = SocketAddr::new(peer.local_addr().unwrap().ip(), local.port());
    let big = Rng(42).bytes(max);
    for payload in [&b"x"[..], &big[..]] {
        peer.send_to(payload, target).unwrap();
        let m = h.wait_for("udp", |m| m.kind == MsgKind::Udp && m.id == id);
        assert_eq!(m.owner, 5);
        assert!(
            m.data == payload,
            "datagram of {} bytes differs",
            payload.len()
        );
        let from = decode_compact(&m.extra).expect("compact sender address");
        assert_eq!(from, peer.local_addr().unwrap(), "sender address");
        // Reply to the sender given by the message, and the peer gets it intact.
        h.engine
            .ops()
            .sendto(id, Some(&Addr::Inet(from)), payload)
            .unwrap();
        let (got, src) = recv(&peer);
        assert!(got == payload, "reply of {} bytes differs", payload.len());
        assert_eq!(src.port(), local.port());
    }
    let info = h.engine.ops().info(id).unwrap();
    assert_eq!(info.kind, "udp");
    assert_eq!(info.state, "bind");
    assert_eq!(info.read, (1 + max) as u64);
    assert_eq!(info.written, (1 + max) as u64);
}

#[test]
fn bound_ipv4_round_trip_with_65507_byte_datagrams() {
    round_trip("127.0.0.1:0", "127.0.0.1:0", 65_507);
}

#[test]
fn bound_ipv6_round_trip_with_big_datagrams() {
    // IPv6 allows 65,527 bytes of UDP payload (no IPv4 header to subtract).
    round_trip("[::1]:0", "[::1]:0", 65_527);
}

#[test]
fn unbound_socket_sends_to_ipv6_and_to_ipv4_through_dual_stack() {
    let mut h = Harness::new();
    let id = h.engine.ops().udp(None, true, 1).expect("unbound v6");
    let p6 = std_peer("[::1]:0");
    let p4 = std_peer("127.0.0.1:0");
    h.engine
        .ops()
        .sendto(id, Some(&Addr::Inet(p6.local_addr().unwrap())), b"to-v6")
        .unwrap();
    h.engine
        .ops()
        .sendto(id, Some(&Addr::Inet(p4.local_addr().unwrap())), b"to-v4")
        .unwrap();
    let (d6, from6) = recv(&p6);
    assert_eq!(d6, b"to-v6");
    let (d4, from4) = recv(&p4);
    assert_eq!(d4, b"to-v4");
    // The implicit bind happened on send: replies come back to the engine socket.
    p4.send_to(b"back4", from4).unwrap();
    let m = h.wait_for("reply v4", |m| m.kind == MsgKind::Udp && m.id == id);
    assert_eq!(m.data, b"back4");
    assert_eq!(
        decode_compact(&m.extra),
        Some(p4.local_addr().unwrap()),
        "a v4-mapped sender is reported as plain IPv4"
    );
    p6.send_to(b"back6", from6).unwrap();
    let m = h.wait_for("reply v6", |m| m.kind == MsgKind::Udp && m.id == id);
    assert_eq!(m.data, b"back6");
    assert_eq!(decode_compact(&m.extra), Some(p6.local_addr().unwrap()));
}

#[test]
fn unbound_ipv4_socket_sends_to_ipv4() {
    let mut h = Harness::new();
    let id = h.engine.ops().udp(None, false, 1).expect("unbound v4");
    let p4 = std_peer("127.0.0.1:0");
    h.engine
        .ops()
        .sendto(id, Some(&Addr::Inet(p4.local_addr().unwrap())), b"hi")
        .unwrap();
    assert_eq!(recv(&p4).0, b"hi");
}

#[test]
fn udp_connect_sets_the_default_peer() {
    let mut h = Harness::new();
    let (id, local) = bound(&mut h, "127.0.0.1:0", 1);
    assert!(
        matches!(
            h.engine.ops().sendto(id, None, b"nowhere"),
            Err(Error::State(_))
        ),
        "sendto without an address needs a connected socket"
    );
    let peer = std_peer("127.0.0.1:0");
    h.engine
        .ops()
        .udp_connect(id, &Addr::Inet(peer.local_addr().unwrap()))
        .unwrap();
    h.engine.ops().sendto(id, None, b"default").unwrap();
    let (d, from) = recv(&peer);
    assert_eq!(d, b"default");
    assert_eq!(from, local);
    let info = h.engine.ops().info(id).unwrap();
    assert_eq!(info.peer, Some(peer.local_addr().unwrap().to_string()));
    peer.send_to(b"answer", local).unwrap();
    let m = h.wait_for("answer", |m| m.kind == MsgKind::Udp && m.id == id);
    assert_eq!(m.data, b"answer");
}

#[test]
fn refused_datagram_does_not_kill_the_socket() {
    let mut h = Harness::new();
    let (id, local) = bound(&mut h, "127.0.0.1:0", 3);
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead); // nothing listens there any more: the kernel answers port unreachable
    h.engine
        .ops()
        .udp_connect(id, &Addr::Inet(dead_addr))
        .unwrap();
    // Send until the refusal shows up, as an Err from sendto or an Error message (ud 1).
    let end = Instant::now() + DEADLINE;
    let mut refused = false;
    while !refused {
        assert!(Instant::now() < end, "no ECONNREFUSED: {:?}", h.backlog);
        match h.engine.ops().sendto(id, None, b"ping") {
            Ok(()) => {}
            Err(e) => {
                assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
                refused = true;
            }
        }
        h.step(Duration::from_millis(10));
        if let Some(i) = h
            .backlog
            .iter()
            .position(|m| m.kind == MsgKind::Error && m.id == id)
        {
            let m = h.backlog.remove(i);
            assert_eq!(m.ud, 1, "the socket stays open");
            assert!(m.text().to_lowercase().contains("refused"), "{}", m.text());
            refused = true;
        }
    }
    assert!(
        h.engine.ops().info(id).is_some(),
        "socket survived the refusal"
    );
    assert!(
        !h.backlog
            .iter()
            .any(|m| m.id == id
                && (m.kind == MsgKind::Close || (m.kind == MsgKind::Error && m.ud == 0))),
        "socket reported closed: {:?}",
        h.backlog
    );
    // Re-point it at a live peer: both directions still work.
    let live = std_peer("127.0.0.1:0");
    h.engine
        .ops()
        .udp_connect(id, &Addr::Inet(live.local_addr().unwrap()))
        .unwrap();
    h.engine.ops().sendto(id, None, b"alive").unwrap();
    assert_eq!(recv(&live).0, b"alive");
    live.send_to(b"still", local).unwrap();
    let m = h.wait_for("udp after refusal", |m| {
        m.kind == MsgKind::Udp && m.id == id
    });
    assert_eq!(m.data, b"still");
}

#[test]
fn udp_rejects_stream_calls_and_unix_addresses() {
    let mut h = Harness::new();
    let (id, _) = bound(&mut h, "127.0.0.1:0", 1);
    assert!(h
        .engine
        .ops()
        .send(id, b"x", skysocket::engine::Priority::High)
        .is_err());
    assert!(h
        .engine
        .ops()
        .udp(Some(&Addr::Unix("/tmp/x".into())), false, 1)
        .is_err());
    h.engine.ops().close(id, false).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    assert!(matches!(
        h.engine.ops().sendto(id, None, b"x"),
        Err(Error::UnknownId)
    ));
}

#[test]
fn udp_ports_are_never_shared() {
    let mut h = Harness::new();
    let (a, local) = bound(&mut h, "127.0.0.1:0", 1);
    assert!(
        h.engine
            .ops()
            .udp(Some(&Addr::Inet(local)), false, 1)
            .is_err(),
        "a second socket bound the same UDP port"
    );
    let mut ports = std::collections::HashSet::new();
    ports.insert(local.port());
    for _ in 0..500 {
        let (_, l) = bound(&mut h, "127.0.0.1:0", 1);
        assert!(ports.insert(l.port()), "port {} handed out twice", l.port());
    }
    let _ = a;
}
