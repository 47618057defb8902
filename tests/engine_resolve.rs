//! Host names: resolved on worker threads, never on the poll thread.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::resolver::system_resolve;
use skysocket::engine::{Config, MsgKind, Priority};
use skysocket::sys::net::Addr;

/// A resolver that is slow for `slow.test`, fails for `nonexistent.invalid` quickly
/// (the real resolver may take a while for that in a sandbox), maps `loopback.test`
/// to ::1 then 127.0.0.1, and panics on numeric input (which must never get here).
fn test_resolver(host: &str) -> io::Result<Vec<IpAddr>> {
    assert!(
        host.parse::<IpAddr>().is_err() && !host.starts_with('['),
        "numeric host {host} reached the resolver"
    );
    match host {
        "slow.test" => {
            thread::sleep(Duration::from_millis(1500));
            Ok(vec!["127.0.0.1".parse().unwrap()])
        }
        "loopback.test" => Ok(vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
        "fail.test" => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "Name or service not known",
        )),
        other => system_resolve(other),
    }
}

fn hooked() -> Harness {
    Harness::with_config(Config {
        resolver: test_resolver,
        ..Config::default()
    })
}

#[test]
fn connect_host_localhost_tries_addresses_in_turn() {
    // Listen on IPv4 only: if localhost gives ::1 first, that connect is refused
    // and the engine must go on to 127.0.0.1.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut h = Harness::new();
    let id = h.engine.ops().connect_host("localhost", port, 4).unwrap();
    h.engine.ops().send(id, b"early", Priority::High).unwrap();
    let m = h.wait_for("open", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Open, "{}", m.text());
    assert_eq!(m.owner, 4);
    assert_eq!(m.text(), format!("127.0.0.1:{port}"));
    h.run_until(
        "flushed",
        |_, _| {},
        |e| e.ops().info(id).is_some_and(|i| i.queued == 0),
    );
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    use std::io::Read;
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"early", "data sent while resolving is delivered");
}

#[test]
fn connect_host_falls_back_from_refused_v6_to_v4() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut h = hooked();
    let id = h
        .engine
        .ops()
        .connect_host("loopback.test", port, 1)
        .unwrap();
    assert_eq!(h.engine.ops().info(id).unwrap().state, "reserve");
    let m = h.wait_for("open", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Open, "{}", m.text());
    assert_eq!(m.text(), format!("127.0.0.1:{port}"));
}

#[test]
fn numeric_hosts_never_touch_the_resolver() {
    let mut h = hooked(); // its resolver panics (in a worker) on numeric input
    let (lid, addr) = h.listen("127.0.0.1");
    let id = h
        .engine
        .ops()
        .connect_host("127.0.0.1", addr.port(), 1)
        .unwrap();
    assert_ne!(h.engine.ops().info(id).unwrap().state, "reserve");
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == id);
    h.accept(lid);
    let (l6, a6) = h.listen("::1");
    let id6 = h.engine.ops().connect_host("[::1]", a6.port(), 1).unwrap();
    h.wait_for("open v6", |m| m.kind == MsgKind::Open && m.id == id6);
    h.accept(l6);
    let (lid2, local) = h
        .engine
        .ops()
        .listen_host("127.0.0.1", 0, opts(), 1)
        .expect("numeric listen_host");
    assert!(matches!(local, Some(Addr::Inet(a)) if a.ip().is_loopback()));
    let _ = lid2;
    let req = h.engine.ops().resolve_async("::1", 9);
    let m = h.wait_for("resolved", |m| m.kind == MsgKind::Resolved && m.ud == req);
    assert_eq!(m.text(), "::1");
    assert!(m.extra.is_empty());
    assert_eq!(
        h.engine.ops().resolve("10.1.2.3").unwrap(),
        vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn unresolvable_name_reports_error_in_bounded_time() {
    let mut h = Harness::new();
    let t0 = Instant::now();
    let id = h
        .engine
        .ops()
        .connect_host("nonexistent.invalid", 80, 2)
        .unwrap();
    let m = h.wait_for("error", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Error);
    assert_eq!(m.owner, 2);
    assert!(m.text().contains("nonexistent.invalid"), "{}", m.text());
    assert!(t0.elapsed() < DEADLINE);
    assert!(h.engine.ops().info(id).is_none());
    assert!(h.engine.ops().resolve("nonexistent.invalid").is_err());
    let req = h.engine.ops().resolve_async("nonexistent.invalid", 3);
    let m = h.wait_for("resolved", |m| m.kind == MsgKind::Resolved && m.ud == req);
    assert_eq!(m.extra, b"error");
    assert_eq!(m.owner, 3);
    assert_eq!(m.id, 0);
    assert!(m.text().contains("nonexistent.invalid"), "{}", m.text());
}

#[test]
fn hooked_failure_text_reaches_the_owner() {
    let mut h = hooked();
    let id = h.engine.ops().connect_host("fail.test", 80, 2).unwrap();
    let m = h.wait_for("error", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Error);
    assert!(
        m.text().contains("Name or service not known"),
        "{}",
        m.text()
    );
    assert!(h.engine.is_idle(), "nothing left to wait for");
}

#[test]
fn resolve_async_localhost() {
    let mut h = Harness::new();
    let req = h.engine.ops().resolve_async("localhost", 5);
    assert!(
        !h.engine.is_idle(),
        "a lookup in flight keeps the engine busy"
    );
    let m = h.wait_for("resolved", |m| m.kind == MsgKind::Resolved && m.ud == req);
    assert!(m.extra.is_empty(), "failed: {}", m.text());
    let ips: Vec<IpAddr> = m.text().split('\n').map(|l| l.parse().unwrap()).collect();
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| ip.is_loopback()),
        "{ips:?}"
    );
    let blocking = h.engine.ops().resolve("localhost").unwrap();
    assert!(blocking.iter().all(|ip| ip.is_loopback()));
    let (lid, local) = h
        .engine
        .ops()
        .listen_host("localhost", 0, opts(), 1)
        .unwrap();
    assert!(matches!(local, Some(Addr::Inet(a)) if a.ip().is_loopback()));
    h.engine.ops().close(lid, true).unwrap();
    assert!(h
        .engine
        .ops()
        .listen_host("nonexistent.invalid", 0, opts(), 1)
        .is_err());
}

