//! Fault suite 3: a burst of 500 connections under RLIMIT_NOFILE soft 64. Alone in its
//! binary (the limit is process-wide); the clients run in a child process (this test
//! binary re-executed with `SKYSOCKET_EMFILE_CLIENT=addr`), so the lowered limit only
//! constrains the server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use skysocket::engine::{Config, MsgKind, Priority};
use skysocket::sys::net::{Addr, ListenOptions};
use skysocket::sys::process::{cpu_time, nofile_limit, set_nofile_soft};

const BURST: usize = 500;

/// The child side: open BURST connections, report how many were served ("hi") and
/// how many were shed (EOF/reset), then wait for stdin to close.
#[test]
fn emfile_client_child() {
    let Ok(addr) = std::env::var("SKYSOCKET_EMFILE_CLIENT") else {
        return; // only runs when re-executed by the parent test
    };
    let (_, hard) = nofile_limit().unwrap();
    set_nofile_soft(hard.min(4096)).unwrap();
    let mut conns: Vec<TcpStream> = (0..BURST)
        .map(|_| TcpStream::connect(&addr).expect("child connect"))
        .collect();
    println!("\nconnected {}", conns.len());
    let (mut served, mut shed) = (0, 0);
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 2];
        match c.read(&mut b) {
            Ok(2) if &b == b"hi" => served += 1,
            Ok(0) | Err(_) => shed += 1,
            Ok(_) => shed += 1,
        }
    }
    println!("served {served} shed {shed}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn burst_under_low_descriptor_limit() {
    if std::env::var("SKYSOCKET_EMFILE_CLIENT").is_ok() {
        return;
    }
    let (soft, _) = nofile_limit().unwrap();
    let result = std::panic::catch_unwind(burst);
    set_nofile_soft(soft).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn burst() {
    let mut h = Harness::with_config(Config::default());
    let (lid, local) = h
        .engine
        .ops()
        .listen(
            &Addr::Inet("127.0.0.1:0".parse().unwrap()),
            ListenOptions {
                backlog: 1024,
                reuseport: false,
            },
            7,
        )
        .unwrap();
    let Some(Addr::Inet(addr)) = local else {
        panic!()
    };
    h.engine.ops().start(lid, 7).unwrap();
    let fds_before = open_fds();
    set_nofile_soft(64).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "emfile_client_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SKYSOCKET_EMFILE_CLIENT", addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client process");
    let mut out = BufReader::new(child.stdout.take().unwrap());

    // Serve what we can: every accepted socket gets "hi" and is kept open, so the
    // descriptors stay exhausted; shed connections are reported as listener errors.
    let mut accepted = Vec::new();
    let mut errors = 0usize;
    let mut error_text = String::new();
    let t0 = Instant::now();
    h.pump("burst handled", |e, m| {
        match m.kind {
            MsgKind::Accept if m.id == lid => {
                e.ops().start(m.ud, 7).unwrap();
                e.ops().send(m.ud, b"hi", Priority::High).unwrap();
                accepted.push(m.ud);
            }
            MsgKind::Error if m.id == lid => {
                assert_eq!(m.ud, 1, "the listener stays open");
                errors += 1;
                error_text = m.text();
            }
            _ => {}
        }
        accepted.len() + errors >= BURST
    });
    let burst_secs = t0.elapsed().as_secs_f64();
    // The child's report (skipping the test harness's own lines).
    let mut report = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("connected") {
            report = line.trim().to_string();
        }
        if line.starts_with("served") {
            report = format!("{report}, {}", line.trim());
            break;
        }
        line.clear();
    }
    assert!(error_text.contains("Too many open files"), "{error_text}");
    assert!(
        accepted.len() < 64,
        "accepted {} under a limit of 64",
        accepted.len()
    );

    // Idle while exhausted: the loop must sleep.
    let cpu0 = cpu_time().unwrap();
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        h.step(Duration::from_millis(50));
    }
    let idle_cpu = cpu_time().unwrap() - cpu0;
    assert!(idle_cpu < Duration::from_millis(200), "spun: {idle_cpu:?}");

    // Free the descriptors: the engine serves normally again, under the same limit.
    let n_accepted = accepted.len();
    for id in accepted.drain(..) {
        h.engine.ops().close(id, true).unwrap();
    }
    drop(child.stdin.take());
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    drop(out);
    child.wait().unwrap();
    h.step(Duration::from_millis(10));
    h.backlog.clear();
    let mut served_after = 0;
    for i in 0..20 {
        let mut p = peer(addr);
        let sid = h.accept(lid);
        let msg = format!("again {i}");
        h.engine
            .ops()
            .send(sid, msg.as_bytes(), Priority::High)
            .unwrap();
        assert_eq!(read_exact_n(&mut p, msg.len()), msg.as_bytes());
        h.engine.ops().close(sid, true).unwrap();
        served_after += 1;
    }
    h.step(Duration::from_millis(10));
    let fds_after = open_fds();
    println!(
        "fault_emfile: burst of {BURST} under soft limit 64 in {burst_secs:.2} s: accepted \
         {n_accepted}, listener errors {errors} (\"{error_text}\"), child: {report}; idle CPU \
         over 1 s {:.3} s; served {served_after} afterwards; fds before/after \
         {fds_before}/{fds_after}",
        idle_cpu.as_secs_f64()
    );
    assert_eq!(fds_before, fds_after);
}
