//! Runtime tests with plain Rust bodies (no Lua).

use super::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A body that forwards every message to a channel, answers calls with its
/// arguments, and exits on a `Send` of `"exit"` / spins on `"spin"`.
struct Echo {
    out: mpsc::Sender<(ServiceId, Envelope)>,
    running: Arc<AtomicUsize>,
}

impl Body for Echo {
    fn handle(&mut self, rt: &Runtime, svc: &Arc<Service>, env: Envelope) {
        // Never two threads in one service.
        assert_eq!(self.running.fetch_add(1, Ordering::SeqCst), 0);
        match (&env.kind, env.args.first()) {
            (Kind::Call(s), Some(Val::Str(b))) if &**b == b"raise" => {
                rt.reply(
                    svc,
                    env.from,
                    *s,
                    false,
                    vec![Val::Str(b"raised".to_vec().into())],
                );
            }
            (Kind::Call(s), _) => {
                rt.reply(svc, env.from, *s, true, env.args.clone());
            }
            (Kind::Send, Some(Val::Str(b))) if &**b == b"exit" => svc.request_exit(),
            (Kind::Send, Some(Val::Str(b))) if &**b == b"tick" => {
                std::thread::sleep(Duration::from_millis(1))
            }
            (Kind::Send, Some(Val::Str(b))) if &**b == b"spin" => {
                std::thread::sleep(Duration::from_millis(300))
            }
            _ => {}
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let _ = self.out.send((svc.id(), env));
    }
    fn end_turn(&mut self, _: &Runtime, _: &Arc<Service>) {}
}

fn spawn(rt: &Runtime) -> (ServiceId, mpsc::Receiver<(ServiceId, Envelope)>) {
    let (tx, rx) = mpsc::channel();
    let svc = rt.reserve();
    let body = Echo {
        out: tx,
        running: Arc::new(AtomicUsize::new(0)),
    };
    rt.start(&svc, Box::new(body), vec![Val::Int(7)]);
    let (_, start) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(start.kind, Kind::Start);
    assert_eq!(start.args, vec![Val::Int(7)]);
    (svc.id(), rx)
}

fn send(i: i64, sender: i64) -> Envelope {
    Envelope {
        from: 0,
        kind: Kind::Send,
        args: vec![Val::Int(sender), Val::Int(i)],
    }
}

/// A root whose notify counts wake-ups.
fn root(rt: &Runtime) -> (Arc<Service>, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = wakes.clone();
    let r = rt
        .register_root(Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    (r, wakes)
}

fn wait_mail(rt: &Runtime, r: &Service, n: usize) -> Vec<Envelope> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages",
            got.len()
        );
        got.extend(rt.take_mail(r, usize::MAX));
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

#[test]
fn per_sender_order_with_several_senders() {
    let rt = Runtime::new();
    rt.set_threads(2).unwrap();
    let (id, rx) = spawn(&rt);
    let per = 20_000;
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    rt.post(id, send(i, s)).unwrap();
                }
            })
        })
        .collect();
    for h in senders {
        h.join().unwrap();
    }
    let mut next = [0i64; 4];
    for _ in 0..4 * per {
        let (_, env) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (Val::Int(s), Val::Int(i)) = (&env.args[0], &env.args[1]) else {
            panic!("bad message {env:?}");
        };
        assert_eq!(next[*s as usize], *i, "sender {s} out of order");
        next[*s as usize] += 1;
    }
    rt.shutdown();
}

