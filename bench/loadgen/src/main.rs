//! loadgen: a single-threaded, epoll-driven load generator for loopback echo
//! servers. Every byte sent is drawn from a per-connection pseudo-random
//! stream and every byte echoed back is compared against it; a mismatch
//! aborts with exit status 2. Every phase has a time bound.
//!
//! Exit status: 0 ok, 1 usage, 2 echoed data mismatch, 3 connection errors or
//! a phase ran out of time, 4 resource limits too low for the request.

mod net;

use std::process::exit;
use std::time::{Duration, Instant};

const PAT_LEN: usize = 65521; // prime, so streams of different conns do not align
const MAX_IO: usize = 65536;
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const ERRHUP: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    PingPong,
    Stream,
    Churn,
    Idle,
    Held,
}

struct Opts {
    mode: Mode,
    port: u16,
    conns: usize,
    size: usize,
    duration: f64,
    messages: Option<u64>,
    chunk: usize,
    window: u64,
    server_pid: Option<u32>,
    sources: Option<usize>,
    max_inflight: usize,
    connect_timeout: f64,
    settle: f64,
}

const USAGE: &str = "\
usage: loadgen MODE --port P [options]
modes:
  pingpong  N conns, one S-byte message outstanding per conn: msgs/s, p50/p99 RTT
  stream    N conns writing CHUNK-byte writes with WINDOW bytes in flight: MB/s
  churn     N parallel slots of connect, one S-byte echo, close: conns/s
  idle      open N conns (each verified by one echo), hold, read server VmRSS
  held      like idle, for very many conns spread over several source addresses
options:
  --port P              server port on 127.0.0.1 (required)
  --conns N             connections (pingpong 64, stream 8, churn 1, idle 10000, held 100000)
  --size S              message size in bytes, 1..65536 (default 64)
  --duration SECS       measured phase length; with --messages, a time limit (default 5)
  --messages N          pingpong: stop after exactly N round trips
  --chunk B             stream write size (default 16384)
  --window B            stream bytes outstanding per conn (default 262144)
  --server-pid PID      read server CPU time (/proc/PID/stat) and VmRSS
  --sources K           bind to 127.0.0.2 .. 127.0.0.(K+1) round-robin before
                        connect (default: none; churn 4; held 1 per 20000 conns)
  --max-inflight N      connects not yet verified at any time (default 256)
  --connect-timeout S   limit for opening and verifying all conns (default 60)
  --settle SECS         idle/held: wait before reading VmRSS (default 1)
";

fn usage_exit(msg: &str) -> ! {
    eprintln!("loadgen: {msg}\n{USAGE}");
    exit(1)
}

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        print!("{USAGE}");
        exit(if args.is_empty() { 1 } else { 0 });
    }
    let mode = match args[0].as_str() {
        "pingpong" => Mode::PingPong,
        "stream" => Mode::Stream,
        "churn" => Mode::Churn,
        "idle" => Mode::Idle,
        "held" => Mode::Held,
        m => usage_exit(&format!("unknown mode {m:?}")),
    };
    let mut o = Opts {
        mode,
        port: 0,
        conns: match mode {
            Mode::PingPong => 64,
            Mode::Stream => 8,
            Mode::Churn => 1,
            Mode::Idle => 10_000,
            Mode::Held => 100_000,
        },
        size: 64,
        duration: 5.0,
        messages: None,
        chunk: 16384,
        window: 262_144,
        server_pid: None,
        sources: None,
        max_inflight: 256,
        connect_timeout: 60.0,
        settle: 1.0,
    };
    let mut i = 1;
    while i < args.len() {
        let flag = args[i].as_str();
        let val = args
            .get(i + 1)
            .unwrap_or_else(|| usage_exit(&format!("{flag} needs a value")));
        fn num<T: std::str::FromStr>(flag: &str, v: &str) -> T {
            v.parse()
                .unwrap_or_else(|_| usage_exit(&format!("bad value {v:?} for {flag}")))
        }
        match flag {
            "--port" => o.port = num(flag, val),
            "--conns" => o.conns = num(flag, val),
            "--size" => o.size = num(flag, val),
            "--duration" => o.duration = num(flag, val),
            "--messages" => o.messages = Some(num(flag, val)),
            "--chunk" => o.chunk = num(flag, val),
            "--window" => o.window = num(flag, val),
            "--server-pid" => o.server_pid = Some(num(flag, val)),
            "--sources" => o.sources = Some(num(flag, val)),
            "--max-inflight" => o.max_inflight = num(flag, val),
            "--connect-timeout" => o.connect_timeout = num(flag, val),
            "--settle" => o.settle = num(flag, val),
            _ => usage_exit(&format!("unknown option {flag}")),
        }
        i += 2;
    }
    if o.port == 0 {
        usage_exit("--port is required");
    }
    if o.conns == 0 || o.max_inflight == 0 {
        usage_exit("--conns and --max-inflight must be positive");
    }
    if o.size == 0 || o.size > MAX_IO || o.chunk == 0 || o.chunk > MAX_IO {
        usage_exit("--size and --chunk must be in 1..=65536");
    }
    if o.window < o.chunk as u64 {
        usage_exit("--window must be at least --chunk");
    }
    if !(o.duration > 0.0 && o.duration <= 86400.0) {
        usage_exit("--duration must be in (0, 86400]");
    }
    if o.messages == Some(0) || (o.messages.is_some() && o.mode != Mode::PingPong) {
        usage_exit("--messages needs a positive count and pingpong mode");
    }
    o
}