#[test]
fn slow_lookup_does_not_delay_other_sockets() {
    let mut h = hooked();
    let (lid, addr) = h.listen("127.0.0.1");
    let t0 = Instant::now();
    let slow = h
        .engine
        .ops()
        .connect_host("slow.test", addr.port(), 1)
        .unwrap();
    let req = h.engine.handle().ops().resolve_async("slow.test", 1);
    // While the lookups sleep, an echo on another socket goes through promptly.
    let mut p = peer(addr);
    let sid = h.accept(lid);
    write_all(&mut p, b"ping");
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    h.engine.ops().send(sid, &d.data, Priority::High).unwrap();
    assert_eq!(read_exact_n(&mut p, 4), b"ping");
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "echo waited for the lookup: {:?}",
        t0.elapsed()
    );
    assert_eq!(h.engine.ops().info(slow).unwrap().state, "reserve");
    let m = h.wait_for("slow open", |m| m.id == slow);
    assert_eq!(m.kind, MsgKind::Open);
    assert!(t0.elapsed() >= Duration::from_millis(1400));
    let r = h.wait_for("slow resolved", |m| {
        m.kind == MsgKind::Resolved && m.ud == req
    });
    assert_eq!(r.text(), "127.0.0.1");
}

#[test]
fn close_while_resolving_is_clean() {
    let mut h = hooked();
    let (_lid, addr) = h.listen("127.0.0.1");
    let id = h
        .engine
        .ops()
        .connect_host("slow.test", addr.port(), 1)
        .unwrap();
    h.engine.ops().close(id, false).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    assert!(h.engine.ops().info(id).is_none());
    // The answer arrives later and is dropped: no Open, no accept.
    let end = Instant::now() + Duration::from_millis(1800);
    while Instant::now() < end {
        h.step(Duration::from_millis(50));
    }
    assert!(
        h.backlog
            .iter()
            .all(|m| m.id != id && m.kind != MsgKind::Accept),
        "{:?}",
        h.backlog
    );
    assert!(h.engine.is_idle() || h.engine.socket_count() == 1);
}

#[test]
fn handle_connect_host_from_another_thread() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let handle = h.engine.handle();
    let port = addr.port();
    let id = thread::spawn(move || handle.ops().connect_host("localhost", port, 6).unwrap())
        .join()
        .unwrap();
    // localhost may try ::1 first (refused: nothing listens there), then 127.0.0.1.
    let m = h.wait_for("open", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Open, "{}", m.text());
    let s = h.accept(lid);
    assert!(h.engine.ops().info(s).is_some());
    let _: SocketAddr = m.text().parse().unwrap();
}
