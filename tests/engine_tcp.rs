//! Engine tests over loopback TCP: no Lua involved.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use common::*;
use skysocket::engine::{Config, Error, MsgKind, Priority};
use skysocket::sys::net::Addr;

#[test]
fn listen_accept_start_and_echo_ipv4() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    assert_ne!(addr.port(), 0, "port 0 must report the bound port");
    let mut p = peer(addr);
    let m = h.wait_for("accept", |m| m.kind == MsgKind::Accept);
    assert_eq!(m.id, lid);
    assert_eq!(
        m.owner, 7,
        "accepted sockets carry the listener owner's token"
    );
    assert!(
        m.text().starts_with("127.0.0.1:"),
        "peer address: {}",
        m.text()
    );
    let id = m.ud;
    // Silent until start: data sent now is not reported.
    write_all(&mut p, b"hello");
    h.step(Duration::from_millis(50));
    assert!(
        h.backlog.iter().all(|m| m.kind != MsgKind::Data),
        "data before start"
    );
    h.engine.ops().start(id, 9).unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == id);
    assert_eq!(d.data, b"hello");
    assert_eq!(d.owner, 9, "start transfers ownership");
    h.engine.ops().send(id, b"world", Priority::High).unwrap();
    assert_eq!(read_exact_n(&mut p, 5), b"world");
}

#[test]
fn listen_and_connect_ipv6() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("::1");
    let cid = h
        .engine
        .ops()
        .connect(&Addr::Inet(addr), 3)
        .expect("connect ::1");
    let open = h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    assert!(open.text().contains("::1"), "{}", open.text());
    let sid = h.accept(lid);
    h.engine.ops().send(cid, b"ping6", Priority::High).unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"ping6");
}

#[test]
fn connect_success_reports_open() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut h = Harness::new();
    let id = h.engine.ops().connect(&Addr::Inet(addr), 11).unwrap();
    let m = h.wait_for("open", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Open);
    assert_eq!(m.owner, 11);
    assert_eq!(m.text(), addr.to_string());
    let (mut s, _) = l.accept().unwrap();
    h.engine.ops().send(id, b"abc", Priority::High).unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");
}

#[test]
fn connect_refused_reports_error() {
    let mut h = Harness::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let id = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
    let m = h.wait_for("error", |m| m.id == id);
    assert_eq!(m.kind, MsgKind::Error);
    assert!(
        m.text().to_lowercase().contains("refused"),
        "error text: {}",
        m.text()
    );
    assert!(
        h.engine.ops().send(id, b"x", Priority::High).is_err(),
        "failed socket is gone"
    );
    assert_eq!(h.engine.socket_count(), 0);
}

#[test]
fn echo_10mb_random_chunks_byte_exact() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut rng = Rng(0x5eed_1234);
    let total = 10 * 1024 * 1024;
    let payload = rng.bytes(total);
    let expected = payload.clone();
    let writer_stream = peer(addr);
    let mut reader_stream = writer_stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut s = writer_stream;
        let mut rng = Rng(99);
        let mut off = 0;
        while off < payload.len() {
            let n = (1 + rng.below(70_000) as usize).min(payload.len() - off);
            s.write_all(&payload[off..off + n]).unwrap();
            off += n;
        }
    });
    let reader = thread::spawn(move || read_exact_n(&mut reader_stream, total));
    let id = h.accept(lid);
    let echoed = std::cell::Cell::new(0usize);
    h.run_until(
        "echo 10 MB",
        |e, m| {
            if m.kind == MsgKind::Data && m.id == id {
                echoed.set(echoed.get() + m.data.len());
                e.ops().send(id, &m.data, Priority::High).unwrap();
            }
        },
        |_| echoed.get() >= total,
    );
    // Let the queue drain.
    h.run_until(
        "drain",
        |_, _| {},
        |e| e.ops().info(id).map_or(true, |i| i.queued == 0),
    );
    writer.join().unwrap();
    let got = reader.join().unwrap();
    assert!(got == expected, "echoed bytes differ");
}

