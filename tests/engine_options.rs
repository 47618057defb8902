//! Socket options: SO_REUSEPORT listeners, TCP_NODELAY / SO_KEEPALIVE, SO_REUSEADDR.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use skysocket::engine::{Error, MsgKind, Priority};
use skysocket::sys::net::{Addr, ListenOptions};

const REUSEPORT: ListenOptions = ListenOptions {
    backlog: 128,
    reuseport: true,
};

#[test]
fn two_reuseport_listeners_share_a_port_and_both_accept() {
    let mut h = Harness::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (l1, local) = h
        .engine
        .ops()
        .listen(&Addr::Inet(any), REUSEPORT, 1)
        .unwrap();
    let Some(Addr::Inet(addr)) = local else {
        panic!("no local address")
    };
    // Without the option the port is taken.
    assert!(h.engine.ops().listen(&Addr::Inet(addr), opts(), 2).is_err());
    let (l2, _) = h
        .engine
        .ops()
        .listen(&Addr::Inet(addr), REUSEPORT, 2)
        .expect("second SO_REUSEPORT listener on the same port");
    h.engine.ops().start(l1, 1).unwrap();
    h.engine.ops().start(l2, 2).unwrap();
    let mut peers = Vec::new();
    let (n1, n2) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    for _ in 0..64 {
        peers.push(TcpStream::connect(addr).unwrap());
    }
    h.run_until(
        "64 accepts",
        |e, m| {
            if m.kind == MsgKind::Accept {
                if m.id == l1 {
                    n1.set(n1.get() + 1);
                } else if m.id == l2 {
                    n2.set(n2.get() + 1);
                }
                e.ops().close(m.ud, true).unwrap();
            }
        },
        |_| n1.get() + n2.get() == 64,
    );
    let (n1, n2) = (n1.get(), n2.get());
    assert!(n1 > 0 && n2 > 0, "accepts split {n1}/{n2}");
}

#[test]
fn nodelay_and_keepalive_on_tcp_but_not_udp() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let cid = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    let sid = h.accept(lid);
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    for id in [cid, sid] {
        h.engine.ops().set_nodelay(id, true).unwrap();
        h.engine.ops().set_nodelay(id, false).unwrap();
        h.engine.ops().set_keepalive(id, true).unwrap();
        h.engine.ops().set_keepalive(id, false).unwrap();
    }
    let handle = h.engine.handle();
    handle.ops().set_nodelay(cid, true).unwrap();
    handle.ops().set_keepalive(cid, true).unwrap();
    let udp = h
        .engine
        .ops()
        .udp(Some(&Addr::Inet("127.0.0.1:0".parse().unwrap())), false, 1)
        .unwrap();
    match h.engine.ops().set_nodelay(udp, true) {
        Err(Error::State(s)) => assert!(s.contains("TCP"), "{s}"),
        other => panic!("nodelay on UDP: {other:?}"),
    }
    assert!(matches!(
        h.engine.ops().set_keepalive(udp, true),
        Err(Error::State(_))
    ));
    h.engine.ops().close(cid, true).unwrap();
    assert!(matches!(
        h.engine.ops().set_nodelay(cid, true),
        Err(Error::UnknownId)
    ));
}

#[test]
fn reuseaddr_relisten_with_time_wait_leftover() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let sid = h.accept(lid);
    h.engine.ops().send(sid, b"bye", Priority::High).unwrap();
    // We close first: our side of the connection goes to TIME_WAIT on `addr`.
    h.engine.ops().close(sid, false).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
    assert_eq!(read_to_eof(&mut p), b"bye");
    drop(p);
    std::thread::sleep(Duration::from_millis(20));
    h.engine.ops().close(lid, true).unwrap();
    let (lid2, _) = h
        .engine
        .ops()
        .listen(&Addr::Inet(addr), opts(), 7)
        .expect("re-listen over TIME_WAIT");
    h.engine.ops().start(lid2, 7).unwrap();
    let _p2 = peer(addr);
    h.accept(lid2);
}

/// TCP_NODELAY is on by default for accepted sockets, numeric connects and connects by
/// host name (the resolver path); `set_nodelay(false)` turns it off per socket.
#[test]
fn nodelay_is_the_default_on_accepted_and_connected_sockets() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let cid = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    let sid = h.accept(lid);
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    let named = h
        .engine
        .ops()
        .connect_host("localhost", addr.port(), 1)
        .unwrap();
    h.wait_for("open by name", |m| m.kind == MsgKind::Open && m.id == named);
    let sid2 = h.accept(lid);
    for id in [cid, sid, named, sid2] {
        assert_eq!(
            h.engine.ops().info(id).unwrap().nodelay,
            Some(true),
            "id {id}"
        );
    }
    assert_eq!(h.engine.ops().info(lid).unwrap().nodelay, None, "listener");
    h.engine.ops().set_nodelay(sid, false).unwrap();
    assert_eq!(h.engine.ops().info(sid).unwrap().nodelay, Some(false));
}

/// `Config::nodelay = false` keeps Nagle's algorithm on new connections.
#[test]
fn nodelay_default_can_be_turned_off() {
    let mut h = Harness::with_config(skysocket::engine::Config {
        nodelay: false,
        ..Default::default()
    });
    let (lid, addr) = h.listen("127.0.0.1");
    let cid = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    let sid = h.accept(lid);
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    for id in [cid, sid] {
        assert_eq!(
            h.engine.ops().info(id).unwrap().nodelay,
            Some(false),
            "id {id}"
        );
    }
}