// ---------------------------------------------------------------- data

/// A fixed pseudo-random byte sequence; connection `c` sends, at stream
/// offset `p`, the byte `pat[(seed(c) + p) % PAT_LEN]`.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Pattern {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(PAT_LEN + MAX_IO);
        for _ in 0..PAT_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push((x >> 24) as u8);
        }
        for i in 0..MAX_IO {
            v.push(v[i]);
        }
        Pattern(v)
    }

    fn at(&self, seed: usize, pos: u64, len: usize) -> &[u8] {
        let off = ((seed as u64 + pos) % PAT_LEN as u64) as usize;
        &self.0[off..off + len]
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum St {
    Free,
    Connecting,
    Echo,
    Ready,
    Dead,
}

struct Conn {
    fd: i32,
    seed: usize,
    sent: u64,
    recvd: u64,
    target: u64,
    t_start: Instant,
    st: St,
    out: bool,
}

impl Conn {
    fn new(i: usize) -> Conn {
        Conn {
            fd: -1,
            seed: (i.wrapping_mul(7919)) % PAT_LEN,
            sent: 0,
            recvd: 0,
            target: 0,
            t_start: Instant::now(),
            st: St::Free,
            out: false,
        }
    }

    fn kill(&mut self) {
        if self.fd >= 0 {
            net::close(self.fd);
        }
        self.fd = -1;
        self.st = St::Dead;
        self.out = false;
    }
}

#[derive(Default)]
struct Errs {
    refused: u64,
    reset: u64,
    eof: u64,
    timeout: u64,
    other: u64,
    last: String,
}

impl Errs {
    fn total(&self) -> u64 {
        self.refused + self.reset + self.eof + self.timeout + self.other
    }

    /// Records errno `e` (0 = unexpected EOF) seen while doing `what`.
    fn add(&mut self, e: i32, what: &str) {
        match e {
            0 => self.eof += 1,
            libc::ECONNREFUSED => self.refused += 1,
            libc::ECONNRESET | libc::EPIPE => self.reset += 1,
            libc::ETIMEDOUT => self.timeout += 1,
            _ => self.other += 1,
        }
        if self.last.is_empty() || self.total() <= 3 {
            let msg = if e == 0 {
                "connection closed by server".to_string()
            } else {
                net::strerror(e)
            };
            if self.total() <= 3 {
                eprintln!("loadgen: {what}: {msg}");
            }
            self.last = format!("{what}: {msg}");
        }
    }

    fn add_timeout(&mut self, count: u64, what: &str) {
        if count > 0 {
            self.timeout += count;
            self.last = format!("{what}: {count} timed out");
            eprintln!("loadgen: {}", self.last);
        }
    }

    fn fields(&self) -> String {
        format!(
            "errors={} refused={} reset={} eof={} timeout={} other={}",
            self.total(),
            self.refused,
            self.reset,
            self.eof,
            self.timeout,
            self.other
        )
    }
}

fn mismatch(idx: usize, pos: u64, want: u8, got: u8, what: &str) -> ! {
    println!("RESULT mode=error kind=mismatch conn={idx} offset={pos} expected={want} got={got}");
    eprintln!(
        "loadgen: DATA MISMATCH on conn {idx} at stream offset {pos}: \
         expected byte {want:#04x}, got {got:#04x} ({what})"
    );
    exit(2)
}

struct Ctx {
    ep: net::Epoll,
    pat: Pattern,
    buf: Vec<u8>,
    errs: Errs,
    port: u16,
    sources: Vec<u32>,
    next_src: usize,
}

impl Ctx {
    fn connect(&mut self) -> Result<i32, i32> {
        let src = if self.sources.is_empty() {
            None
        } else {
            self.next_src = (self.next_src + 1) % self.sources.len();
            Some(self.sources[self.next_src])
        };
        net::connect_nb(self.port, src)
    }
}

/// Writes pattern bytes until `c.target` or EAGAIN, keeping the EPOLLOUT
/// interest in step. Err(errno) on a failed write.
fn pump_write(
    ep: &net::Epoll,
    pat: &Pattern,
    c: &mut Conn,
    tok: usize,
    chunk: usize,
) -> Result<(), i32> {
    let mut blocked = false;
    while c.sent < c.target {
        let n = ((c.target - c.sent) as usize).min(chunk);
        match net::write(c.fd, pat.at(c.seed, c.sent, n)) {
            Ok(k) => c.sent += k as u64,
            Err(libc::EAGAIN) => {
                blocked = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if blocked != c.out {
        c.out = blocked;
        let ev = if blocked { IN | OUT } else { IN };
        ep.modify(c.fd, tok as u64, ev)?;
    }
    Ok(())
}

/// One read(2); verifies the bytes against the pattern. Ok(n) bytes taken
/// (0 = nothing available), Err(errno) or Err(0) on EOF.
fn pump_read(pat: &Pattern, buf: &mut [u8], c: &mut Conn, idx: usize) -> Result<usize, i32> {
    let n = match net::read(c.fd, buf) {
        Ok(0) => return Err(0),
        Ok(n) => n,
        Err(libc::EAGAIN) => return Ok(0),
        Err(e) => return Err(e),
    };
    if c.recvd + n as u64 > c.sent {
        let extra = (c.recvd + n as u64 - c.sent) as usize;
        let pos = c.sent;
        mismatch(
            idx,
            pos,
            0,
            buf[n - extra],
            "server sent more bytes than it was sent",
        );
    }
    let want = pat.at(c.seed, c.recvd, n);
    if want != &buf[..n] {
        let j = (0..n).find(|&j| want[j] != buf[j]).unwrap_or(0);
        mismatch(idx, c.recvd + j as u64, want[j], buf[j], "echo differs");
    }
    c.recvd += n as u64;
    Ok(n)
}

/// Opens `n` connections (at most `max_inflight` unverified at a time) and
/// has each echo `hello` bytes. Failed connections are left St::Dead and
/// recorded in ctx.errs.
fn establish(
    ctx: &mut Ctx,
    n: usize,
    hello: usize,
    max_inflight: usize,
    deadline: Instant,
) -> Vec<Conn> {
    let mut conns: Vec<Conn> = (0..n).map(Conn::new).collect();
    let (mut next, mut inflight, mut ready, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut last_report = Instant::now();
    while ready + failed < n {
        if Instant::now() >= deadline {
            let mut late = 0;
            for c in conns.iter_mut() {
                if matches!(c.st, St::Free | St::Connecting | St::Echo) {
                    c.kill();
                    late += 1;
                }
            }
            ctx.errs.add_timeout(late, "connect+verify phase");
            break;
        }
        while inflight < max_inflight && next < n {
            let i = next;
            next += 1;
            match ctx.connect() {
                Ok(fd) => {
                    conns[i].fd = fd;
                    conns[i].st = St::Connecting;
                    if let Err(e) = ctx.ep.add(fd, i as u64, IN | OUT) {
                        ctx.errs.add(e, "epoll_ctl");
                        conns[i].kill();
                        failed += 1;
                        continue;
                    }
                    inflight += 1;
                }
                Err(e) => {
                    ctx.errs.add(e, "connect");
                    conns[i].st = St::Dead;
                    failed += 1;
                    if matches!(e, libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL) {
                        // Out of descriptors or ports: the rest would fail too.
                        let rest = (n - next) as u64;
                        ctx.errs.other += rest;
                        failed += n - next;
                        next = n;
                    }
                }
            }
        }
        for (tok, ev) in ctx.ep.wait(deadline, 100) {
            let i = tok as usize;
            let c = &mut conns[i];
            let mut err: Option<(i32, &str)> = None;
            match c.st {
                St::Connecting => {
                    let e = net::take_error(c.fd);
                    if e != 0 {
                        err = Some((e, "connect"));
                    } else if ev & (OUT | ERRHUP) != 0 {
                        c.st = St::Echo;
                        c.target = c.sent + hello as u64;
                        c.out = true; // registered with IN|OUT
                        if let Err(e) = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO) {
                            err = Some((e, "write"));
                        }
                    }
                }
                St::Echo => {
                    if ev & OUT != 0 {
                        if let Err(e) = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO) {
                            err = Some((e, "write"));
                        }
                    }
                    if err.is_none() && ev & (IN | ERRHUP) != 0 {
                        match pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                            Err(e) => err = Some((e, "read")),
                            Ok(_) if c.recvd == c.target => {
                                c.st = St::Ready;
                                inflight -= 1;
                                ready += 1;
                            }
                            Ok(_) => {}
                        }
                    }
                }
                St::Ready => {
                    // A held connection woke up: the server closed or reset it
                    // (unsolicited bytes are caught as a mismatch).
                    if let Err(e) = pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                        ctx.errs.add(e, "held connection");
                        c.kill();
                        ready -= 1;
                        failed += 1;
                    }
                    continue;
                }
                _ => continue,
            }
            if let Some((e, what)) = err {
                ctx.errs.add(e, what);
                c.kill();
                inflight -= 1;
                failed += 1;
            }
        }
        if n >= 20_000 && last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("# {ready}/{n} connections verified");
            last_report = Instant::now();
        }
    }
    conns
}