#[test]
fn partial_writes_queue_for_a_slow_reader_and_keep_order() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let p = peer(addr);
    let id = h.accept(lid);
    let mut rng = Rng(7);
    let chunks: Vec<Vec<u8>> = (0..64).map(|_| rng.bytes(128 * 1024)).collect();
    let expected: Vec<u8> = chunks.concat();
    let mut max_queued = 0;
    for c in &chunks {
        h.engine.ops().send(id, c, Priority::High).unwrap();
        max_queued = max_queued.max(h.engine.ops().info(id).unwrap().queued);
    }
    assert!(
        max_queued > 0,
        "8 MiB must not fit the socket buffer: nothing was queued"
    );
    let n = expected.len();
    let reader = thread::spawn(move || {
        let mut p = p;
        let mut got = Vec::with_capacity(n);
        let mut buf = vec![0u8; 4096];
        while got.len() < n {
            let k = p.read(&mut buf).unwrap();
            assert!(k > 0, "early EOF");
            got.extend_from_slice(&buf[..k]);
            if got.len() % (256 * 1024) < 4096 {
                thread::sleep(Duration::from_millis(2)); // slower than the writer
            }
        }
        got
    });
    h.run_until(
        "drain",
        |_, _| {},
        |e| e.ops().info(id).is_some_and(|i| i.queued == 0),
    );
    let got = reader.join().unwrap();
    assert!(got == expected, "bytes reordered or lost");
    assert_eq!(h.engine.ops().info(id).unwrap().written, n as u64);
}

#[test]
fn low_priority_goes_after_high_and_never_interleaves() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    // Fill the socket so later sends queue.
    let filler = vec![b'F'; 4 * 1024 * 1024];
    h.engine.ops().send(id, &filler, Priority::High).unwrap();
    let low1 = vec![b'a'; 300_000];
    let low2 = vec![b'b'; 300_000];
    let high1 = vec![b'H'; 1000];
    h.engine.ops().send(id, &low1, Priority::Low).unwrap();
    h.engine.ops().send(id, &low2, Priority::Low).unwrap();
    h.engine.ops().send(id, &high1, Priority::High).unwrap();
    let total = filler.len() + low1.len() + low2.len() + high1.len();
    let reader = thread::spawn(move || read_exact_n(&mut p, total));
    h.run_until(
        "drain",
        |_, _| {},
        |e| e.ops().info(id).is_some_and(|i| i.queued == 0),
    );
    let got = reader.join().unwrap();
    // After the filler (partly sent before the low ones were queued), the high buffer
    // comes before both low buffers, which stay in order and whole.
    let rest = &got[filler.len()..];
    let expect: Vec<u8> = [high1.clone(), low1, low2].concat();
    assert!(rest == &expect[..], "priority order wrong");
}

#[test]
fn close_flushes_everything_before_eof() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let data = Rng(3).bytes(6 * 1024 * 1024);
    h.engine.ops().send(id, &data, Priority::High).unwrap();
    assert!(h.engine.ops().info(id).unwrap().queued > 0);
    h.engine.ops().close(id, false).unwrap();
    assert!(
        h.engine.ops().send(id, b"late", Priority::High).is_err(),
        "send after close must fail"
    );
    let reader = thread::spawn(move || read_to_eof(&mut p));
    let m = h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    assert_eq!(m.owner, 7);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    assert_eq!(h.engine.socket_count(), 1, "only the listener is left");
}

#[test]
fn forced_close_drops_the_queue() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let data = vec![1u8; 16 * 1024 * 1024];
    h.engine.ops().send(id, &data, Priority::High).unwrap();
    assert!(h.engine.ops().info(id).unwrap().queued > 0);
    h.engine.ops().close(id, true).unwrap();
    assert!(
        h.engine.ops().info(id).is_none(),
        "forced close releases at once"
    );
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    let got = read_to_eof(&mut p);
    assert!(got.len() < data.len(), "forced close must not flush");
}

#[test]
fn peer_eof_reports_close_once() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let p = peer(addr);
    let id = h.accept(lid);
    drop(p);
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    h.step(Duration::from_millis(50));
    assert!(
        h.backlog.iter().all(|m| m.id != id),
        "more messages after close: {:?}",
        h.backlog
    );
    assert!(h.engine.ops().info(id).is_none());
    assert!(matches!(
        h.engine.ops().close(id, false),
        Err(Error::UnknownId)
    ));
}

#[test]
fn stale_id_is_rejected_after_slot_reuse() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let _p1 = peer(addr);
    let old = h.accept(lid);
    h.engine.ops().close(old, true).unwrap();
    let mut p2 = peer(addr);
    let new = h.accept(lid);
    assert_ne!(old, new);
    let mask = (1u64 << 16) - 1;
    assert_eq!(old & mask, new & mask, "the slot should have been reused");
    assert!(matches!(
        h.engine.ops().send(old, b"x", Priority::High),
        Err(Error::UnknownId)
    ));
    assert!(matches!(
        h.engine.ops().close(old, true),
        Err(Error::UnknownId)
    ));
    assert!(h.engine.ops().pause(old).is_err());
    assert!(h.engine.ops().info(old).is_none());
    h.engine.ops().send(new, b"ok", Priority::High).unwrap();
    assert_eq!(read_exact_n(&mut p2, 2), b"ok");
}

