//! Many sockets and many ids: a large `max_sockets`, and stale ids over long reuse.

mod common;

use std::time::Duration;

use common::*;
use skysocket::engine::{Config, Error, MsgKind};
use skysocket::sys::net::Addr;

fn any4() -> Addr {
    Addr::Inet("127.0.0.1:0".parse().unwrap())
}

#[test]
fn a_200k_socket_engine_serves_thousands_of_udp_sockets() {
    let mut h = Harness::with_config(Config {
        max_sockets: 200_000,
        ..Config::default()
    });
    let ids: Vec<u64> = (0..3000)
        .map(|i| h.engine.ops().udp(Some(&any4()), false, i).expect("udp"))
        .collect();
    assert_eq!(h.engine.socket_count(), 3000);
    // Spot-check both ends: each socket receives its own datagram.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for &id in [ids[0], ids[1500], ids[2999]].iter() {
        let local = h.engine.ops().info(id).unwrap().local.unwrap();
        probe.send_to(b"hi", local.as_str()).unwrap();
        let m = h.wait_for("udp", |m| m.kind == MsgKind::Udp && m.id == id);
        assert_eq!(m.data, b"hi");
    }
    for &id in &ids {
        h.engine.ops().close(id, true).unwrap();
    }
    assert_eq!(h.engine.socket_count(), 0);
}

#[test]
fn stale_ids_are_rejected_after_20000_reuses_of_a_small_pool() {
    let mut h = Harness::with_config(Config {
        max_sockets: 8,
        ..Config::default()
    });
    let handle = h.engine.handle();
    let keep: Vec<u64> = (0..7)
        .map(|_| h.engine.ops().udp(Some(&any4()), false, 1).unwrap())
        .collect();
    assert!(
        matches!(h.engine.ops().udp(None, false, 1).map(|_| ()), Ok(())),
        "the eighth fits"
    );
    assert!(matches!(
        h.engine.ops().udp(None, false, 1),
        Err(Error::TooManySockets)
    ));
    let mut retired = Vec::new();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = Addr::Inet(peer.local_addr().unwrap());
    // One slot is recycled over and over.
    let eighth = h
        .engine
        .ops()
        .info_all()
        .into_iter()
        .map(|i| i.id)
        .find(|id| !keep.contains(id))
        .unwrap();
    h.engine.ops().close(eighth, true).unwrap();
    retired.push(eighth);
    for i in 0..20_000 {
        let id = h.engine.ops().udp(None, false, 2).unwrap();
        assert!(!retired.contains(&id) || i > 0 && retired[retired.len() - 1] != id);
        h.engine.ops().sendto(id, Some(&to), b"x").unwrap();
        h.engine.ops().close(id, true).unwrap();
        retired.push(id);
        if i % 500 == 0 {
            h.step(Duration::ZERO);
            h.backlog.clear();
        }
    }
    let unique: std::collections::HashSet<_> = retired.iter().collect();
    assert_eq!(unique.len(), retired.len(), "an id was issued twice");
    let live = h.engine.ops().udp(None, false, 3).unwrap();
    for &old in retired.iter().step_by(37).chain(retired.last()) {
        assert!(matches!(
            h.engine.ops().sendto(old, Some(&to), b"y"),
            Err(Error::UnknownId)
        ));
        assert!(matches!(
            h.engine.ops().close(old, true),
            Err(Error::UnknownId)
        ));
        assert!(matches!(handle.ops().pause(old), Err(Error::UnknownId)));
        assert!(h.engine.ops().info(old).is_none());
    }
    assert_eq!(
        h.engine.ops().info(live).unwrap().owner,
        3,
        "the new owner is untouched"
    );
    for id in keep {
        assert!(h.engine.ops().info(id).is_some());
    }
}
