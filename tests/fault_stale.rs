//! Fault suite 6: stale ids with real sockets. More than 1,000,000 id allocations on an
//! engine with `max_sockets = 4` (slots recycle at once); after each, every operation
//! on the previous ids of the same slots must fail with `UnknownId` and must not touch
//! the slot's new owner.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Config, Error, MsgKind, Priority};
use skysocket::sys::net::Addr;

#[test]
fn stale_ids_never_reach_the_new_owner() {
    let allocations: u64 = if soak() { 5_000_000 } else { 1_050_000 };
    let mut h = Harness::with_config(Config {
        max_sockets: 4,
        reserve_fd: false,
        ..Config::default()
    });
    let bind = Addr::Inet("127.0.0.1:0".parse().unwrap());
    let t0 = Instant::now();
    // A TCP pair holding one slot throughout, to check stale ops against a live stream.
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let sid = h.accept(lid);
    let mut old: Vec<u64> = Vec::new();
    let mut checks = 0u64;
    let mut tcp_cycles = 0u64;
    let expect_unknown = |what: &str, r: Result<(), Error>| match r {
        Err(Error::UnknownId) => {}
        other => panic!("{what} on a stale id: {other:?}"),
    };
    for i in 0..allocations {
        // Mostly UDP sockets (cheap); every 1000th a listener, so stream-only ops see a
        // TCP new owner too.
        let (id, tcp) = if i % 1000 == 0 {
            let (id, _) = h.engine.ops().listen(&bind, opts(), 1).unwrap();
            tcp_cycles += 1;
            (id, true)
        } else {
            (h.engine.ops().udp(Some(&bind), false, 1).unwrap(), false)
        };
        // The previous ids must all be dead now, whatever slot they had.
        for &o in old.iter().rev().take(3) {
            assert_ne!(o, id, "id reissued");
            let e = &mut h.engine;
            expect_unknown("send", e.ops().send(o, b"x", Priority::High));
            expect_unknown("pause", e.ops().pause(o));
            expect_unknown("resume", e.ops().resume(o));
            expect_unknown("start", e.ops().start(o, 2));
            expect_unknown("set_limit", e.ops().set_limit(o, 1));
            expect_unknown("sendto", e.ops().sendto(o, Some(&bind), b"x"));
            expect_unknown("close", e.ops().close(o, true));
            assert!(e.ops().info(o).is_none(), "info on a stale id");
            checks += 8;
        }
        // The new owner was not touched by any of that.
        let info = h.engine.ops().info(id).expect("new socket alive");
        assert!(!info.paused, "a stale pause reached the new owner");
        assert_eq!(info.owner, 1, "a stale start reached the new owner");
        assert_eq!(
            info.state,
            if tcp { "plisten" } else { "bind" },
            "new owner state"
        );
        h.engine.ops().close(id, true).unwrap();
        if old.len() == 8 {
            old.remove(0);
        }
        old.push(id);
        if i % 100_000 == 0 {
            h.step(Duration::ZERO);
            h.backlog.clear();
            // The live stream is untouched.
            h.engine.ops().send(sid, b"alive", Priority::High).unwrap();
            assert_eq!(read_exact_n(&mut p, 5), b"alive");
        }
    }
    let last = *old.last().unwrap();
    println!(
        "fault_stale: {allocations} id allocations ({tcp_cycles} TCP listeners, rest UDP) on \
         max_sockets=4 in {:.1} s, {checks} stale operations all refused (UnknownId), last id \
         {last:#x}, live stream untouched",
        t0.elapsed().as_secs_f64()
    );
    h.engine.ops().close(sid, true).unwrap();
    h.engine.ops().close(lid, true).unwrap();
    h.step(Duration::ZERO);
    assert!(h.backlog.iter().all(|m| m.kind != MsgKind::Error));
    assert_eq!(h.engine.socket_count(), 0);
}