#[test]
fn adaptive_read_size_starts_small_and_grows() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    write_all(&mut p, &vec![5u8; 1 << 20]);
    let sizes = std::cell::RefCell::new(Vec::new());
    let total = std::cell::Cell::new(0usize);
    h.run_until(
        "read 1 MiB",
        |_, m| {
            if m.kind == MsgKind::Data && m.id == id {
                total.set(total.get() + m.data.len());
                sizes.borrow_mut().push(m.data.len());
            }
        },
        |_| total.get() >= 1 << 20,
    );
    let sizes = sizes.into_inner();
    assert_eq!(sizes[0], 64, "first read is 64 bytes");
    let max = *sizes.iter().max().unwrap();
    assert!(
        max > 64 && max <= Config::default().max_read,
        "sizes {sizes:?}"
    );
    assert!(
        sizes.windows(2).take(5).all(|w| w[1] <= w[0] * 2),
        "grows by doubling"
    );
}

#[test]
fn messages_are_bounded_per_poll() {
    let config = Config {
        batch_bytes: 1024,
        ..Config::default()
    };
    let mut h = Harness::with_config(config);
    let (lid, addr) = h.listen("127.0.0.1");
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..8 {
        peers.push(peer(addr));
        ids.push(h.accept(lid));
    }
    for p in &mut peers {
        write_all(p, &[1u8; 4000]);
    }
    thread::sleep(Duration::from_millis(50));
    h.backlog.clear();
    h.step(Duration::from_millis(50));
    let first: usize = h.backlog.iter().map(|m| m.data.len()).sum();
    assert!(first < 8 * 64 + 1024, "one poll took {first} bytes");
}

#[test]
fn pause_stops_reading_and_resume_restarts() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    h.engine.ops().pause(id).unwrap();
    write_all(&mut p, b"held");
    h.step(Duration::from_millis(100));
    assert!(
        h.backlog.iter().all(|m| m.kind != MsgKind::Data),
        "read while paused"
    );
    h.engine.ops().resume(id).unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data);
    assert_eq!(d.data, b"held");
}

#[test]
fn warning_at_one_mib_and_zero_when_drained() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut p = peer(addr);
    let id = h.accept(lid);
    let big = vec![0u8; 1024 * 1024];
    for _ in 0..16 {
        h.engine.ops().send(id, &big, Priority::High).unwrap();
    }
    let w = h.wait_for("warning", |m| m.kind == MsgKind::Warning && m.id == id);
    assert!(w.ud >= 1024, "warning size {} KiB", w.ud);
    let w2 = h.wait_for("second warning", |m| {
        m.kind == MsgKind::Warning && m.id == id
    });
    assert!(
        w2.ud >= 2 * w.ud.min(1024),
        "doubling: {} then {}",
        w.ud,
        w2.ud
    );
    let reader = thread::spawn(move || read_exact_n(&mut p, 16 * 1024 * 1024));
    h.wait_for("warning 0", |m| {
        m.kind == MsgKind::Warning && m.id == id && m.ud == 0
    });
    assert_eq!(h.engine.ops().info(id).unwrap().queued, 0);
    reader.join().unwrap();
}

