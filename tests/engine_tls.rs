//! TLS in the engine: certificates minted at test time (rcgen), engine↔engine and
//! engine↔independent rustls peers over loopback, and every failure closing only the
//! socket concerned with a clear error.
#![cfg(feature = "tls")]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use skysocket::engine::{Config, MsgKind, Priority, SocketId, TlsContext, TlsOptions};
use skysocket::sys::net::Addr;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    /// A leaf for `names`; `expired`: valid only in 2001.
    fn leaf(&self, cn: &str, names: &[&str], expired: bool) -> (Vec<u8>, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "skysocket tests");
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 12, 31);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }
}

fn server_ctx(ca: &Ca, names: &[&str]) -> Arc<TlsContext> {
    let (cert, key) = ca.leaf("test server", names, false);
    TlsContext::new(&TlsOptions::server(&cert, &key)).unwrap()
}

fn client_ctx(ca: &Ca) -> Arc<TlsContext> {
    let mut o = TlsOptions::client();
    o.ca = Some(ca.pem());
    TlsContext::new(&o).unwrap()
}

/// A TLS listener started on an ephemeral loopback port.
fn tls_listener(h: &mut Harness, ctx: &Arc<TlsContext>) -> (SocketId, SocketAddr) {
    let (lid, addr) = h.listen("127.0.0.1");
    h.engine.ops().tls_listen(lid, ctx).unwrap();
    (lid, addr)
}

/// An independent rustls client over a blocking std stream.
fn rustls_client(
    ca: &Ca,
    name: &str,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from(ca.cert.der().to_vec());
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"echo/1".to_vec()];
    let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
    rustls::StreamOwned::new(conn, peer(addr))
}

#[test]
fn context_options_are_checked() {
    let ca = Ca::new("ctx ca");
    let (cert, key) = ca.leaf("x", &["localhost"], false);
    let mut o = TlsOptions::server(&cert, b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n");
    assert!(TlsContext::new(&o).unwrap_err().contains("key"));
    o.key = None;
    assert!(TlsContext::new(&o).unwrap_err().contains("cert and key"));
    let o = TlsOptions::server(b"/nonexistent/cert.pem", &key);
    let e = TlsContext::new(&o).unwrap_err();
    assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    let mut o = TlsOptions::client();
    o.cert = Some(cert.clone());
    assert!(TlsContext::new(&o).unwrap_err().contains("together"));
    let mut o = TlsOptions::client();
    o.alpn = vec![Vec::new()];
    assert!(TlsContext::new(&o).is_err());
    // Files work as well as PEM text.
    let dir = TempDir::new("tlsctx");
    std::fs::write(dir.path("c.pem"), &cert).unwrap();
    std::fs::write(dir.path("k.pem"), &key).unwrap();
    let o = TlsOptions::server(
        dir.path("c.pem").to_str().unwrap().as_bytes(),
        dir.path("k.pem").to_str().unwrap().as_bytes(),
    );
    assert!(TlsContext::new(&o).unwrap().is_server());
}

#[test]
fn rustls_client_against_engine_server_echo_and_info() {
    let ca = Ca::new("echo ca");
    let (cert, key) = ca.leaf("echo server", &["localhost", "127.0.0.1"], false);
    let mut o = TlsOptions::server(&cert, &key);
    o.alpn = vec![b"echo/1".to_vec()];
    let ctx = TlsContext::new(&o).unwrap();
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &ctx);
    let mut s = rustls_client(&ca, "localhost", addr);
    let t = thread::spawn(move || {
        s.write_all(b"hello over tls").unwrap();
        let mut buf = [0u8; 14];
        s.read_exact(&mut buf).unwrap();
        let alpn = s.conn.alpn_protocol().map(|p| p.to_vec());
        s.conn.send_close_notify();
        s.flush().unwrap();
        (buf.to_vec(), alpn)
    });
    let sid = h.accept(lid);
    let hs = h.wait_for("handshake", |m| m.kind == MsgKind::Handshake && m.id == sid);
    assert_eq!(hs.data, b"echo/1", "the handshake event carries the ALPN");
    let info = h.engine.ops().tls_info(sid).unwrap();
    assert!(!info.handshaking && info.server);
    assert_eq!(info.version.as_deref(), Some("TLSv1.3"));
    assert!(
        info.cipher.as_deref().unwrap().starts_with("TLS13_"),
        "{info:?}"
    );
    assert_eq!(info.sni.as_deref(), Some("localhost"));
    assert!(info.peer_subject.is_none(), "no client certificate");
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"hello over tls", "plaintext reaches the owner");
    h.engine.ops().send(sid, &d.data, Priority::High).unwrap();
    // The peer's close_notify is a clean close.
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
    let (echo, alpn) = t.join().unwrap();
    assert_eq!(echo, b"hello over tls");
    assert_eq!(alpn.as_deref(), Some(&b"echo/1"[..]));
    assert!(
        h.engine.ops().tls_info(lid).is_err(),
        "a listener has no session"
    );
}

