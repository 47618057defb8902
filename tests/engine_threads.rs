//! `Handle` from many threads while the poll thread runs.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use skysocket::engine::{Engine, Error, Handle, Priority};
use skysocket::sys::net::Addr;

/// Run the engine's poll loop on its own thread until `stop` is set.
fn spawn_poller(mut engine: Engine, stop: Arc<AtomicBool>) -> thread::JoinHandle<Engine> {
    thread::spawn(move || {
        let mut batch = skysocket::engine::Batch::new();
        while !stop.load(Ordering::Relaxed) {
            engine
                .poll(&mut batch, Some(Duration::from_millis(5)))
                .expect("poll");
        }
        engine
    })
}

const FRAMES: u32 = 150;

fn frame(tid: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + len);
    f.push(tid);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.extend((0..len).map(|i| (i as u8) ^ tid ^ seq as u8));
    f
}

fn frame_len(seq: u32, rng: &mut Rng) -> usize {
    if seq % 40 == 7 {
        1 << 20 // far above Skynet's 256-byte command payload
    } else {
        1 + rng.below(3000) as usize
    }
}

/// Read frames until every thread in `tids` delivered all of them, checking order and
/// content per thread.
fn check_frames(mut s: TcpStream, tids: Vec<u8>) -> Result<usize, String> {
    let mut next = [0u32; 256];
    let mut done = 0;
    let mut bytes = 0;
    let mut head = [0u8; 9];
    while done < tids.len() {
        s.read_exact(&mut head)
            .map_err(|e| format!("header: {e}"))?;
        let tid = head[0];
        let seq = u32::from_le_bytes(head[1..5].try_into().unwrap());
        let len = u32::from_le_bytes(head[5..9].try_into().unwrap()) as usize;
        if !tids.contains(&tid) {
            return Err(format!("frame from unexpected thread {tid}"));
        }
        if seq != next[tid as usize] {
            return Err(format!(
                "thread {tid}: seq {seq}, expected {}",
                next[tid as usize]
            ));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
        if body
            .iter()
            .enumerate()
            .any(|(i, &b)| b != (i as u8) ^ tid ^ seq as u8)
        {
            return Err(format!("thread {tid} seq {seq}: payload corrupted"));
        }
        bytes += 9 + len;
        next[tid as usize] += 1;
        if next[tid as usize] == FRAMES {
            done += 1;
        }
    }
    Ok(bytes)
}

#[test]
fn eight_threads_send_concurrently_in_order() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    // Socket 0 is shared by threads 0..4; threads 4..8 each have their own.
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        peers.push(peer(addr));
        ids.push(h.accept(lid));
    }
    let handle = h.engine.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = spawn_poller(h.engine, stop.clone());

    let (tx, rx) = mpsc::channel();
    for (i, p) in peers.into_iter().enumerate() {
        let tids: Vec<u8> = if i == 0 {
            vec![0, 1, 2, 3]
        } else {
            vec![3 + i as u8]
        };
        let tx = tx.clone();
        thread::spawn(move || tx.send((i, check_frames(p, tids))).unwrap());
    }
    let mut senders = Vec::new();
    for tid in 0..8u8 {
        let handle = handle.clone();
        let id = if tid < 4 {
            ids[0]
        } else {
            ids[tid as usize - 3]
        };
        senders.push(thread::spawn(move || {
            let mut rng = Rng(1 + tid as u64);
            for seq in 0..FRAMES {
                let f = frame(tid, seq, frame_len(seq, &mut rng));
                handle.ops().send(id, &f, Priority::High).expect("send");
                if rng.below(8) == 0 {
                    thread::yield_now();
                }
            }
        }));
    }
    let end = Instant::now() + DEADLINE * 2;
    for _ in 0..5 {
        let left = end.saturating_duration_since(Instant::now());
        let (i, r) = rx
            .recv_timeout(left)
            .expect("a reader stalled: deadlock or lost bytes");
        if let Err(e) = r {
            panic!("peer {i}: {e}");
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut engine = poller.join().unwrap();
    for id in ids {
        // Readers close their end when done, so a socket may be gone already.
        assert!(engine.ops().info(id).map_or(true, |i| i.queued == 0));
    }
}

#[test]
fn operations_on_sockets_closed_underneath_fail_cleanly() {
    let h = Harness::new();
    let handle = h.engine.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = spawn_poller(h.engine, stop.clone());
    let live: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let retired: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicBool::new(true));
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = Addr::Inet(sink.local_addr().unwrap());

    let mut workers = Vec::new();
    for t in 0..8u64 {
        let (handle, live, retired, running, to) = (
            handle.clone(),
            live.clone(),
            retired.clone(),
            running.clone(),
            to.clone(),
        );
        workers.push(thread::spawn(move || {
            let mut rng = Rng(100 + t);
            let mut dead_checked = 0;
            while running.load(Ordering::Relaxed) {
                let pick_dead = rng.below(2) == 0;
                let id = {
                    let v = if pick_dead {
                        retired.lock()
                    } else {
                        live.lock()
                    };
                    if v.is_empty() {
                        continue;
                    }
                    v[rng.below(v.len() as u64) as usize]
                };
                let r: Result<(), Error> = match rng.below(6) {
                    0 => handle.ops().close(id, rng.below(2) == 0),
                    1 => handle.ops().pause(id),
                    2 => handle.ops().resume(id),
                    3 => handle.ops().sendto(id, Some(&to), b"x"),
                    4 => handle.ops().send(id, b"x", Priority::High),
                    _ => handle.ops().set_limit(id, 1000),
                };
                if pick_dead {
                    // Retired ids are closed for good: always UnknownId.
                    assert!(matches!(r, Err(Error::UnknownId)), "dead id {id:#x}: {r:?}");
                    dead_checked += 1;
                }
            }
            dead_checked
        }));
    }
    let t0 = Instant::now();
    let mut opened = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        let id = handle
            .ops()
            .udp(Some(&Addr::Inet("127.0.0.1:0".parse().unwrap())), false, 1)
            .unwrap();
        opened += 1;
        live.lock().push(id);
        if live.lock().len() > 16 {
            let victim = live.lock().remove(0);
            let _ = handle.ops().close(victim, true); // may already be closed by a worker
            let end = Instant::now() + DEADLINE;
            while handle.ops().info(victim).is_some() {
                assert!(Instant::now() < end, "close never applied");
                thread::sleep(Duration::from_micros(200));
            }
            retired.lock().push(victim);
        }
        // Workers may have closed live ids: retire those too.
        let gone: Vec<u64> = live
            .lock()
            .iter()
            .copied()
            .filter(|&id| handle.ops().info(id).is_none())
            .collect();
        live.lock().retain(|id| !gone.contains(id));
        retired.lock().extend(gone);
    }
    running.store(false, Ordering::Relaxed);
    let checked: usize = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .sum();
    assert!(checked > 100, "only {checked} dead-id calls");
    assert!(opened > 50);
    stop.store(true, Ordering::Relaxed);
    let mut engine = poller.join().unwrap();
    let still: usize = live
        .lock()
        .iter()
        .filter(|&&id| engine.ops().info(id).is_some())
        .count();
    assert_eq!(engine.socket_count(), still, "sockets leaked");
    for &id in retired.lock().iter() {
        assert!(engine.ops().info(id).is_none());
    }
    let _: &Handle = &handle;
}