#[test]
fn write_budget_drops_the_sockets_with_a_backlog_and_counts_exactly() {
    const BUDGET: usize = 2 << 20;
    let mut h = Harness::with_config(Config {
        write_budget: BUDGET,
        ..Config::default()
    });
    let (lid, addr) = h.listen("127.0.0.1");
    let _p1 = peer(addr); // never reads
    let a = h.accept(lid);
    let _p2 = peer(addr); // never reads
    let b = h.accept(lid);
    let chunk = vec![7u8; 64 * 1024];
    let mut refused = Vec::new();
    for _ in 0..1024 {
        for id in [a, b] {
            if refused.contains(&id) {
                continue;
            }
            match h.engine.ops().send(id, &chunk, Priority::High) {
                Ok(()) => {}
                Err(Error::BudgetExceeded { total, budget }) => {
                    assert_eq!(budget, BUDGET);
                    assert!(total + chunk.len() > BUDGET, "refused below the budget");
                    refused.push(id);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // Within the budget, plus at most one send per socket whose queue was empty.
        assert!(h.engine.queued_bytes() <= BUDGET + 2 * chunk.len());
        if refused.len() == 2 {
            break;
        }
    }
    assert_eq!(
        refused.len(),
        2,
        "64 MiB to two non-readers must pass a 2 MiB budget"
    );
    for id in [a, b] {
        assert!(h.engine.ops().info(id).is_none(), "dropped");
        let m = h.wait_for("error", |m| m.kind == MsgKind::Error && m.id == id);
        assert!(m.text().contains("write budget exceeded"), "{}", m.text());
    }
    // Dropped queues are uncounted: the accounting is exact.
    assert_eq!(h.engine.queued_bytes(), 0);
    // A reading peer's queue drains to zero as well.
    let mut p3 = peer(addr);
    let c = h.accept(lid);
    let big = vec![1u8; 8 << 20];
    h.engine.ops().send(c, &big, Priority::High).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < 8 << 20 {
            got += p3.read(&mut buf).unwrap();
        }
        got
    });
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while h.engine.queued_bytes() > 0 && std::time::Instant::now() < end {
        h.step(Duration::from_millis(10));
    }
    assert_eq!(
        h.engine.queued_bytes(),
        0,
        "queue drained, counter back to 0"
    );
    assert_eq!(reader.join().unwrap(), 8 << 20);
    h.engine.ops().close(c, false).unwrap();
    h.engine.ops().close(lid, true).unwrap();
}

#[test]
fn write_limit_rejects_sends_beyond_it() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let _p = peer(addr);
    let id = h.accept(lid);
    h.engine.ops().set_limit(id, 1 << 20).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    let mut rejected = false;
    for _ in 0..64 {
        match h.engine.ops().send(id, &chunk, Priority::High) {
            Ok(()) => {}
            Err(Error::LimitExceeded { limit, .. }) => {
                assert_eq!(limit, 1 << 20);
                rejected = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(rejected, "16 MiB to a non-reader must hit a 1 MiB limit");
    // The stream is broken: the engine dropped the socket and tells its owner.
    assert!(
        h.engine.ops().info(id).is_none(),
        "socket dropped at the limit"
    );
    let m = h.wait_for("error", |m| m.kind == MsgKind::Error && m.id == id);
    assert!(
        m.text().contains("write queue limit exceeded"),
        "{}",
        m.text()
    );
}

#[test]
fn timers_fire_in_order() {
    let mut h = Harness::new();
    let t3 = h.engine.add_timer(Duration::from_millis(30));
    let t1 = h.engine.add_timer(Duration::from_millis(10));
    let t2 = h.engine.add_timer(Duration::from_millis(20));
    let gone = h.engine.add_timer(Duration::from_millis(15));
    assert!(h.engine.cancel_timer(gone));
    let start = std::time::Instant::now();
    let mut fired = Vec::new();
    while fired.len() < 3 {
        h.step(Duration::from_secs(1));
        fired.extend(
            h.backlog
                .drain(..)
                .filter(|m| m.kind == MsgKind::Timer)
                .map(|m| m.ud),
        );
        assert!(start.elapsed() < DEADLINE);
    }
    assert_eq!(fired, vec![t1, t2, t3]);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

/// `Engine::send` (the Lua `send`'s entry: its common case runs before an `Ops` is
/// set up) behaves as `ops().send`: direct writes, partial writes and queueing in
/// order when mixed with `ops().send`, refusals, stale ids, empty sends.
#[test]
fn engine_send_is_ops_send() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let p = peer(addr);
    let id = h.accept(lid);
    h.engine.send(id, b"", Priority::High).unwrap();
    h.engine.send(id, b"hello", Priority::High).unwrap();
    let info = h.engine.ops().info(id).unwrap();
    assert_eq!((info.written, info.queued), (5, 0), "a direct write");
    let mut rng = Rng(11);
    let chunks: Vec<Vec<u8>> = (0..64).map(|_| rng.bytes(128 * 1024)).collect();
    let expected: Vec<u8> = [b"hello".to_vec(), chunks.concat()].concat();
    let mut max_queued = 0;
    for (i, c) in chunks.iter().enumerate() {
        if i % 2 == 0 {
            h.engine.send(id, c, Priority::High).unwrap();
        } else {
            h.engine.ops().send(id, c, Priority::High).unwrap();
        }
        max_queued = max_queued.max(h.engine.ops().info(id).unwrap().queued);
    }
    assert!(max_queued > 0, "8 MiB must not fit the socket buffer");
    let n = expected.len();
    let reader = thread::spawn(move || {
        let mut p = p;
        read_to_eof(&mut p)
    });
    h.engine.ops().close(id, false).unwrap();
    assert!(
        h.engine.send(id, b"late", Priority::High).is_err(),
        "send after close must fail"
    );
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == id);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), n);
    assert!(got == expected, "bytes reordered or lost");
    assert!(matches!(
        h.engine.send(id, b"x", Priority::High),
        Err(Error::UnknownId)
    ));
}
