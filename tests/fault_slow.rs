//! Fault suite 4: slow and dead readers. A peer that never reads while the engine
//! writes 100 MB: warnings fire; with a limit the queue stays at the limit; a flushing
//! close finishes through `close_timeout`, a forced one at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Config, Error, MsgKind, Priority};

const TOTAL: usize = 100 * 1000 * 1000;
const CHUNK: usize = 64 * 1024;

/// The two tests measure process RSS: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn harness() -> Harness {
    Harness::with_config(Config {
        close_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    })
}

#[test]
fn dead_reader_without_limit_warns_and_close_times_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = harness();
    let (lid, addr) = h.listen("127.0.0.1");
    let _p = peer(addr); // never reads
    let sid = h.accept(lid);
    let rss0 = rss_kib();
    let chunk = vec![0xabu8; CHUNK];
    let mut sent = 0;
    let mut peak = 0;
    while sent < TOTAL {
        h.engine.ops().send(sid, &chunk, Priority::High).unwrap();
        sent += CHUNK;
        if sent % (64 * CHUNK) == 0 {
            h.step(Duration::ZERO);
            peak = peak.max(h.engine.ops().info(sid).unwrap().queued);
        }
    }
    h.step(Duration::from_millis(10));
    let info = h.engine.ops().info(sid).unwrap();
    peak = peak.max(info.queued);
    let rss1 = rss_kib();
    let warnings: Vec<u64> = h
        .backlog
        .iter()
        .filter(|m| m.kind == MsgKind::Warning && m.id == sid)
        .map(|m| m.ud)
        .collect();
    assert!(!warnings.is_empty(), "no Warning for a 100 MB queue");
    assert!(warnings[0] >= 1024, "first warning at 1 MiB: {warnings:?}");
    // Flushing close of a queue that can never drain: cut off by close_timeout.
    let t0 = Instant::now();
    h.engine.ops().close(sid, false).unwrap();
    let m = h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "close took {took:?}");
    assert!(h.engine.ops().info(sid).is_none());
    println!(
        "fault_slow (no limit): queued {sent} bytes to a dead reader, wrote {} to the \
         kernel, peak queued {} KiB, warnings at {warnings:?} KiB, RSS {rss0} -> {rss1} KiB; \
         flushing close finished by close_timeout (300 ms) after {} ms: {:?}; RSS after {} KiB",
        info.written,
        peak / 1024,
        took.as_millis(),
        m.text(),
        rss_kib()
    );
    h.engine.ops().close(lid, true).unwrap();
}

#[test]
fn dead_reader_with_limit_is_dropped_at_the_limit() {
    const LIMIT: usize = 4 << 20;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = harness();
    let (lid, addr) = h.listen("127.0.0.1");
    let _p = peer(addr); // never reads
    let sid = h.accept(lid);
    h.engine.ops().set_limit(sid, LIMIT).unwrap();
    let rss0 = rss_kib();
    let chunk = vec![0xcdu8; CHUNK];
    let (mut attempted, mut refused, mut peak) = (0usize, 0usize, 0usize);
    while attempted < TOTAL {
        match h.engine.ops().send(sid, &chunk, Priority::High) {
            Ok(()) => {}
            Err(Error::LimitExceeded { queued, limit }) => {
                assert_eq!(limit, LIMIT);
                assert!(queued <= LIMIT);
                refused += 1;
                break; // the engine dropped the socket
            }
            Err(e) => panic!("send: {e}"),
        }
        attempted += CHUNK;
        peak = peak.max(h.engine.ops().info(sid).unwrap().queued);
        if attempted % (64 * CHUNK) == 0 {
            h.step(Duration::ZERO);
        }
    }
    let rss1 = rss_kib();
    assert!(peak <= LIMIT, "peak {peak} over the limit");
    assert!(
        peak > LIMIT - CHUNK,
        "queue should fill up to the limit: {peak}"
    );
    assert!(refused > 0);
    assert!(
        rss1 < rss0 + 3 * (LIMIT as u64 / 1024) + 8 * 1024,
        "RSS grew from {rss0} to {rss1} KiB with a {LIMIT} byte limit"
    );
    // The refused send dropped the socket at once: its owner gets the error.
    assert!(h.engine.ops().info(sid).is_none());
    let m = h.wait_for("error", |m| m.kind == MsgKind::Error && m.id == sid);
    assert!(
        m.text().contains("write queue limit exceeded"),
        "{}",
        m.text()
    );
    println!(
        "fault_slow (limit 4 MiB): attempted {attempted} bytes in {CHUNK}-byte sends, {refused} \
         refused with LimitExceeded, peak queued {} KiB, RSS {rss0} -> {rss1} KiB; socket \
         dropped at once",
        peak / 1024
    );
    h.engine.ops().close(lid, true).unwrap();
}

/// Regression: `add_timer` with a duration past what `Instant` holds used to panic
/// ("overflow when adding duration to instant"), reachable from Lua's `timeout`.
#[test]
fn huge_timer_and_poll_timeouts_saturate() {
    let mut h = harness();
    let far = h.engine.add_timer(Duration::MAX);
    let near = h.engine.add_timer(Duration::from_millis(5));
    let mut batch = skysocket::engine::Batch::new();
    let t0 = Instant::now();
    // A huge poll timeout returns when the near timer fires.
    while h.engine.timer_count() > 1 {
        h.engine.poll(&mut batch, Some(Duration::MAX)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    assert!(h.engine.cancel_timer(far));
    assert!(!h.engine.cancel_timer(near));
    println!(
        "fault_slow: add_timer(Duration::MAX) accepted, poll(Duration::MAX) returned after \
         {} ms",
        t0.elapsed().as_millis()
    );
}
