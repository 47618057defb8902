//! Unix domain stream sockets: listen, connect, echo, and the socket file's life.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;
use skysocket::engine::{Error, MsgKind, Priority};
use skysocket::sys::net::Addr;

#[test]
fn unix_listen_connect_and_echo() {
    let dir = TempDir::new("unix-echo");
    let path = dir.path("echo.sock");
    let mut h = Harness::new();
    let (lid, local) = h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 7)
        .expect("unix listen");
    assert_eq!(local, Some(Addr::Unix(path.clone())));
    h.engine.ops().start(lid, 7).unwrap();
    assert_eq!(h.engine.ops().info(lid).unwrap().kind, "unix");

    // Engine to engine.
    let cid = h
        .engine
        .ops()
        .connect(&Addr::Unix(path.clone()), 3)
        .unwrap();
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    let sid = h.accept(lid);
    h.engine
        .ops()
        .send(cid, b"over unix", Priority::High)
        .unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"over unix");
    h.engine
        .ops()
        .send(sid, b"and back", Priority::High)
        .unwrap();
    let d = h.wait_for("data back", |m| m.kind == MsgKind::Data && m.id == cid);
    assert_eq!(d.data, b"and back");
    assert!(
        h.engine.ops().set_nodelay(cid, true).is_err(),
        "TCP_NODELAY does not apply to unix sockets"
    );

    // A std peer, echoed by the engine.
    let mut p = UnixStream::connect(&path).unwrap();
    p.set_read_timeout(Some(DEADLINE)).unwrap();
    let pid = h.accept(lid);
    let payload = Rng(9).bytes(300_000);
    let expect = payload.clone();
    let writer = std::thread::spawn({
        let mut p = p.try_clone().unwrap();
        move || p.write_all(&payload).unwrap()
    });
    let echoed = std::cell::Cell::new(0);
    h.run_until(
        "unix echo",
        |e, m| {
            if m.kind == MsgKind::Data && m.id == pid {
                echoed.set(echoed.get() + m.data.len());
                e.ops().send(pid, &m.data, Priority::High).unwrap();
            }
        },
        |_| echoed.get() >= expect.len(),
    );
    let n = expect.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; n];
        p.read_exact(&mut got).unwrap();
        got
    });
    h.run_until(
        "drain",
        |_, _| {},
        |e| e.ops().info(pid).is_some_and(|i| i.queued == 0),
    );
    assert!(reader.join().unwrap() == expect);
    writer.join().unwrap();
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("unix-stale");
    let path = dir.path("stale.sock");
    // A listener that goes away without removing its file.
    let old = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(old);
    assert!(path.exists(), "std leaves the file behind");
    let mut h = Harness::new();
    let (lid, _) = h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 1)
        .expect("stale file must be replaced");
    h.engine.ops().start(lid, 1).unwrap();
    let _c = UnixStream::connect(&path).expect("the new listener answers");
    h.accept(lid);
}

#[test]
fn live_listener_path_gives_addrinuse() {
    let dir = TempDir::new("unix-live");
    let path = dir.path("live.sock");
    let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut h = Harness::new();
    match h.engine.ops().listen(&Addr::Unix(path.clone()), opts(), 1) {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("listened over a live listener"),
    }
    assert!(path.exists(), "the live listener's file is kept");
    // Also against one of our own listeners.
    let path2 = dir.path("ours.sock");
    h.engine
        .ops()
        .listen(&Addr::Unix(path2.clone()), opts(), 1)
        .unwrap();
    assert!(h
        .engine
        .ops()
        .listen(&Addr::Unix(path2.clone()), opts(), 1)
        .is_err());
    assert!(path2.exists());
}

#[test]
fn regular_file_at_the_path_is_never_deleted() {
    let dir = TempDir::new("unix-file");
    let path = dir.path("data.txt");
    std::fs::write(&path, b"precious").unwrap();
    let mut h = Harness::new();
    assert!(h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 1)
        .is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn closing_a_unix_listener_removes_its_file() {
    let dir = TempDir::new("unix-unlink");
    let path = dir.path("gone.sock");
    let mut h = Harness::new();
    let (lid, _) = h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 1)
        .unwrap();
    h.engine.ops().start(lid, 1).unwrap();
    assert!(path.exists());
    h.engine.ops().close(lid, false).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == lid);
    assert!(!path.exists(), "listener file left behind after close");

    // Dropping the engine releases its listeners' files too.
    let (lid2, _) = h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 1)
        .unwrap();
    let _ = lid2;
    assert!(path.exists());
    drop(h);
    assert!(!path.exists(), "engine drop left the file behind");
}

#[test]
fn a_file_replaced_behind_a_listener_is_not_removed() {
    let dir = TempDir::new("unix-replaced");
    let path = dir.path("moved.sock");
    let mut h = Harness::new();
    let (lid, _) = h
        .engine
        .ops()
        .listen(&Addr::Unix(path.clone()), opts(), 1)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    h.engine.ops().close(lid, true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn connect_to_missing_path_fails() {
    let dir = TempDir::new("unix-missing");
    let mut h = Harness::new();
    match h
        .engine
        .ops()
        .connect(&Addr::Unix(dir.path("nobody.sock")), 1)
    {
        Err(_) => {}
        Ok(id) => {
            let m = h.wait_for("error", |m| m.id == id);
            assert_eq!(m.kind, MsgKind::Error);
        }
    }
}
