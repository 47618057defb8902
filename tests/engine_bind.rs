//! `bind`: adopting descriptors the engine did not make (Skynet's `socket.bind`, used
//! for stdin): pipes read and written as streams, the caller's descriptor never
//! closed, no SIGPIPE when a pipe's reader is gone, files refused.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use common::*;
use skysocket::engine::{MsgKind, Priority};

/// Whether `fd` is still an open descriptor of this process.
fn is_open(fd: i32) -> bool {
    std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok()
}

#[test]
fn a_bound_pipe_is_read_until_its_writer_closes() {
    let mut h = Harness::new();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let fd = reader.as_raw_fd();
    let id = h.engine.ops().bind(fd, 5).expect("bind a pipe");
    let open = h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == id);
    assert_eq!(open.owner, 5);
    assert_eq!(open.data, b"binding", "Skynet's open text");
    assert_eq!(h.engine.ops().info(id).unwrap().kind, "bind");

    let payload = Rng(4).bytes(200_000);
    let expect = payload.clone();
    let t = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        // dropping the writer: the engine sees EOF
    });
    let mut got = Vec::new();
    h.pump("data until close", |_, m| {
        if m.id != id {
            return false;
        }
        match m.kind {
            MsgKind::Data => {
                got.extend_from_slice(&m.data);
                false
            }
            MsgKind::Close => true,
            k => panic!("unexpected {k:?}"),
        }
    });
    t.join().unwrap();
    assert_eq!(got, expect, "every byte, in order");
    h.step(std::time::Duration::from_millis(20));
    assert!(!h.engine.ops().is_open(id), "the socket is gone after EOF");
    assert!(is_open(fd), "the caller's descriptor stays open");
    drop(reader);
}

#[test]
fn a_bound_pipe_is_written_and_a_gone_reader_is_an_error_not_a_signal() {
    // A Lua interpreter leaves SIGPIPE at its default action (end the process); Rust
    // test binaries ignore it. Restore the default so that the guard is what is tested.
    // SAFETY: setting a signal disposition to SIG_DFL installs no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut h = Harness::new();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let fd = writer.as_raw_fd();
    let id = h.engine.ops().bind(fd, 1).unwrap();
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == id);
    // More than a pipe holds (64 KiB): the rest is queued and flushed as it drains.
    let payload = Rng(8).bytes(300_000);
    h.engine.ops().send(id, &payload, Priority::High).unwrap();
    let t = std::thread::spawn(move || {
        let mut got = vec![0; 300_000];
        reader.read_exact(&mut got).unwrap();
        (got, reader)
    });
    while !t.is_finished() {
        h.step(std::time::Duration::from_millis(5));
    }
    let (got, reader) = t.join().unwrap();
    assert_eq!(got, payload);

    // The reader goes away: the next write fails with EPIPE. Without the guard the
    // default SIGPIPE action would end this test process here.
    drop(reader);
    let _ = h.engine.ops().send(id, b"to nobody", Priority::High);
    let e = h.wait_for("error", |m| {
        m.id == id && matches!(m.kind, MsgKind::Error | MsgKind::Close)
    });
    assert_eq!(e.kind, MsgKind::Error, "{}", e.text());
    assert!(e.text().contains("pipe"), "{}", e.text());
    assert!(is_open(fd), "the caller's descriptor stays open");
    drop(writer);
}

#[test]
fn half_close_needs_a_socket() {
    let mut h = Harness::new();
    let (_reader, writer) = std::io::pipe().unwrap();
    let id = h.engine.ops().bind(writer.as_raw_fd(), 1).unwrap();
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == id);
    let e = h.engine.ops().shutdown_write(id).unwrap_err();
    assert!(e.to_string().contains("half-close needs a socket"), "{e}");
    assert!(h.engine.ops().is_open(id), "the socket is left as it was");
}

#[test]
fn regular_files_and_bad_descriptors_are_refused() {
    let mut h = Harness::new();
    let dir = TempDir::new("bind-file");
    let f = std::fs::File::create(dir.path("plain")).unwrap();
    let e = h.engine.ops().bind(f.as_raw_fd(), 1).unwrap_err();
    assert!(e.to_string().contains("cannot be polled"), "{e}");
    let e = h.engine.ops().bind(1_000_000, 1).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("bad file"), "{e}");
    assert_eq!(h.engine.ops().socket_count(), 0, "nothing reserved");
}

/// epoll refuses devices without poll support (/dev/null): refused at `bind`, with the
/// reason, instead of an id that fails on its first poll.
#[cfg(all(target_os = "linux", not(feature = "poll-backend")))]
#[test]
fn what_the_poller_refuses_is_refused_at_bind() {
    let mut h = Harness::new();
    let null = std::fs::File::open("/dev/null").unwrap();
    let e = h.engine.ops().bind(null.as_raw_fd(), 1).unwrap_err();
    assert!(e.to_string().contains("cannot be polled"), "{e}");
    assert_eq!(h.engine.ops().socket_count(), 0, "nothing reserved");
}