struct Cpu {
    pid: Option<u32>,
    start: Option<(u64, u64)>,
    own: Option<(u64, u64)>,
    t0: Instant,
}

impl Cpu {
    fn start(pid: Option<u32>) -> Cpu {
        Cpu {
            pid,
            start: pid.and_then(net::proc_cpu),
            own: net::proc_cpu(std::process::id()),
            t0: Instant::now(),
        }
    }

    /// RESULT field: the load generator's own CPU use over the phase, in %
    /// of one core (near 100 means the client, not the server, may be the
    /// bottleneck).
    fn own_field(&self) -> String {
        let (Some((u0, s0)), Some((u1, s1))) = (self.own, net::proc_cpu(std::process::id())) else {
            return String::new();
        };
        let secs = ((u1 + s1) - (u0 + s0)) as f64 / net::clk_tck();
        format!(
            " lg_cpu_pct={:.0}",
            100.0 * secs / self.t0.elapsed().as_secs_f64()
        )
    }

    /// RESULT fields for server CPU seconds (total, user) and per-op ns.
    fn fields(&self, ops: f64) -> String {
        let own = self.own_field();
        let (Some(pid), Some((u0, s0))) = (self.pid, self.start) else {
            return own;
        };
        let Some((u1, s1)) = net::proc_cpu(pid) else {
            return format!("{own} srv_cpu=unavailable");
        };
        let tck = net::clk_tck();
        let user = (u1 - u0) as f64 / tck;
        let total = user + (s1 - s0) as f64 / tck;
        let per = |x: f64| if ops > 0.0 { x * 1e9 / ops } else { 0.0 };
        format!(
            "{own} srv_cpu_s={total:.2} srv_user_s={user:.2} srv_cpu_ns_per_op={:.0} srv_user_ns_per_op={:.0}",
            per(total),
            per(user)
        )
    }
}