/// Connect an engine TLS client to an engine TLS listener; returns (client, server).
fn pair(h: &mut Harness, lid: SocketId, addr: SocketAddr, cctx: &Arc<TlsContext>) -> (u64, u64) {
    let cid = h
        .engine
        .ops()
        .tls_connect(&Addr::Inet(addr), cctx, Some("localhost"), 5)
        .unwrap();
    let sid = h.accept(lid);
    h.wait_for("client open", |m| m.kind == MsgKind::Open && m.id == cid);
    h.wait_for("client handshake", |m| {
        m.kind == MsgKind::Handshake && m.id == cid
    });
    h.wait_for("server handshake", |m| {
        m.kind == MsgKind::Handshake && m.id == sid
    });
    (cid, sid)
}

#[test]
fn open_is_held_until_the_handshake_and_peer_names_are_reported() {
    let ca = Ca::new("names ca");
    let sctx = server_ctx(&ca, &["localhost", "127.0.0.1"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let cid = h
        .engine
        .ops()
        .tls_connect(&Addr::Inet(addr), &cctx, Some("localhost"), 5)
        .unwrap();
    let sid = h.accept(lid);
    let mut seen = Vec::new();
    h.pump("open + handshake", |_, m| {
        if m.id == cid {
            seen.push(m.kind);
        }
        m.id == cid && m.kind == MsgKind::Handshake
    });
    assert_eq!(seen, vec![MsgKind::Open, MsgKind::Handshake]);
    let info = h.engine.ops().tls_info(cid).unwrap();
    assert!(!info.server);
    assert_eq!(
        info.peer_subject.as_deref(),
        Some("CN=test server, O=skysocket tests")
    );
    assert_eq!(info.peer_sans, vec!["DNS:localhost", "IP:127.0.0.1"]);
    h.wait_for("server handshake", |m| {
        m.kind == MsgKind::Handshake && m.id == sid
    });
    // The server name defaults to the IP connected to; the cert has it as a SAN.
    let cid2 = h
        .engine
        .ops()
        .tls_connect(&Addr::Inet(addr), &cctx, None, 5)
        .unwrap();
    h.accept(lid);
    h.wait_for("open by IP", |m| m.kind == MsgKind::Open && m.id == cid2);
}

#[test]
fn many_connections_exchange_megabytes_byte_exact() {
    let conns = 16;
    let size = 1 << 20;
    let ca = Ca::new("bulk ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (_lid, addr) = tls_listener(&mut h, &sctx);
    let mut rng = Rng(0x5eed);
    let mut want: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut got: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut clients = Vec::new();
    for _ in 0..conns {
        let cid = h
            .engine
            .ops()
            .tls_connect(&Addr::Inet(addr), &cctx, Some("localhost"), 5)
            .unwrap();
        clients.push(cid);
        want.insert(cid, rng.bytes(size));
        got.insert(cid, Vec::new());
    }
    // Clients queue everything at once in random chunks (mixed priorities keep order
    // within a send; all high here), before their handshakes are done.
    for &cid in &clients {
        let data = want[&cid].clone();
        let mut pos = 0;
        while pos < data.len() {
            let n = (1 + rng.below(70_000) as usize).min(data.len() - pos);
            h.engine
                .ops()
                .send(cid, &data[pos..pos + n], Priority::High)
                .unwrap();
            pos += n;
        }
    }
    let mut done = 0;
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while done < conns {
        assert!(std::time::Instant::now() < end, "bulk transfer timed out");
        h.step(Duration::from_millis(10));
        for m in std::mem::take(&mut h.backlog) {
            match m.kind {
                MsgKind::Accept => h.engine.ops().start(m.ud, 7).unwrap(),
                // The server echoes: both directions carry the whole stream.
                MsgKind::Data if m.owner == 7 => {
                    h.engine.ops().send(m.id, &m.data, Priority::High).unwrap()
                }
                MsgKind::Data => {
                    let g = got.get_mut(&m.id).unwrap();
                    g.extend_from_slice(&m.data);
                    if g.len() == size {
                        done += 1;
                    }
                }
                MsgKind::Error => panic!("unexpected error on {}: {}", m.id, m.text()),
                _ => {}
            }
        }
    }
    for cid in clients {
        assert!(got[&cid] == want[&cid], "stream of {cid} differs");
    }
}

#[test]
fn close_after_flush_sends_everything_then_close_notify() {
    let ca = Ca::new("flush ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let mut s = rustls_client(&ca, "localhost", addr);
    let sid = h.accept(lid);
    let payload = Rng(7).bytes(3 << 20);
    let expect = payload.clone();
    let reader = thread::spawn(move || {
        s.write_all(b"go").unwrap();
        let mut all = Vec::new();
        // read_to_end fails with UnexpectedEof unless close_notify arrived.
        let r = s.read_to_end(&mut all);
        (r.map_err(|e| e.to_string()), all)
    });
    h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    h.engine.ops().send(sid, &payload, Priority::Low).unwrap();
    h.engine.ops().close(sid, false).unwrap();
    h.wait_for("close", |m| m.kind == MsgKind::Close && m.id == sid);
    let (r, all) = reader.join().unwrap();
    assert!(r.is_ok(), "clean TLS close expected: {r:?}");
    assert!(all == expect, "{} of {} bytes", all.len(), expect.len());
}

#[test]
fn starttls_after_a_plaintext_line() {
    let ca = Ca::new("starttls ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = h.listen("127.0.0.1");
    let cid = h.engine.ops().connect(&Addr::Inet(addr), 5).unwrap();
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    let sid = h.accept(lid);
    h.engine
        .ops()
        .send(cid, b"STARTTLS\r\n", Priority::High)
        .unwrap();
    let d = h.wait_for("line", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"STARTTLS\r\n");
    // The reply is queued before the upgrade: it goes out in plaintext first.
    h.engine.ops().send(sid, b"OK\r\n", Priority::Low).unwrap();
    h.engine.ops().tls_upgrade(sid, &sctx, None).unwrap();
    let d = h.wait_for("reply", |m| m.kind == MsgKind::Data && m.id == cid);
    assert_eq!(d.data, b"OK\r\n");
    h.engine
        .ops()
        .tls_upgrade(cid, &cctx, Some("localhost"))
        .unwrap();
    assert!(
        h.engine.ops().tls_upgrade(cid, &cctx, None).is_err(),
        "twice"
    );
    h.wait_for("client hs", |m| m.kind == MsgKind::Handshake && m.id == cid);
    h.wait_for("server hs", |m| m.kind == MsgKind::Handshake && m.id == sid);
    h.engine.ops().send(cid, b"secret", Priority::High).unwrap();
    let d = h.wait_for("secret", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"secret");
    assert_eq!(
        h.engine.ops().tls_info(sid).unwrap().version.as_deref(),
        Some("TLSv1.3")
    );
}

#[test]
fn sends_from_other_threads_go_through_the_poll_thread() {
    let ca = Ca::new("threads ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let (cid, sid) = pair(&mut h, lid, addr, &cctx);
    let handle = h.engine.handle();
    let writers: Vec<_> = (0..4u8)
        .map(|k| {
            let handle = handle.clone();
            thread::spawn(move || {
                for i in 0..200u32 {
                    let mut msg = vec![k; 100];
                    msg[..4].copy_from_slice(&i.to_be_bytes());
                    handle.ops().send(sid, &msg, Priority::High).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 4 * 200 * 100 {
        let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == cid);
        got.extend_from_slice(&d.data);
    }
    // Each 100-byte send arrives whole and in per-thread order.
    let mut next = [0u32; 4];
    for chunk in got.chunks(100) {
        let k = chunk[99] as usize;
        assert!(chunk[4..].iter().all(|&b| b as usize == k));
        let i = u32::from_be_bytes(chunk[..4].try_into().unwrap());
        assert_eq!(i, next[k]);
        next[k] += 1;
    }
}

#[test]
fn tls_connect_and_upgrade_from_another_thread() {
    // The TLS operations are the same `Ops` off the poll thread: the connection is
    // attached there, the poll thread arms the handshake timeout and flushes.
    let ca = Ca::new("remote ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let handle = h.engine.handle();
    let c2 = cctx.clone();
    let cid = thread::spawn(move || {
        handle
            .ops()
            .tls_connect(&Addr::Inet(addr), &c2, Some("localhost"), 5)
            .unwrap()
    })
    .join()
    .unwrap();
    let sid = h.accept(lid);
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    h.wait_for("client hs", |m| m.kind == MsgKind::Handshake && m.id == cid);
    h.wait_for("server hs", |m| m.kind == MsgKind::Handshake && m.id == sid);
    let handle = h.engine.handle();
    thread::spawn(move || handle.ops().send(cid, b"over tls", Priority::High).unwrap())
        .join()
        .unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"over tls");

    // STARTTLS on both ends of a plain pair, asked for from other threads.
    let (plid, paddr) = h.listen("127.0.0.1");
    let pc = h.engine.ops().connect(&Addr::Inet(paddr), 5).unwrap();
    h.wait_for("plain open", |m| m.kind == MsgKind::Open && m.id == pc);
    let ps = h.accept(plid);
    let (handle, s2, c2) = (h.engine.handle(), sctx.clone(), cctx.clone());
    thread::spawn(move || {
        handle.ops().tls_upgrade(ps, &s2, None).unwrap();
        handle
            .ops()
            .tls_upgrade(pc, &c2, Some("localhost"))
            .unwrap();
        assert!(handle.ops().tls_upgrade(pc, &c2, None).is_err(), "twice");
    })
    .join()
    .unwrap();
    h.wait_for("client hs", |m| m.kind == MsgKind::Handshake && m.id == pc);
    h.wait_for("server hs", |m| m.kind == MsgKind::Handshake && m.id == ps);
    h.engine
        .ops()
        .send(pc, b"upgraded", Priority::High)
        .unwrap();
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == ps);
    assert_eq!(d.data, b"upgraded");
}

/// Expect an `Error` on `id` whose text contains `needle`, and no close of `keep`.
fn expect_error(h: &mut Harness, id: u64, needle: &str) -> String {
    let m = h.wait_for("error", |m| {
        (m.kind == MsgKind::Error || m.kind == MsgKind::Close) && m.id == id
    });
    assert_eq!(m.kind, MsgKind::Error, "expected an error, got {m:?}");
    let text = m.text();
    assert!(
        text.contains(needle),
        "error text {text:?} lacks {needle:?}"
    );
    assert!(!h.engine.ops().is_open(id), "the failed socket is released");
    text
}

#[test]
fn verification_failures_close_only_that_socket() {
    let ca = Ca::new("good ca");
    let other = Ca::new("unknown ca");
    let mut h = Harness::new();
    let cctx = client_ctx(&ca);
    // A healthy connection that must survive every failure below.
    let (glid, gaddr) = tls_listener(&mut h, &server_ctx(&ca, &["localhost"]));
    let (gc, gs) = pair(&mut h, glid, gaddr, &cctx);

    let cases: Vec<(&str, Arc<TlsContext>, &str)> = vec![
        (
            "wrong host name",
            server_ctx(&ca, &["elsewhere.example"]),
            "not valid for name",
        ),
        (
            "unknown CA",
            server_ctx(&other, &["localhost"]),
            "UnknownIssuer",
        ),
        (
            "expired",
            {
                let (c, k) = ca.leaf("old", &["localhost"], true);
                TlsContext::new(&TlsOptions::server(&c, &k)).unwrap()
            },
            "xpired",
        ),
    ];
    for (what, sctx, needle) in cases {
        let (lid, addr) = tls_listener(&mut h, &sctx);
        let cid = h
            .engine
            .ops()
            .tls_connect(&Addr::Inet(addr), &cctx, Some("localhost"), 5)
            .unwrap();
        let sid = h.accept(lid);
        let text = expect_error(&mut h, cid, needle);
        assert!(text.starts_with("tls: handshake failed"), "{what}: {text}");
        // The server side learns from the alert.
        let m = h.wait_for("server side", |m| {
            (m.kind == MsgKind::Error || m.kind == MsgKind::Close) && m.id == sid
        });
        assert_eq!(m.kind, MsgKind::Error, "{what}: {m:?}");
        h.engine.ops().close(lid, true).unwrap();
    }
    // verify = false accepts the unknown CA (documented as unsafe).
    let mut o = TlsOptions::client();
    o.verify = false;
    let lax = TlsContext::new(&o).unwrap();
    let (lid, addr) = tls_listener(&mut h, &server_ctx(&other, &["x.example"]));
    let (c, _) = pair(&mut h, lid, addr, &lax);
    assert!(h.engine.ops().is_open(c));
    // The healthy pair still works.
    h.engine
        .ops()
        .send(gc, b"still here", Priority::High)
        .unwrap();
    let d = h.wait_for("healthy", |m| m.kind == MsgKind::Data && m.id == gs);
    assert_eq!(d.data, b"still here");
}

#[test]
fn client_certificate_required_and_missing_or_present() {
    let ca = Ca::new("mtls ca");
    let (cert, key) = ca.leaf("mtls server", &["localhost"], false);
    let mut so = TlsOptions::server(&cert, &key);
    so.ca = Some(ca.pem());
    let sctx = TlsContext::new(&so).unwrap();
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    // Without a client certificate the server refuses.
    let cid = h
        .engine
        .ops()
        .tls_connect(&Addr::Inet(addr), &client_ctx(&ca), Some("localhost"), 5)
        .unwrap();
    let sid = h.accept(lid);
    expect_error(&mut h, sid, "certificate");
    let m = h.wait_for("client", |m| {
        (m.kind == MsgKind::Error || m.kind == MsgKind::Close) && m.id == cid
    });
    assert_eq!(m.kind, MsgKind::Error, "{m:?}");
    // With one it is accepted and its names are visible to the server.
    let (ccert, ckey) = ca.leaf("client one", &["client.example"], false);
    let mut co = TlsOptions::client();
    co.ca = Some(ca.pem());
    co.cert = Some(ccert);
    co.key = Some(ckey);
    let (_, sid) = pair(&mut h, lid, addr, &TlsContext::new(&co).unwrap());
    let info = h.engine.ops().tls_info(sid).unwrap();
    assert_eq!(
        info.peer_subject.as_deref(),
        Some("CN=client one, O=skysocket tests")
    );
    assert_eq!(info.peer_sans, vec!["DNS:client.example"]);
}

#[test]
fn garbage_stalls_and_truncation_fail_cleanly() {
    let ca = Ca::new("fault ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::with_config(Config {
        tls_handshake_timeout: Some(Duration::from_millis(400)),
        ..Config::default()
    });
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let (gc, gs) = pair(&mut h, lid, addr, &cctx);

    // Plaintext to a TLS port.
    let mut p = peer(addr);
    p.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let sid = h.accept(lid);
    expect_error(&mut h, sid, "tls: handshake failed");
    // The peer got an alert or EOF, never plaintext.
    let mut buf = Vec::new();
    let _ = p.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP"), "{buf:?}");

    // A peer that connects and says nothing: the handshake timeout ends it.
    let _silent = peer(addr);
    let sid = h.accept(lid);
    let t = expect_error(&mut h, sid, "timed out");
    assert!(t.contains("400 ms"), "{t}");

    // A peer that stops mid-handshake (closes after half a ClientHello).
    let mut p = peer(addr);
    let hello = client_hello_bytes(&ca);
    p.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(p);
    let sid = h.accept(lid);
    expect_error(&mut h, sid, "during the handshake");

    // Truncation: a completed session whose peer closes TCP without close_notify.
    let mut s = rustls_client(&ca, "localhost", addr);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = thread::spawn(move || {
        s.write_all(b"partial").unwrap();
        let _ = rx.recv();
        // A FIN without close_notify: what a truncating attacker (or a sloppy
        // peer) sends.
        s.sock.shutdown(std::net::Shutdown::Write).unwrap();
        s
    });
    let sid = h.accept(lid);
    let d = h.wait_for("data", |m| m.kind == MsgKind::Data && m.id == sid);
    assert_eq!(d.data, b"partial");
    tx.send(()).unwrap();
    let _s = t.join().unwrap();
    expect_error(&mut h, sid, "without close_notify");

    // The healthy pair is untouched by all of the above.
    h.engine.ops().send(gs, b"ok", Priority::High).unwrap();
    let d = h.wait_for("healthy", |m| m.kind == MsgKind::Data && m.id == gc);
    assert_eq!(d.data, b"ok");
}

/// The first flight of a real client, captured from an unconnected rustls client.
fn client_hello_bytes(ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert.der().to_vec(),
        ))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let sn = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(cfg), sn).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn write_limit_pause_and_half_close_keep_their_meaning() {
    let ca = Ca::new("limits ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    let (cid, sid) = pair(&mut h, lid, addr, &cctx);
    // Slow reader: the client stops reading; the server's queue hits its limit.
    h.engine.ops().pause(cid).unwrap();
    h.engine.ops().set_limit(sid, 1 << 20).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut refused = false;
    for _ in 0..200 {
        h.step(Duration::from_millis(1));
        if h.engine.ops().send(sid, &chunk, Priority::High).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the write limit applies to TLS sockets");
    // As for plain sockets, a send past the limit drops the socket with an error.
    expect_error(&mut h, sid, "limit");
    h.engine.ops().resume(cid).unwrap();
    let m = h.wait_for("client end", |m| {
        (m.kind == MsgKind::Error || m.kind == MsgKind::Close) && m.id == cid
    });
    assert_eq!(m.id, cid);
    // A fresh pair: pause the reader, queue 2 MiB, resume: everything arrives.
    let (cid, sid) = pair(&mut h, lid, addr, &cctx);
    h.engine.ops().pause(cid).unwrap();
    for _ in 0..32 {
        h.engine.ops().send(sid, &chunk, Priority::High).unwrap();
    }
    h.step(Duration::from_millis(20));
    h.engine.ops().resume(cid).unwrap();
    let queued = 32 * chunk.len();
    // Half-close: the client's close_notify + FIN; the server can still answer.
    h.engine.ops().set_keep_open(sid, true).unwrap();
    h.engine.ops().shutdown_write(cid).unwrap();
    let mut total = 0usize;
    h.pump("client data then server close", |_, m| {
        if m.kind == MsgKind::Data && m.id == cid {
            total += m.data.len();
        }
        m.kind == MsgKind::Close && m.id == sid
    });
    assert!(
        h.engine.ops().is_open(sid),
        "keep_open: half-closed, not closed"
    );
    h.engine.ops().send(sid, b"tail", Priority::High).unwrap();
    h.engine.ops().close(sid, false).unwrap();
    h.pump("tail and close", |_, m| {
        if m.kind == MsgKind::Data && m.id == cid {
            total += m.data.len();
        }
        m.kind == MsgKind::Close && m.id == cid
    });
    assert!(total >= queued + 4, "{total} < {queued} + 4");
    assert_eq!(total % (64 * 1024), 4, "whole sends plus the tail");
}

#[test]
fn connect_by_host_name_verifies_that_name() {
    let ca = Ca::new("host ca");
    let sctx = server_ctx(&ca, &["localhost"]);
    let cctx = client_ctx(&ca);
    let mut h = Harness::new();
    let (lid, addr) = tls_listener(&mut h, &sctx);
    // The name goes through the resolver thread; SNI and verification use it.
    let cid = h
        .engine
        .ops()
        .tls_connect_host("localhost", addr.port(), &cctx, None, 5)
        .unwrap();
    // localhost may resolve to ::1 first, where nothing listens: the next address is
    // tried; the listener is on 127.0.0.1.
    let sid = h.accept(lid);
    h.wait_for("open", |m| m.kind == MsgKind::Open && m.id == cid);
    h.wait_for("server hs", |m| m.kind == MsgKind::Handshake && m.id == sid);
    assert_eq!(
        h.engine.ops().tls_info(sid).unwrap().sni.as_deref(),
        Some("localhost")
    );
    // A server context cannot connect; a client context cannot listen.
    assert!(h
        .engine
        .ops()
        .tls_connect_host("localhost", addr.port(), &sctx, None, 5)
        .is_err());
    assert!(h.engine.ops().tls_listen(lid, &cctx).is_err());
}
