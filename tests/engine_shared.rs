//! What the service layer builds on: an engine whose poll side moved to another thread
//! (`Engine::detach`), remote views, owner tokens (`set_owner`, `start`,
//! `close_owned`), `hold`, operations from another thread taking effect at once, and
//! messages carried as plain fields (`Msg::parts` / `Parts::msg`).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Batch, Config, Engine, Error, Msg as EngineMsg, MsgKind, Priority};
use skysocket::sys::net::Addr;

/// Detach `engine` and run its poll side on a thread, sending every message (copied)
/// to the returned channel until `stop` is set.
fn run_detached(
    engine: &mut Engine,
    stop: Arc<AtomicBool>,
) -> (mpsc::Receiver<Msg>, thread::JoinHandle<()>) {
    let mut poll = engine.detach().expect("detach");
    assert!(engine.is_remote(), "the value left behind is a remote view");
    assert!(
        engine.detach().is_none(),
        "a remote view has nothing to detach"
    );
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut batch = Batch::new();
        while !stop.load(Ordering::Relaxed) {
            poll.poll(&mut batch, Some(Duration::from_millis(5)))
                .expect("poll");
            for m in batch.iter() {
                let _ = tx.send(copy(m));
            }
        }
    });
    (rx, t)
}

/// The first message (received or left over from an earlier wait) that `pred` takes;
/// the others stay in `backlog` for later waits.
fn next(
    rx: &mpsc::Receiver<Msg>,
    backlog: &mut Vec<Msg>,
    what: &str,
    pred: impl Fn(&Msg) -> bool,
) -> Msg {
    if let Some(i) = backlog.iter().position(&pred) {
        return backlog.remove(i);
    }
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) if pred(&m) => return m,
            Ok(m) => backlog.push(m),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn parts_round_trip_every_kind() {
    let msgs = [
        EngineMsg::Data {
            id: 7,
            owner: 3,
            data: b"bytes\0",
        },
        EngineMsg::Open {
            id: 7,
            owner: 3,
            peer: b"127.0.0.1:1",
        },
        EngineMsg::Accept {
            listener: 1,
            owner: 2,
            id: 9,
            peer: b"p",
        },
        EngineMsg::Close {
            id: 7,
            owner: u64::MAX,
            note: b"",
        },
        EngineMsg::Error {
            id: 7,
            owner: 3,
            text: b"x",
            open: true,
        },
        EngineMsg::Udp {
            id: 8,
            owner: 3,
            data: b"d",
            from: b"f",
        },
        EngineMsg::Warning {
            id: 7,
            owner: 3,
            queued_kib: 64,
        },
        EngineMsg::Timer { timer: 1 << 40 },
        EngineMsg::Exit,
        EngineMsg::Resolved {
            owner: 3,
            request: 4,
            result: Err(b"no"),
        },
        EngineMsg::Handshake {
            id: 7,
            owner: 3,
            alpn: b"h2",
        },
    ];
    for m in msgs {
        let p = m.parts();
        assert_eq!(MsgKind::from_code(p.kind.code()), Some(p.kind));
        assert_eq!(p.msg(), m, "{m:?}");
    }
    assert_eq!(MsgKind::from_code(200), None);
}

#[test]
fn a_detached_engine_serves_operations_from_its_remote_view() {
    let mut engine = Engine::new(Config::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, t) = run_detached(&mut engine, stop.clone());
    let mut bl = Vec::new();
    // A listener and a connection made through the remote view, with owner tokens.
    let (lid, local) = engine
        .ops()
        .listen(&Addr::Inet("127.0.0.1:0".parse().unwrap()), opts(), 5)
        .unwrap();
    engine.ops().start(lid, 5).unwrap();
    let addr = match local {
        Some(Addr::Inet(a)) => a,
        other => panic!("{other:?}"),
    };
    let cid = engine.ops().connect(&Addr::Inet(addr), 6).unwrap();
    let open = next(&rx, &mut bl, "open", |m| {
        m.kind == MsgKind::Open && m.id == cid
    });
    assert_eq!(open.owner, 6, "the connect's owner token");
    let acc = next(&rx, &mut bl, "accept", |m| {
        m.kind == MsgKind::Accept && m.id == lid
    });
    assert_eq!(acc.owner, 5, "the listener's owner token");
    let sid = acc.ud;
    assert_eq!(
        engine.ops().owner_of(sid).unwrap(),
        5,
        "accepted: the listener's owner"
    );
    // start hands the accepted socket to owner 7: its data carries 7.
    engine.ops().start(sid, 7).unwrap();
    engine.ops().send(cid, b"to seven", Priority::High).unwrap();
    let d = next(&rx, &mut bl, "data", |m| {
        m.kind == MsgKind::Data && m.id == sid
    });
    assert_eq!((d.owner, d.text().as_str()), (7, "to seven"));
    // set_owner changes the token without touching the state.
    engine.ops().set_owner(sid, 8).unwrap();
    engine.ops().send(cid, b"to eight", Priority::High).unwrap();
    let d = next(&rx, &mut bl, "data", |m| {
        m.kind == MsgKind::Data && m.id == sid
    });
    assert_eq!(d.owner, 8);
    // A close from the remote view refuses the next send at once.
    engine.ops().close(cid, false).unwrap();
    assert!(
        engine.ops().send(cid, b"late", Priority::High).is_err(),
        "a send right after a close is refused"
    );
    let c = next(&rx, &mut bl, "close", |m| {
        m.kind == MsgKind::Close && m.id == sid
    });
    assert_eq!(c.owner, 8);
    // close_owned closes exactly the sockets of one owner.
    let udp = engine.ops().udp(None, false, 9).unwrap();
    assert_eq!(engine.ops().close_owned(5), 1, "the listener");
    assert!(!engine.ops().is_open(lid));
    assert!(engine.ops().is_open(udp), "owner 9's socket stays");
    assert_eq!(engine.ops().close_owned(9), 1);
    assert!(!engine.ops().is_open(udp));
    // A remote view cannot poll.
    assert!(engine
        .poll(&mut Batch::new(), Some(Duration::ZERO))
        .is_err());
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn hold_stops_reading_until_released() {
    let mut engine = Engine::new(Config::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, t) = run_detached(&mut engine, stop.clone());
    let mut bl = Vec::new();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = engine
        .ops()
        .connect(&Addr::Inet(server.local_addr().unwrap()), 1)
        .unwrap();
    let (mut peer, _) = server.accept().unwrap();
    next(&rx, &mut bl, "open", |m| {
        m.kind == MsgKind::Open && m.id == id
    });
    engine.ops().hold(id, true).unwrap();
    thread::sleep(Duration::from_millis(50)); // the poll thread drops read interest
    write_all(&mut peer, b"held back");
    thread::sleep(Duration::from_millis(200));
    assert!(
        rx.try_iter()
            .chain(bl.drain(..))
            .all(|m| m.kind != MsgKind::Data),
        "nothing is read while held"
    );
    // The owner's own pause/resume do not release a hold.
    engine.ops().pause(id).unwrap();
    engine.ops().resume(id).unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(rx.try_iter().all(|m| m.kind != MsgKind::Data), "still held");
    engine.ops().hold(id, false).unwrap();
    let d = next(&rx, &mut bl, "data", |m| {
        m.kind == MsgKind::Data && m.id == id
    });
    assert_eq!(d.text(), "held back");
    engine.ops().close(id, true).unwrap();
    let mut rest = Vec::new();
    let _ = peer.read_to_end(&mut rest);
    assert!(matches!(
        engine.ops().send(id, b"x", Priority::High),
        Err(Error::UnknownId)
    ));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}