fn require_all(ctx: &Ctx, o: &Opts, conns: &[Conn], secs: f64) {
    let ok = conns.iter().filter(|c| c.st == St::Ready).count();
    if ok < conns.len() {
        println!(
            "RESULT mode={} phase=connect conns={} verified={ok} secs={secs:.2} {}",
            mode_name(o.mode),
            conns.len(),
            ctx.errs.fields()
        );
        eprintln!(
            "loadgen: only {ok} of {} connections opened and echoed (last error: {})",
            conns.len(),
            ctx.errs.last
        );
        exit(3);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1] as f64 / 1000.0
}

fn finish(ctx: &Ctx) -> ! {
    if ctx.errs.total() > 0 {
        eprintln!("loadgen: FAILED with errors ({})", ctx.errs.last);
        exit(3);
    }
    exit(0)
}

// ---------------------------------------------------------------- modes

fn pingpong(ctx: &mut Ctx, o: &Opts) -> ! {
    let t_conn = Instant::now();
    let deadline = t_conn + Duration::from_secs_f64(o.connect_timeout);
    let mut conns = establish(ctx, o.conns, o.size, o.max_inflight, deadline);
    require_all(ctx, o, &conns, t_conn.elapsed().as_secs_f64());

    let cpu = Cpu::start(o.server_pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let limit = o.messages.unwrap_or(u64::MAX);
    let mut lat: Vec<u64> = Vec::with_capacity(1 << 20);
    let (mut issued, mut done) = (0u64, 0u64);
    let mut live = conns.len();

    let start = |ctx: &mut Ctx, c: &mut Conn, i: usize, now: Instant| -> Result<(), i32> {
        c.st = St::Echo;
        c.target = c.sent + o.size as u64;
        c.t_start = now;
        pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO)
    };
    for (i, c) in conns.iter_mut().enumerate() {
        if issued < limit {
            issued += 1;
            if let Err(e) = start(ctx, c, i, Instant::now()) {
                ctx.errs.add(e, "write");
                c.kill();
                live -= 1;
            }
        }
    }
    let mut timed_out = false;
    let t_end = loop {
        let now = Instant::now();
        if done >= limit {
            break now;
        }
        if now >= end {
            timed_out = o.messages.is_some();
            break now;
        }
        if live == 0 {
            break now;
        }
        for (tok, ev) in ctx.ep.wait(end, 100) {
            let i = tok as usize;
            let c = &mut conns[i];
            if c.st == St::Dead {
                continue;
            }
            let mut res = Ok(());
            if ev & OUT != 0 {
                res = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO);
            }
            if res.is_ok() && ev & (IN | ERRHUP) != 0 {
                match pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                    Err(e) => res = Err(e),
                    Ok(_) if c.st == St::Echo && c.recvd == c.target => {
                        let now = Instant::now();
                        lat.push((now - c.t_start).as_nanos() as u64);
                        done += 1;
                        c.st = St::Ready;
                        if issued < limit && now < end {
                            issued += 1;
                            res = start(ctx, c, i, now);
                        }
                    }
                    Ok(_) => {}
                }
            }
            if let Err(e) = res {
                ctx.errs.add(e, "echo");
                c.kill();
                live -= 1;
            }
        }
    };
    let secs = (t_end - t0).as_secs_f64();
    if timed_out {
        ctx.errs.add_timeout(
            limit - done,
            "--messages round trips not completed in --duration",
        );
    }
    lat.sort_unstable();
    let (p50, p99, p999) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
    );
    let rate = done as f64 / secs;
    println!(
        "{} conns x {} B: {done} round trips in {secs:.2} s = {rate:.0} msg/s; \
         RTT p50 {p50:.1} us, p99 {p99:.1} us, p99.9 {p999:.1} us; every byte verified",
        o.conns, o.size
    );
    println!(
        "RESULT mode=pingpong conns={} size={} msgs={done} secs={secs:.3} msgs_per_s={rate:.0} \
         p50_us={p50:.1} p99_us={p99:.1} p999_us={p999:.1} ops={done} {}{}",
        o.conns,
        o.size,
        ctx.errs.fields(),
        cpu.fields(done as f64)
    );
    finish(ctx)
}