#[test]
fn calls_answered_and_dead_targets_fail() {
    let rt = Runtime::new();
    rt.set_threads(2).unwrap();
    let (r, wakes) = root(&rt);
    assert!(rt.register_root(Box::new(|| {})).is_err(), "one root");
    let (id, _rx) = spawn(&rt);
    for s in 1..=100 {
        rt.call(r.id(), id, s, vec![Val::Int(s * 10)]).unwrap();
    }
    rt.call(r.id(), id, 101, vec![Val::Str(b"raise".to_vec().into())])
        .unwrap();
    let got = wait_mail(&rt, &r, 101);
    assert!(wakes.load(Ordering::SeqCst) > 0);
    for (i, e) in got.iter().enumerate() {
        let s = i as i64 + 1;
        if s <= 100 {
            assert_eq!(
                e.kind,
                Kind::Reply {
                    session: s,
                    ok: true
                }
            );
            assert_eq!(e.args, vec![Val::Int(s * 10)], "pairs never cross");
        } else {
            assert_eq!(
                e.kind,
                Kind::Reply {
                    session: s,
                    ok: false
                }
            );
        }
    }
    // Exit: later calls fail at once.
    rt.post(
        id,
        Envelope {
            from: r.id(),
            kind: Kind::Send,
            args: vec![Val::Str(b"exit".to_vec().into())],
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.lookup(id).is_some() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rt.call(r.id(), id, 1, vec![]), Err(PostError::Dead(id)));
    rt.remove_root(&r);
    rt.shutdown();
}

#[test]
fn kill_answers_queued_calls_and_spares_others() {
    let rt = Runtime::new();
    rt.set_threads(2).unwrap();
    let (r, _) = root(&rt);
    let (slow, _rx1) = spawn(&rt);
    let (fast, _rx2) = spawn(&rt);
    // The slow one is busy for 300 ms with calls queued behind.
    rt.post(
        slow,
        Envelope {
            from: 0,
            kind: Kind::Send,
            args: vec![Val::Str(b"spin".to_vec().into())],
        },
    )
    .unwrap();
    for s in 1..=3 {
        rt.call(r.id(), slow, s, vec![]).unwrap();
    }
    // The other service keeps serving meanwhile.
    rt.call(r.id(), fast, 10, vec![Val::Bool(true)]).unwrap();
    let got = wait_mail(&rt, &r, 1);
    assert_eq!(
        got[0].kind,
        Kind::Reply {
            session: 10,
            ok: true
        }
    );
    assert!(rt.kill(slow));
    assert!(!rt.kill(slow), "killed once");
    let got = wait_mail(&rt, &r, 3);
    for e in &got {
        assert!(matches!(e.kind, Kind::Reply { ok: false, .. }));
        assert_eq!(
            e.args,
            vec![Val::Str(
                format!("service {slow} is dead").into_bytes().into()
            )]
        );
    }
    assert!(!rt.kill(r.id()), "the root cannot be killed");
    rt.remove_root(&r);
    rt.shutdown();
}

#[test]
fn names_and_timers() {
    let rt = Runtime::new();
    rt.set_threads(1).unwrap();
    let (id, rx) = spawn(&rt);
    rt.register("kv", id);
    assert_eq!(rt.query("kv"), Some(id));
    assert_eq!(rt.query("nope"), None);
    let t0 = Instant::now();
    let late = rt.add_timer(id, Duration::from_millis(60));
    let early = rt.add_timer(id, Duration::from_millis(20));
    let (_, a) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let (_, b) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((a.kind, b.kind), (Kind::Timer(early), Kind::Timer(late)));
    assert!(t0.elapsed() >= Duration::from_millis(60));
    assert!(rt.kill(id));
    assert_eq!(rt.query("kv"), None, "a dead service's name is gone");
    assert!(rt.set_threads(4).is_err(), "pool size fixed once started");
    rt.shutdown();
}

#[test]
fn fairness_busy_service_does_not_starve_another() {
    let rt = Runtime::new();
    rt.set_threads(1).unwrap();
    let (busy, rx_busy) = spawn(&rt);
    let (other, rx_other) = spawn(&rt);
    for _ in 0..300 {
        let tick = Val::Str(b"tick".to_vec().into());
        rt.post(
            busy,
            Envelope {
                from: 0,
                kind: Kind::Send,
                args: vec![tick],
            },
        )
        .unwrap();
    }
    rt.post(other, send(0, 1)).unwrap();
    rx_other.recv_timeout(Duration::from_secs(5)).unwrap();
    // The other service ran long before the busy one's backlog was through.
    let mut done = 0;
    while rx_busy.try_recv().is_ok() {
        done += 1;
    }
    assert!(done < 300, "the busy service ran its whole backlog first");
    rt.shutdown();
}
