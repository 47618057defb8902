//! Half-close in both directions: peer EOF with our queue still full, and our
//! `shutdown_write` (FIN after the queue drains) while reading goes on.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::Duration;

use common::*;
use skysocket::engine::{Error, MsgKind, Priority};
use skysocket::sys::net::Addr;

#[test]
fn peer_eof_with_queue_reports_close_once_and_still_flushes() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let data = Rng(11).bytes(8 * 1024 * 1024);
    h.engine.ops().send(id, &data, Priority::High).unwrap();
    assert!(
        h.engine.ops().info(id).unwrap().queued > 0,
        "8 MiB must queue"
    );
    p.shutdown(Shutdown::Write).unwrap(); // EOF to the engine; we keep reading
    let c = h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    assert_eq!(c.owner, 7);
    let info = h
        .engine
        .ops()
        .info(id)
        .expect("still flushing after peer EOF");
    assert_eq!(info.state, "halfclose_read");
    assert!(
        matches!(h.engine.ops().resume(id), Err(Error::State(_))),
        "resume after peer EOF must fail"
    );
    assert!(
        h.engine.ops().send(id, b"more", Priority::High).is_ok(),
        "sends still queue"
    );
    let reader = thread::spawn(move || read_to_eof(&mut p));
    h.run_until("released", |_, _| {}, |e| e.ops().info(id).is_none());
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len() + 4);
    assert!(got[..data.len()] == data[..] && &got[data.len()..] == b"more");
    h.step(Duration::from_millis(30));
    assert!(
        h.backlog.iter().all(|m| m.id != id),
        "messages after Close: {:?}",
        h.backlog
    );
    assert!(matches!(h.engine.ops().resume(id), Err(Error::UnknownId)));
}

#[test]
fn shutdown_write_sends_fin_and_keeps_reading() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let data = Rng(5).bytes(4 * 1024 * 1024);
    h.engine.ops().send(id, &data, Priority::High).unwrap();
    h.engine.ops().shutdown_write(id).unwrap();
    assert!(
        h.engine.ops().send(id, b"late", Priority::High).is_err(),
        "send after shutdown_write"
    );
    let reader = thread::spawn(move || {
        let got = read_to_eof(&mut p); // EOF arrives only after the whole queue
        (p, got)
    });
    h.run_until(
        "drained",
        |_, _| {},
        |e| e.ops().info(id).is_some_and(|i| i.queued == 0),
    );
    let (mut p, got) = reader.join().unwrap();
    assert!(got == data, "queue not flushed before FIN");
    assert_eq!(h.engine.ops().info(id).unwrap().state, "halfclose_write");
    // The peer keeps talking; we keep reading.
    write_all(&mut p, b"after your FIN");
    let mut rx = Vec::new();
    while rx.len() < 14 {
        let m = h.wait_for("data", |m| m.id == id);
        assert_eq!(m.kind, MsgKind::Data, "{m:?}");
        rx.extend_from_slice(&m.data);
    }
    assert_eq!(rx, b"after your FIN");
    h.engine
        .ops()
        .resume(id)
        .expect("resume is fine on a write-shut socket");
    drop(p);
    let c = h.wait_for("close", |m| m.id == id);
    assert_eq!(c.kind, MsgKind::Close);
    assert!(
        h.engine.ops().info(id).is_none(),
        "released after both sides closed"
    );
}

#[test]
fn shutdown_write_while_connecting_sends_fin_after_connect() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut h = Harness::new();
    let id = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    h.engine.ops().shutdown_write(id).unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == id);
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).expect("EOF expected, not a timeout");
    assert_eq!(n, 0);
    s.write_all(b"hi").unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == id);
    assert_eq!(d.data, b"hi");
}

#[test]
fn shutdown_write_while_connecting_with_queued_data() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut h = Harness::new();
    let id = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    h.engine
        .ops()
        .send(id, b"queued early", Priority::High)
        .unwrap();
    h.engine.ops().shutdown_write(id).unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let reader = thread::spawn(move || {
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    });
    h.run_until(
        "flushed",
        |_, _| {},
        |e| {
            e.ops()
                .info(id)
                .is_some_and(|i| i.state == "halfclose_write")
        },
    );
    assert_eq!(reader.join().unwrap(), b"queued early");
}

#[test]
fn resume_on_closing_or_closed_socket_fails() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let p = peer(addr);
    let id = h.accept(lid);
    h.engine
        .ops()
        .send(id, &vec![0u8; 8 << 20], Priority::High)
        .unwrap();
    h.engine.ops().close(id, false).unwrap();
    assert!(h.engine.ops().info(id).is_some(), "closing, flushing");
    assert!(matches!(h.engine.ops().resume(id), Err(Error::State(_))));
    h.engine.ops().close(id, true).unwrap();
    assert!(matches!(h.engine.ops().resume(id), Err(Error::UnknownId)));
    assert!(matches!(h.engine.ops().pause(id), Err(Error::UnknownId)));
    assert!(matches!(
        h.engine.ops().shutdown_write(id),
        Err(Error::UnknownId)
    ));
    drop(p);
}

#[test]
fn keep_open_lets_us_answer_after_the_peers_fin() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    h.engine.ops().set_keep_open(id, true).unwrap();
    p.write_all(b"request").unwrap();
    p.shutdown(Shutdown::Write).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    // Nothing was queued at EOF, yet the socket is still there for the reply.
    h.engine.ops().send(id, b"reply", Priority::High).unwrap();
    h.engine.ops().close(id, false).unwrap();
    let mut got = Vec::new();
    p.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"reply");
    h.step(Duration::from_millis(20));
    assert!(
        h.backlog
            .iter()
            .all(|m| !(m.id == id && m.kind == MsgKind::Close)),
        "close reported twice"
    );
    assert!(h.engine.ops().info(id).is_none(), "released by close");
    assert!(matches!(
        h.engine.ops().set_keep_open(id, true),
        Err(Error::UnknownId)
    ));
}