fn stream(ctx: &mut Ctx, o: &Opts) -> ! {
    let t_conn = Instant::now();
    let deadline = t_conn + Duration::from_secs_f64(o.connect_timeout);
    let mut conns = establish(ctx, o.conns, 64, o.max_inflight, deadline);
    require_all(ctx, o, &conns, t_conn.elapsed().as_secs_f64());

    let cpu = Cpu::start(o.server_pid);
    let base: u64 = conns.iter().map(|c| c.recvd).sum();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let mut live = conns.len();
    for (i, c) in conns.iter_mut().enumerate() {
        c.st = St::Echo;
        c.target = c.recvd + o.window;
        if let Err(e) = pump_write(&ctx.ep, &ctx.pat, c, i, o.chunk) {
            ctx.errs.add(e, "write");
            c.kill();
            live -= 1;
        }
    }
    let mut draining = false;
    let mut t_end = t0;
    let mut echoed = 0;
    let drain_end = |t: Instant| t + Duration::from_secs(10);
    let mut limit = end;
    loop {
        let now = Instant::now();
        if !draining && now >= end {
            // Measurement over: stop sending, then check that everything
            // already sent comes back (bounded).
            draining = true;
            t_end = now;
            echoed = conns.iter().map(|c| c.recvd).sum::<u64>() - base;
            limit = drain_end(now);
            for c in conns.iter_mut() {
                c.target = c.sent;
            }
        }
        if draining && conns.iter().all(|c| c.st == St::Dead || c.recvd == c.sent) {
            break;
        }
        if now >= limit || live == 0 {
            if draining {
                let short = conns
                    .iter()
                    .filter(|c| c.st != St::Dead && c.recvd < c.sent)
                    .count();
                ctx.errs
                    .add_timeout(short as u64, "drain: echo of bytes sent");
            } else {
                t_end = now;
                echoed = conns.iter().map(|c| c.recvd).sum::<u64>() - base;
            }
            break;
        }
        for (tok, ev) in ctx.ep.wait(limit, 100) {
            let i = tok as usize;
            let c = &mut conns[i];
            if c.st == St::Dead {
                continue;
            }
            let mut res = Ok(());
            if ev & (IN | ERRHUP) != 0 {
                match pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                    Err(e) => res = Err(e),
                    Ok(_) if !draining => c.target = c.recvd + o.window,
                    Ok(_) => {}
                }
            }
            if res.is_ok() && (ev & OUT != 0 || c.sent < c.target) {
                res = pump_write(&ctx.ep, &ctx.pat, c, i, o.chunk);
            }
            if let Err(e) = res {
                ctx.errs.add(e, "stream");
                c.kill();
                live -= 1;
            }
        }
    }
    let secs = (t_end - t0).as_secs_f64();
    let mbps = echoed as f64 / secs / 1e6;
    let chunks = echoed as f64 / o.chunk as f64;
    println!(
        "{} conns, {} B writes, {} B window: {echoed} bytes echoed in {secs:.2} s = {mbps:.1} MB/s; \
         every byte verified",
        o.conns, o.chunk, o.window
    );
    println!(
        "RESULT mode=stream conns={} chunk={} window={} bytes={echoed} secs={secs:.3} \
         mb_per_s={mbps:.1} ops={chunks:.0} {}{}",
        o.conns,
        o.chunk,
        o.window,
        ctx.errs.fields(),
        cpu.fields(chunks)
    );
    finish(ctx)
}

