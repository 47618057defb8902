//! Fault suite 7: `Handle` from 8 threads while the poll thread opens and closes
//! sockets underneath. The threads send sequenced frames to live sockets (peers check
//! order and content per thread) and send/close/pause/resume/start/info random churn
//! ids, live and dead: no crash, no lost byte, clean errors for dead ids.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use skysocket::engine::{Batch, Error, MsgKind, Priority};
use skysocket::sys::net::Addr;

const THREADS: u8 = 8;
const LIVE: usize = 4;
const FRAMES: u32 = 300;

fn frame(tid: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + len);
    f.push(tid);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.extend((0..len).map(|i| (i as u8) ^ tid ^ (seq as u8)));
    f
}

/// Returns the stream too: dropping it early would close a live socket.
fn check(mut s: TcpStream) -> Result<(u64, TcpStream), String> {
    let mut next = [0u32; THREADS as usize];
    let mut bytes = 0u64;
    let mut head = [0u8; 9];
    while next.iter().any(|&n| n < FRAMES) {
        s.read_exact(&mut head)
            .map_err(|e| format!("header: {e}"))?;
        let tid = head[0] as usize;
        let seq = u32::from_le_bytes(head[1..5].try_into().unwrap());
        let len = u32::from_le_bytes(head[5..9].try_into().unwrap()) as usize;
        if tid >= THREADS as usize || seq != next[tid] {
            return Err(format!(
                "thread {tid}: seq {seq}, expected {:?}",
                next.get(tid)
            ));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
        if body
            .iter()
            .enumerate()
            .any(|(i, &b)| b != (i as u8) ^ tid as u8 ^ seq as u8)
        {
            return Err(format!("thread {tid} seq {seq}: corrupted"));
        }
        next[tid] += 1;
        bytes += 9 + len as u64;
    }
    Ok((bytes, s))
}

#[test]
fn handle_from_eight_threads_while_sockets_churn() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut readers = Vec::new();
    let mut live = Vec::new();
    for _ in 0..LIVE {
        let p = peer(addr);
        live.push(h.accept(lid));
        readers.push(thread::spawn(move || check(p)));
    }
    let handle = h.engine.handle();
    let mut engine = h.engine;
    let stop = Arc::new(AtomicBool::new(false));
    // Churn ids: (id, dead). Dead ones were closed by the poll thread.
    let churn: Arc<Mutex<Vec<(u64, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let churn_cycles = Arc::new(AtomicU64::new(0));

    let poll_thread = {
        let (stop, churn, cycles) = (stop.clone(), churn.clone(), churn_cycles.clone());
        let live = live.clone();
        thread::spawn(move || {
            let mut batch = Batch::new();
            let mut rng = Rng(77);
            let bind = Addr::Inet("127.0.0.1:0".parse().unwrap());
            let mut open: Vec<u64> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                engine
                    .poll(&mut batch, Some(Duration::from_millis(1)))
                    .unwrap();
                for m in batch.iter().map(common::copy) {
                    if m.kind == MsgKind::Accept && m.id == lid {
                        // Churn connections: start some, leave others unstarted.
                        if rng.below(2) == 0 {
                            let _ = engine.ops().start(m.ud, 7);
                        }
                        open.push(m.ud);
                        churn.lock().push((m.ud, false));
                    }
                    if matches!(m.kind, MsgKind::Close | MsgKind::Error) && m.ud == 0 {
                        assert!(!live.contains(&m.id), "a live socket closed: {m:?}");
                    }
                }
                // Open a few sockets and close a few, every step.
                for _ in 0..3 {
                    let id = if rng.below(2) == 0 {
                        engine.ops().udp(Some(&bind), false, 9).unwrap()
                    } else {
                        engine.ops().connect(&Addr::Inet(addr), 9).unwrap()
                    };
                    open.push(id);
                    churn.lock().push((id, false));
                }
                while open.len() > 12 {
                    let id = open.remove(rng.below(open.len() as u64) as usize);
                    let _ = engine.ops().close(id, rng.below(2) == 0);
                    if engine.ops().info(id).is_none() {
                        let mut c = churn.lock();
                        if let Some(e) = c.iter_mut().find(|e| e.0 == id) {
                            e.1 = true;
                        }
                    }
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
                let mut c = churn.lock();
                if c.len() > 200 {
                    c.drain(..100);
                }
            }
            for id in open {
                let _ = engine.ops().close(id, true);
            }
            engine
        })
    };

    let counts = Arc::new([(); 4].map(|_| AtomicU64::new(0))); // ok, err, dead_err, sent
    let mut senders = Vec::new();
    for tid in 0..THREADS {
        let (handle, churn, live, counts) =
            (handle.clone(), churn.clone(), live.clone(), counts.clone());
        senders.push(thread::spawn(move || {
            let mut rng = Rng(1000 + tid as u64);
            let mut seq = [0u32; LIVE];
            while seq.iter().any(|&s| s < FRAMES) {
                if rng.below(3) == 0 {
                    let k = rng.below(LIVE as u64) as usize;
                    if seq[k] < FRAMES {
                        let len = if seq[k] % 50 == 9 {
                            256 << 10
                        } else {
                            1 + rng.below(4000) as usize
                        };
                        handle
                            .ops()
                            .send(live[k], &frame(tid, seq[k], len), Priority::High)
                            .expect("live send");
                        counts[3].fetch_add(1, Ordering::Relaxed);
                        seq[k] += 1;
                    } else {
                        // Pause/resume a live socket: harmless, must succeed.
                        handle.ops().pause(live[k]).expect("pause live");
                        handle.ops().resume(live[k]).expect("resume live");
                    }
                    continue;
                }
                let pick = {
                    let c = churn.lock();
                    (!c.is_empty()).then(|| c[rng.below(c.len() as u64) as usize])
                };
                let Some((id, dead)) = pick else { continue };
                let r: Result<(), Error> = match rng.below(7) {
                    0 => handle.ops().send(id, b"noise", Priority::High),
                    1 => handle.ops().close(id, rng.below(2) == 0),
                    2 => handle.ops().pause(id),
                    3 => handle.ops().resume(id),
                    4 => handle.ops().start(id, 9),
                    5 => handle.ops().send(id, b"low", Priority::Low),
                    _ => handle.ops().info(id).map(|_| ()).ok_or(Error::UnknownId),
                };
                match r {
                    Ok(()) => {
                        assert!(!dead, "operation succeeded on dead id {id:#x}");
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::UnknownId) if dead => {
                        counts[2].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let t0 = Instant::now();
    for s in senders {
        s.join().unwrap();
    }
    let mut total = 0;
    let mut streams = Vec::new();
    for r in readers {
        let (n, s) = r.join().unwrap().expect("peer check");
        total += n;
        streams.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    let mut engine = poll_thread.join().unwrap();
    println!(
        "fault_threads: {THREADS} threads, {} frames ({total} bytes) to {LIVE} live sockets \
         in order, {} churn closes underneath; random ops: {} ok, {} errors on live/closing \
         ids, {} clean UnknownId on dead ids; {:.1} s",
        counts[3].load(Ordering::Relaxed),
        churn_cycles.load(Ordering::Relaxed),
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    for id in live {
        let _ = engine.ops().close(id, true);
    }
    engine.ops().close(lid, true).unwrap();
    let mut batch = Batch::new();
    engine
        .poll(&mut batch, Some(Duration::from_millis(10)))
        .unwrap();
    let left: Vec<_> = engine
        .ops()
        .info_all()
        .into_iter()
        .map(|i| (i.id, i.state))
        .collect();
    for (id, _) in &left {
        let _ = engine.ops().close(*id, true);
    }
    assert_eq!(engine.socket_count(), 0, "left: {left:?}");
}
