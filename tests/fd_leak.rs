//! Alone in its binary: counts this process's descriptors, which parallel tests in
//! the same process would disturb.

mod common;

use std::net::SocketAddr;

use common::*;
use skysocket::engine::MsgKind;
use skysocket::sys::net::Addr;

#[test]
fn no_fd_leak_after_1000_connect_close_cycles() {
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let refused: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    let before = open_fds();
    for i in 0..1000 {
        let cid = h.engine.ops().connect(&Addr::Inet(addr), 1).unwrap();
        h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
        let sid = h.accept(lid);
        // Alternate who closes and how.
        match i % 3 {
            0 => h.engine.ops().close(cid, false).unwrap(),
            1 => h.engine.ops().close(sid, true).unwrap(),
            _ => {
                h.engine.ops().close(cid, true).unwrap();
                h.engine.ops().close(sid, false).unwrap();
            }
        }
        h.run_until(
            "both closed",
            |_, _| {},
            |e| e.ops().info(cid).is_none() && e.ops().info(sid).is_none(),
        );
        if i % 100 == 0 {
            let bad = h.engine.ops().connect(&Addr::Inet(refused), 1).unwrap();
            h.wait_for("refused", |m| m.kind == MsgKind::Error && m.id == bad);
        }
        h.backlog.clear();
    }
    assert_eq!(h.engine.socket_count(), 1, "only the listener remains");
    let after = open_fds();
    assert_eq!(
        before, after,
        "descriptors leaked: {before} before, {after} after"
    );
}