fn churn(ctx: &mut Ctx, o: &Opts) -> ! {
    let cpu = Cpu::start(o.server_pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let mut slots: Vec<Conn> = (0..o.conns).map(Conn::new).collect();
    let mut done = 0u64;
    let mut lat: Vec<u64> = Vec::with_capacity(1 << 18);
    let max_errors = 1000;
    let t_end = loop {
        let now = Instant::now();
        if now >= end || ctx.errs.total() >= max_errors {
            break now;
        }
        for (i, c) in slots.iter_mut().enumerate() {
            if matches!(c.st, St::Free | St::Dead) {
                c.sent = 0;
                c.recvd = 0;
                c.out = true;
                c.t_start = Instant::now();
                match ctx.connect() {
                    Ok(fd) => {
                        c.fd = fd;
                        c.st = St::Connecting;
                        if let Err(e) = ctx.ep.add(fd, i as u64, IN | OUT) {
                            ctx.errs.add(e, "epoll_ctl");
                            c.kill();
                        }
                    }
                    Err(e) => {
                        ctx.errs.add(e, "connect");
                        c.st = St::Dead;
                    }
                }
            }
        }
        for (tok, ev) in ctx.ep.wait(end, 100) {
            let i = tok as usize;
            let c = &mut slots[i];
            let mut res: Result<(), (i32, &str)> = Ok(());
            match c.st {
                St::Connecting => {
                    let e = net::take_error(c.fd);
                    if e != 0 {
                        res = Err((e, "connect"));
                    } else if ev & (OUT | ERRHUP) != 0 {
                        c.st = St::Echo;
                        c.target = o.size as u64;
                        res = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO).map_err(|e| (e, "write"));
                    }
                }
                St::Echo => {
                    if ev & OUT != 0 {
                        res = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO).map_err(|e| (e, "write"));
                    }
                    if res.is_ok() && ev & (IN | ERRHUP) != 0 {
                        match pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                            Err(e) => res = Err((e, "read")),
                            Ok(_) if c.recvd == c.target => {
                                lat.push(c.t_start.elapsed().as_nanos() as u64);
                                net::close(c.fd);
                                c.fd = -1;
                                c.st = St::Free;
                                done += 1;
                            }
                            Ok(_) => {}
                        }
                    }
                }
                _ => {}
            }
            if let Err((e, what)) = res {
                ctx.errs.add(e, what);
                c.kill();
            }
        }
    };
    for c in slots.iter_mut() {
        if c.fd >= 0 {
            c.kill();
        }
    }
    let secs = (t_end - t0).as_secs_f64();
    let rate = done as f64 / secs;
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "{} parallel slots: {done} connect+echo({} B)+close cycles in {secs:.2} s = {rate:.0} conns/s; \
         cycle p50 {p50:.1} us, p99 {p99:.1} us",
        o.conns, o.size
    );
    println!(
        "RESULT mode=churn conns={} size={} cycles={done} secs={secs:.3} conns_per_s={rate:.0} \
         p50_us={p50:.1} p99_us={p99:.1} ops={done} {}{}",
        o.conns,
        o.size,
        ctx.errs.fields(),
        cpu.fields(done as f64)
    );
    finish(ctx)
}

