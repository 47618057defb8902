//! Alone in its binary: lowers RLIMIT_NOFILE, which affects the whole process.
//! Accepting with no descriptors left must report an error to the listener's owner,
//! shed the pending connection (or back off), keep serving afterwards, and never spin.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Config, MsgKind, Priority};
use skysocket::sys::process::{cpu_time, nofile_limit, set_nofile_soft};

fn fds() -> BTreeSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Lower the soft limit so that exactly `room` more descriptors can be opened: new
/// descriptors take the lowest free numbers, so the limit is the (room+1)-th free one.
/// Descriptors already open above it stay usable.
fn leave_room(room: usize) {
    use std::os::fd::AsRawFd;
    // The listing's own descriptor takes the lowest free number: find it and drop it.
    let probe = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    let mut open = fds();
    open.remove(&probe);
    let limit = (0u64..).filter(|n| !open.contains(n)).nth(room).unwrap();
    set_nofile_soft(limit).unwrap();
}

fn connect_many(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect()
}

/// CPU time used while polling for `wall`.
fn cpu_while_polling(h: &mut Harness, wall: Duration) -> Duration {
    let cpu0 = cpu_time().unwrap();
    let end = Instant::now() + wall;
    while Instant::now() < end {
        h.step(Duration::from_millis(50));
    }
    cpu_time().unwrap() - cpu0
}

#[test]
fn emfile_on_accept() {
    let (soft, _) = nofile_limit().unwrap();
    let result = std::panic::catch_unwind(|| {
        with_spare_fd_sheds_pending_connections();
        without_spare_fd_backs_off_without_spinning();
    });
    set_nofile_soft(soft).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn with_spare_fd_sheds_pending_connections() {
    let (soft, _) = nofile_limit().unwrap();
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let mut peers = connect_many(addr, 30);
    leave_room(2);

    // Poll until every pending connection was either accepted or shed.
    let mut accepted = Vec::new();
    let mut errors = Vec::new();
    h.pump("all 30 handled", |_, m| {
        match m.kind {
            MsgKind::Accept if m.id == lid => accepted.push((m.ud, m.text())),
            MsgKind::Error if m.id == lid => errors.push(m),
            _ => {}
        }
        accepted.len() + errors.len() >= 30
    });
    assert!(
        accepted.len() <= 2,
        "accepted {} with room for 2",
        accepted.len()
    );
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(e.ud, 1, "the listener stays open");
        assert_eq!(e.owner, 7);
        assert!(e.text().contains("Too many open files"), "{}", e.text());
    }
    // Shed peers see EOF (or a reset); accepted ones just wait.
    let accepted_addrs: Vec<String> = accepted.iter().map(|(_, a)| a.clone()).collect();
    let mut shed = 0;
    for p in &mut peers {
        let mine = p.local_addr().unwrap().to_string();
        if accepted_addrs.contains(&mine) {
            continue;
        }
        let mut b = [0u8; 1];
        match p.read(&mut b) {
            Ok(0) => shed += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => shed += 1,
            other => panic!("shed peer {mine}: {other:?}"),
        }
    }
    assert_eq!(shed + accepted.len(), 30);

    // Still exhausted, nothing pending: the loop sleeps.
    let cpu = cpu_while_polling(&mut h, Duration::from_secs(1));
    assert!(cpu < Duration::from_millis(200), "spun: {cpu:?} CPU in 1 s");

    // Free descriptors; the engine serves again under the same limit.
    for (id, _) in &accepted {
        h.engine.ops().close(*id, true).unwrap();
    }
    drop(peers);
    h.backlog.clear();
    let mut p = peer(addr);
    let id = h.accept(lid);
    h.engine.ops().send(id, b"served", Priority::High).unwrap();
    assert_eq!(read_exact_n(&mut p, 6), b"served");
    set_nofile_soft(soft).unwrap();
}

fn without_spare_fd_backs_off_without_spinning() {
    let (soft, _) = nofile_limit().unwrap();
    let config = Config {
        reserve_fd: false,
        accept_backoff: Duration::from_millis(100),
        ..Config::default()
    };
    let mut h = Harness::with_config(config);
    let (lid, addr) = h.listen("127.0.0.1");
    let peers = connect_many(addr, 10);
    leave_room(0);
    // Pending connections stay queued and the limit stays exhausted for 1 s.
    let cpu = cpu_while_polling(&mut h, Duration::from_secs(1));
    assert!(cpu < Duration::from_millis(200), "spun: {cpu:?} CPU in 1 s");
    let errors: Vec<_> = h
        .backlog
        .iter()
        .filter(|m| m.kind == MsgKind::Error && m.id == lid)
        .collect();
    assert!(
        !errors.is_empty() && errors.len() <= 15,
        "one error per backoff period, got {}",
        errors.len()
    );
    assert!(errors[0].text().contains("Too many open files"));
    assert_eq!(errors[0].ud, 1);
    assert!(
        h.backlog.iter().all(|m| m.kind != MsgKind::Accept),
        "nothing can be accepted"
    );
    // Descriptors come back: the queued connections are accepted.
    set_nofile_soft(soft).unwrap();
    h.backlog.clear();
    let mut n = 0;
    h.pump("queued connections accepted", |_, m| {
        if m.kind == MsgKind::Accept {
            n += 1;
        }
        n >= 10
    });
    drop(peers);
}
