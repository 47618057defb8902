//! `Config::close_timeout`: a flushing close whose peer never reads ends by force; a
//! slow but live reader is never cut off.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Config, MsgKind, Priority};

fn config(t: Duration) -> Config {
    Config {
        close_timeout: Some(t),
        ..Config::default()
    }
}

#[test]
fn default_close_timeout_is_documented_value() {
    assert_eq!(
        Config::default().close_timeout,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn close_to_a_peer_that_never_reads_finishes_by_force() {
    let mut h = Harness::with_config(config(Duration::from_millis(300)));
    let (lid, addr) = h.listen("127.0.0.1");
    let p = peer(addr); // never reads
    let id = h.accept(lid);
    h.engine
        .ops()
        .send(id, &vec![7u8; 16 << 20], Priority::High)
        .unwrap();
    let t0 = Instant::now();
    h.engine.ops().close(id, false).unwrap();
    let m = h.wait_for("forced close", |m| m.id == id && m.kind != MsgKind::Warning);
    let took = t0.elapsed();
    assert_eq!(m.kind, MsgKind::Close);
    assert!(m.text().contains("close timeout"), "{}", m.text());
    assert!(took >= Duration::from_millis(250), "too early: {took:?}");
    assert!(took < Duration::from_secs(5), "too late: {took:?}");
    assert!(h.engine.ops().info(id).is_none());
    assert_eq!(h.engine.socket_count(), 1);
    h.backlog.clear(); // warnings from before the close
    h.step(Duration::from_millis(20));
    assert!(h.backlog.iter().all(|m| m.id != id), "{:?}", h.backlog);
    drop(p);
}

#[test]
fn close_through_a_handle_times_out_too() {
    let mut h = Harness::with_config(config(Duration::from_millis(200)));
    let (lid, addr) = h.listen("127.0.0.1");
    let _p = peer(addr);
    let id = h.accept(lid);
    let handle = h.engine.handle();
    handle
        .ops()
        .send(id, &vec![1u8; 16 << 20], Priority::High)
        .unwrap();
    handle.ops().close(id, false).unwrap();
    let m = h.wait_for("forced close", |m| m.id == id && m.kind != MsgKind::Warning);
    assert_eq!(m.kind, MsgKind::Close);
    assert!(h.engine.ops().info(id).is_none());
}

#[test]
fn slow_live_reader_gets_everything() {
    let mut h = Harness::with_config(config(Duration::from_millis(500)));
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let total = 6 << 20;
    let data = Rng(77).bytes(total);
    h.engine.ops().send(id, &data, Priority::High).unwrap();
    h.engine.ops().close(id, false).unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = p.read(&mut buf).unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
            thread::sleep(Duration::from_millis(40));
        }
    });
    let t0 = Instant::now();
    let m = h.wait_for("close", |m| m.id == id && m.kind != MsgKind::Warning);
    assert_eq!(m.kind, MsgKind::Close);
    assert!(m.data.is_empty(), "cut off: {}", m.text());
    let got = reader.join().unwrap();
    assert!(got == data, "{} of {total} bytes", got.len());
    assert!(
        t0.elapsed() > Duration::from_millis(500),
        "the test must outlast the timeout to mean anything"
    );
}

#[test]
fn no_timeout_waits_for_the_peer() {
    let mut h = Harness::with_config(Config {
        close_timeout: None,
        ..Config::default()
    });
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    h.engine
        .ops()
        .send(id, &vec![2u8; 8 << 20], Priority::High)
        .unwrap();
    h.engine.ops().close(id, false).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(400) {
        h.step(Duration::from_millis(50));
    }
    assert!(
        h.engine.ops().info(id).is_some(),
        "closed without a timeout"
    );
    let reader = thread::spawn(move || read_to_eof(&mut p).len());
    let m = h.wait_for("close", |m| m.id == id && m.kind != MsgKind::Warning);
    assert_eq!(m.kind, MsgKind::Close);
    assert_eq!(reader.join().unwrap(), 8 << 20);
}
