//! Per-socket stats and `info` / `info_all`.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{MsgKind, Priority};
use skysocket::sys::net::Addr;

#[test]
fn stats_count_bytes_and_times() {
    let mut h = Harness::new();
    let started = Instant::now();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let fresh = h.engine.ops().info(id).unwrap();
    assert_eq!((fresh.read, fresh.written, fresh.queued), (0, 0, 0));
    assert_eq!((fresh.rtime, fresh.wtime), (0, 0));
    thread::sleep(Duration::from_millis(250));
    // The poll thread stamps sends with the clock of its last poll (as Skynet does).
    h.step(Duration::ZERO);
    h.engine
        .ops()
        .send(id, &[1u8; 1000], Priority::High)
        .unwrap();
    assert_eq!(read_exact_n(&mut p, 1000).len(), 1000);
    write_all(&mut p, &[2u8; 500]);
    let mut got = 0;
    while got < 500 {
        got += h
            .wait_for("data", |m| m.kind == MsgKind::Data && m.id == id)
            .data
            .len();
    }
    let elapsed_cs = started.elapsed().as_millis() as u64 / 10;
    let i = h.engine.ops().info(id).unwrap();
    assert_eq!(i.read, 500);
    assert_eq!(i.written, 1000);
    assert_eq!(i.queued, 0);
    assert!(
        i.rtime >= 25 && i.rtime <= elapsed_cs + 1,
        "rtime {}",
        i.rtime
    );
    assert!(i.wtime >= 24 && i.wtime <= i.rtime, "wtime {}", i.wtime);
    assert_eq!(i.state, "connected");
    assert_eq!(i.kind, "tcp");
    assert_eq!(i.owner, 7);
    assert_eq!(i.peer, Some(p.local_addr().unwrap().to_string()));
    assert_eq!(i.local, Some(addr.to_string()));
}

#[test]
fn queued_bytes_follow_a_slow_reader() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let total = 8 * 1024 * 1024;
    h.engine
        .ops()
        .send(id, &vec![3u8; total], Priority::High)
        .unwrap();
    let i = h.engine.ops().info(id).unwrap();
    assert!(i.queued > 0);
    assert_eq!(i.queued as u64 + i.written, total as u64);
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        while n < total {
            n += p.read(&mut buf).unwrap();
        }
    });
    h.run_until(
        "drain",
        |_, _| {},
        |e| e.ops().info(id).is_some_and(|i| i.queued == 0),
    );
    assert_eq!(h.engine.ops().info(id).unwrap().written, total as u64);
    reader.join().unwrap();
}

#[test]
fn state_names_and_info_all() {
    let mut h = Harness::new();
    let any = Addr::Inet("127.0.0.1:0".parse().unwrap());
    let (plisten, local) = h.engine.ops().listen(&any, opts(), 1).unwrap();
    let Some(Addr::Inet(laddr)) = local else {
        panic!()
    };
    assert_eq!(h.engine.ops().info(plisten).unwrap().state, "plisten");
    h.engine.ops().start(plisten, 1).unwrap();
    let li = h.engine.ops().info(plisten).unwrap();
    assert_eq!(li.state, "listen");
    assert_eq!(li.peer, None);
    assert_eq!(li.local, Some(laddr.to_string()));

    let cid = h.engine.ops().connect(&Addr::Inet(laddr), 2).unwrap();
    let st = h.engine.ops().info(cid).unwrap().state;
    assert!(st == "connecting" || st == "connected", "{st}");
    let acc = h.wait_for("accept", |m| m.kind == MsgKind::Accept);
    assert_eq!(h.engine.ops().info(acc.ud).unwrap().state, "paccept");
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    assert_eq!(h.engine.ops().info(cid).unwrap().state, "connected");
    h.engine.ops().start(acc.ud, 3).unwrap();
    h.engine.ops().pause(acc.ud).unwrap();
    assert!(h.engine.ops().info(acc.ud).unwrap().paused);
    h.engine.ops().shutdown_write(cid).unwrap();
    assert_eq!(h.engine.ops().info(cid).unwrap().state, "halfclose_write");
    let udp = h.engine.ops().udp(Some(&any), false, 4).unwrap();
    assert_eq!(h.engine.ops().info(udp).unwrap().state, "bind");

    let all = h.engine.ops().info_all();
    assert_eq!(all.len(), 4);
    let find = |id| all.iter().find(|i| i.id == id).expect("in info_all");
    assert_eq!(find(plisten).kind, "tcp");
    assert_eq!(find(udp).kind, "udp");
    assert_eq!(find(udp).owner, 4);
    assert_eq!(find(acc.ud).owner, 3);
    assert_eq!(
        find(acc.ud).peer,
        find(cid).local,
        "accepted peer is the connector's local address"
    );
    assert_eq!(find(cid).peer, Some(laddr.to_string()));
    assert!(h.engine.handle().ops().info(cid).is_some());
}
