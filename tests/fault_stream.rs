//! Fault suite 1: no loss, no reorder. 100 connections through an engine echo server,
//! random chunk sizes and random pauses on both sides (engine pause/resume, peer
//! sleeps), checked byte for byte. Default 256 MiB echoed; `SKYSOCKET_SOAK=1`: 1 GiB.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{MsgKind, Priority};

const CONNS: usize = 100;

#[test]
fn no_loss_no_reorder_under_random_chunks_and_pauses() {
    let total: u64 = if soak() { 1 << 30 } else { 256 << 20 };
    let per_conn = total / CONNS as u64;
    let pattern = Arc::new(Pattern::new((1 << 20) + 4099, 0x5eed));
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let done = Arc::new(AtomicUsize::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let peer_sleeps = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();

    let mut threads = Vec::new();
    for c in 0..CONNS {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = s;
        let (p1, p2) = (pattern.clone(), pattern.clone());
        let sleeps = peer_sleeps.clone();
        threads.push(thread::spawn(move || {
            let mut rng = Rng(c as u64 * 31 + 1);
            let mut pos = 0u64;
            while pos < per_conn {
                let max = (1 + rng.below(65536)).min(per_conn - pos) as usize;
                let chunk = p1.slice(c, pos, max);
                w.write_all(chunk).expect("peer write");
                pos += chunk.len() as u64;
                if rng.below(10) == 0 {
                    sleeps.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_micros(rng.below(3000)));
                }
            }
        }));
        let (done, echoed, sleeps) = (done.clone(), echoed.clone(), peer_sleeps.clone());
        threads.push(thread::spawn(move || {
            let mut rng = Rng(c as u64 * 17 + 5);
            let mut buf = vec![0u8; 65536];
            let mut pos = 0u64;
            while pos < per_conn {
                let want = 1 + rng.below(65536) as usize;
                let n = r.read(&mut buf[..want]).expect("peer read");
                assert!(n > 0, "conn {c}: EOF at {pos} of {per_conn}");
                assert!(
                    p2.verify(c, pos, &buf[..n]),
                    "conn {c}: wrong bytes at offset {pos}"
                );
                pos += n as u64;
                echoed.fetch_add(n as u64, Ordering::Relaxed);
                if rng.below(10) == 0 {
                    sleeps.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_micros(rng.below(3000)));
                }
            }
            r.shutdown(Shutdown::Both).ok();
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // The engine side: echo, pausing sockets at random for a few milliseconds.
    let mut rng = Rng(99);
    let mut resumes: Vec<(Instant, u64)> = Vec::new();
    let mut conns = Vec::new();
    let (mut pauses, mut peak_queued, mut steps) = (0u64, 0usize, 0u64);
    let deadline = Instant::now() + Duration::from_secs(if soak() { 1200 } else { 120 });
    while done.load(Ordering::Relaxed) < CONNS {
        assert!(Instant::now() < deadline, "stream test timed out");
        h.step(Duration::from_millis(2));
        steps += 1;
        for m in std::mem::take(&mut h.backlog) {
            match m.kind {
                MsgKind::Accept if m.id == lid => {
                    h.engine.ops().start(m.ud, 7).unwrap();
                    conns.push(m.ud);
                }
                MsgKind::Data => {
                    h.engine.ops().send(m.id, &m.data, Priority::High).unwrap();
                    if rng.below(8) == 0 && h.engine.ops().pause(m.id).is_ok() {
                        pauses += 1;
                        let ms = 1 + rng.below(5);
                        resumes.push((Instant::now() + Duration::from_millis(ms), m.id));
                    }
                }
                MsgKind::Close | MsgKind::Error => {}
                _ => {}
            }
        }
        let now = Instant::now();
        resumes.retain(|&(at, id)| {
            if at <= now {
                let _ = h.engine.ops().resume(id);
                false
            } else {
                true
            }
        });
        if steps % 4 == 0 {
            let q: usize = h.engine.ops().info_all().iter().map(|i| i.queued).sum();
            peak_queued = peak_queued.max(q);
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let moved = echoed.load(Ordering::Relaxed);
    assert_eq!(moved, per_conn * CONNS as u64);
    println!(
        "fault_stream: {CONNS} conns, {} MiB echoed byte-exact (sent and echoed back), {secs:.1} s, \
         {pauses} engine pauses, {} peer sleeps, peak queued {} KiB, RSS {} KiB",
        moved >> 20,
        peer_sleeps.load(Ordering::Relaxed),
        peak_queued / 1024,
        rss_kib()
    );
    for id in conns {
        let _ = h.engine.ops().close(id, true);
    }
    h.engine.ops().close(lid, true).unwrap();
    h.step(Duration::from_millis(10));
    assert_eq!(h.engine.socket_count(), 0);
}