/// idle and held: open many connections, hold them, measure server RSS,
/// then check that every one of them still echoes.
fn hold(ctx: &mut Ctx, o: &Opts) -> ! {
    let need = o.conns as u64 + 64;
    let got = net::raise_nofile(need);
    if got < need {
        println!(
            "RESULT mode={} conns={} phase=setup error=nofile_limit limit={got} {}",
            mode_name(o.mode),
            o.conns,
            ctx.errs.fields()
        );
        eprintln!(
            "loadgen: RLIMIT_NOFILE can only be raised to {got}, {need} needed \
             (the hard limit is fixed for this process; raise it as root before starting)"
        );
        exit(4);
    }
    let rss0 = o.server_pid.and_then(net::proc_rss_kib);
    let t_conn = Instant::now();
    let deadline = t_conn + Duration::from_secs_f64(o.connect_timeout);
    let mut conns = establish(ctx, o.conns, 16, o.max_inflight, deadline);
    let connect_secs = t_conn.elapsed().as_secs_f64();
    require_all(ctx, o, &conns, connect_secs);
    println!(
        "{} connections opened and each verified by one echo in {connect_secs:.2} s ({:.0} conns/s)",
        o.conns,
        o.conns as f64 / connect_secs
    );

    // Hold them; any wake-up now is a close or reset by the server.
    let settle_end = Instant::now() + Duration::from_secs_f64(o.settle);
    while Instant::now() < settle_end {
        for (tok, _) in ctx.ep.wait(settle_end, 100) {
            let i = tok as usize;
            let c = &mut conns[i];
            if c.st == St::Ready {
                if let Err(e) = pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                    ctx.errs.add(e, "held connection");
                    c.kill();
                }
            }
        }
    }
    let rss1 = o.server_pid.and_then(net::proc_rss_kib);

    // Second echo on every connection, all at once.
    let t_v = Instant::now();
    let v_end = t_v + Duration::from_secs_f64(o.connect_timeout);
    let mut pending = 0usize;
    for (i, c) in conns.iter_mut().enumerate() {
        if c.st != St::Ready {
            continue;
        }
        c.st = St::Echo;
        c.target = c.sent + 16;
        match pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO) {
            Ok(()) => pending += 1,
            Err(e) => {
                ctx.errs.add(e, "write");
                c.kill();
            }
        }
    }
    while pending > 0 && Instant::now() < v_end {
        for (tok, ev) in ctx.ep.wait(v_end, 100) {
            let i = tok as usize;
            let c = &mut conns[i];
            if c.st != St::Echo {
                continue;
            }
            let mut res = Ok(());
            if ev & OUT != 0 {
                res = pump_write(&ctx.ep, &ctx.pat, c, i, MAX_IO);
            }
            if res.is_ok() && ev & (IN | ERRHUP) != 0 {
                match pump_read(&ctx.pat, &mut ctx.buf, c, i) {
                    Err(e) => res = Err(e),
                    Ok(_) if c.recvd == c.target => {
                        c.st = St::Ready;
                        pending -= 1;
                    }
                    Ok(_) => {}
                }
            }
            if let Err(e) = res {
                ctx.errs.add(e, "second echo");
                c.kill();
                pending -= 1;
            }
        }
    }
    ctx.errs.add_timeout(pending as u64, "second echo");
    let verified = conns.iter().filter(|c| c.st == St::Ready).count();
    let verify_secs = t_v.elapsed().as_secs_f64();
    println!(
        "{verified} of {} connections echoed again after holding ({verify_secs:.2} s)",
        o.conns
    );
    let mut rss = String::new();
    if let (Some(a), Some(b)) = (rss0, rss1) {
        let per = (b as f64 - a as f64) * 1024.0 / o.conns as f64;
        println!(
            "server VmRSS {a} KiB before, {b} KiB while holding: {per:.0} bytes per connection"
        );
        rss = format!(" rss_before_kib={a} rss_after_kib={b} bytes_per_conn={per:.0}");
    } else if o.server_pid.is_some() {
        rss = " rss=unavailable".into();
    }
    println!(
        "RESULT mode={} conns={} sources={} connect_secs={connect_secs:.3} conns_per_s={:.0} \
         verified={verified} verify_secs={verify_secs:.3}{rss} {}",
        mode_name(o.mode),
        o.conns,
        ctx.sources.len(),
        o.conns as f64 / connect_secs,
        ctx.errs.fields()
    );
    for c in conns.iter_mut() {
        if c.fd >= 0 {
            c.kill();
        }
    }
    finish(ctx)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::PingPong => "pingpong",
        Mode::Stream => "stream",
        Mode::Churn => "churn",
        Mode::Idle => "idle",
        Mode::Held => "held",
    }
}

fn main() {
    let o = parse_opts();
    let nsrc = o.sources.unwrap_or(match o.mode {
        Mode::Churn => 4,
        Mode::Held => o.conns.div_ceil(20_000),
        _ => 0,
    });
    if nsrc > 250 {
        usage_exit("--sources must be at most 250");
    }
    if o.mode != Mode::Idle && o.mode != Mode::Held {
        let need = o.conns as u64 + 64;
        let got = net::raise_nofile(need);
        if got < need {
            eprintln!("loadgen: RLIMIT_NOFILE is {got}, {need} needed");
            exit(4);
        }
    }
    let mut ctx = Ctx {
        ep: net::Epoll::new(1024),
        pat: Pattern::new(),
        buf: vec![0u8; MAX_IO],
        errs: Errs::default(),
        port: o.port,
        sources: (0..nsrc as u32).map(|k| net::loopback(2 + k)).collect(),
        next_src: 0,
    };
    match o.mode {
        Mode::PingPong => pingpong(&mut ctx, &o),
        Mode::Stream => stream(&mut ctx, &o),
        Mode::Churn => churn(&mut ctx, &o),
        Mode::Idle | Mode::Held => hold(&mut ctx, &o),
    }
}
