#!/usr/bin/env python3
"""Benchmark runner for skysocket and its peers (stdlib only).

For every (case, server, round) it starts a fresh server pinned to CPU 0,
waits until its port accepts, runs bench/loadgen pinned to CPU 1, parses the
loadgen RESULT line, stops the server, and finally prints a Markdown table of
medians with the ratio of skysocket (callback and coroutine examples) to each
peer. See bench/README.md.
"""

import argparse
import datetime
import json
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
LOADGEN_DIR = os.path.join(BENCH, "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "loadgen")
BUILD = os.path.join(BENCH, "build")
SKY_MAX_ENV = "SKYSOCKET_MAX_SOCKETS"
SKY = ("sky-cb", "sky-co")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ servers

def server_defs(repo, extra_env, lua="lua5.4", module_dir=None):
    """name -> dict(file, argv(port), env, cwd, label). `lua` runs the Lua servers
    (skysocket's, luv's, cqueues'); `module_dir` holds skysocket.so (default
    REPO/target/lua)."""
    lua_env = {
        "LUA_CPATH": f"{module_dir or repo + '/target/lua'}/?.so;;",
        "LUA_PATH": f"{repo}/lua/?.lua;{repo}/lua/?/init.lua;;",
        # The examples' idle timeout (60 s) would cut the held idle connections and
        # costs a timer per read in echo_co.lua; the peers measured have none.
        "SKYSOCKET_IDLE_MS": "0",
    }
    lua_env.update(extra_env)
    srv = os.path.join(BENCH, "servers")
    return {
        "sky-cb": dict(label="skysocket (callback)", file=f"{repo}/examples/echo.lua",
                       argv=lambda p: [lua, "examples/echo.lua", str(p)],
                       env=lua_env, cwd=repo),
        "sky-co": dict(label="skysocket (coroutine)", file=f"{repo}/examples/echo_co.lua",
                       argv=lambda p: [lua, "examples/echo_co.lua", str(p)],
                       env=lua_env, cwd=repo),
        "luv": dict(label=f"luv ({lua})", file=f"{srv}/echo_luv.lua",
                    argv=lambda p: [lua, f"{srv}/echo_luv.lua", str(p)],
                    env={}, cwd=BENCH),
        "cqueues": dict(label=f"cqueues ({lua})", file=f"{srv}/echo_cqueues.lua",
                        argv=lambda p: [lua, f"{srv}/echo_cqueues.lua", str(p)],
                        env={}, cwd=BENCH),
        # For bench/floor/spin.sh: the callback echo plus SKYSOCKET_SPIN empty loop
        # iterations per message (--sky-env SKYSOCKET_SPIN=N).
        "sky-spin": dict(label="skysocket (callback + spin)", file=f"{srv}/echo_spin.lua",
                         argv=lambda p: [lua, f"{srv}/echo_spin.lua", str(p)],
                         env=lua_env, cwd=repo),
        "c": dict(label="C epoll", file=f"{BUILD}/echo_epoll",
                  argv=lambda p: [f"{BUILD}/echo_epoll", str(p)],
                  env={}, cwd=BENCH),
    }


# ------------------------------------------------------------------ cases

def case_defs(duration):
    d = str(duration)
    pp = ["pingpong", "--duration", d]
    return [
        dict(name="pingpong 1 conn x 64 B", key="pp1", args=pp + ["--conns", "1", "--size", "64"],
             metric="msgs_per_s", unit="msg/s", op="msg"),
        dict(name="pingpong 64 conns x 64 B", key="pp64", args=pp + ["--conns", "64", "--size", "64"],
             metric="msgs_per_s", unit="msg/s", op="msg"),
        dict(name="pingpong 1000 conns x 64 B", key="pp1000",
             args=pp + ["--conns", "1000", "--size", "64"],
             metric="msgs_per_s", unit="msg/s", op="msg"),
        dict(name="pingpong 64 conns x 4 KiB", key="pp64x4k",
             args=pp + ["--conns", "64", "--size", "4096"],
             metric="msgs_per_s", unit="msg/s", op="msg"),
        dict(name="stream 8 conns, 16 KiB writes, 256 KiB window", key="stream8",
             args=["stream", "--duration", d, "--conns", "8"],
             metric="mb_per_s", unit="MB/s", op="16 KiB chunk"),
        dict(name="churn 8 parallel connect+echo+close", key="churn",
             args=["churn", "--duration", d, "--conns", "8", "--size", "64"],
             metric="conns_per_s", unit="conn/s", op="conn"),
        dict(name="idle 10,000 conns (server RSS)", key="idle10k",
             args=["idle", "--conns", "10000"],
             metric="bytes_per_conn", unit="B/conn", op=None, lower_better=True),
    ]


def held_case(conns):
    return dict(name=f"held {conns:,} conns", key="held", args=["held", "--conns", str(conns)],
                metric="verified", unit="verified", op=None, only=SKY, nofile=conns + 1000)


# ------------------------------------------------------------------ running

def sh(cmd, **kw):
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def build(skip_cargo):
    os.makedirs(BUILD, exist_ok=True)
    if not skip_cargo:
        sh(["cargo", "build", "--release", "--quiet", "--manifest-path",
            os.path.join(LOADGEN_DIR, "Cargo.toml")])
    src = os.path.join(BENCH, "servers", "echo_epoll.c")
    sh(["gcc", "-O2", "-Wall", "-o", os.path.join(BUILD, "echo_epoll"), src])


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def nofile_preexec(nofile):
    def f():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max(nofile, soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f


def can_raise_nofile(n):
    code = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            return out
    return None


class Ports:
    def __init__(self, base):
        self.next = base

    def get(self):
        # Fresh listening port per run (below the ephemeral range), skipping
        # any port something else holds.
        while True:
            p = self.next
            self.next += 1
            if self.next > 32000:
                self.next = 20000
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
            finally:
                s.close()


def run_one(srv, case, port, args, logf):
    nofile = case.get("nofile", 20000)
    env = dict(os.environ)
    env.update(srv["env"])
    env[SKY_MAX_ENV] = str(max(int(env.get(SKY_MAX_ENV, "0") or 0), nofile))
    proc = subprocess.Popen(["taskset", "-c", "0"] + srv["argv"](port), cwd=srv["cwd"], env=env,
                            stdout=logf, stderr=logf, preexec_fn=nofile_preexec(nofile))
    try:
        if not wait_port(port, proc, 15):
            return None, f"server did not accept on port {port} (exit={proc.poll()})"
        cmd = ["taskset", "-c", "1", LOADGEN] + case["args"] + ["--port", str(port),
                                                               "--server-pid", str(proc.pid)]
        limit = args.duration + 120 + (600 if case["key"] == "held" else 0)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                               preexec_fn=nofile_preexec(nofile))
        except subprocess.TimeoutExpired:
            return None, f"loadgen exceeded {limit} s"
        logf.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n".encode())
        logf.flush()
        res = parse_result(r.stdout)
        if r.returncode != 0 or res is None:
            tail = (r.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            return res, f"loadgen exit {r.returncode}: {tail}"
        if proc.poll() is not None:
            return res, f"server exited during the run (exit={proc.returncode})"
        return res, None
    finally:
        stop(proc)


def med(vals):
    vals = [v for v in vals if isinstance(v, float)]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def table(cases, order, labels, results, missing):
    lines = []
    lines.append("| case | server | median | p50 µs | p99 µs | srv CPU µs/op | srv user µs/op "
                 "| loadgen CPU % | sky-cb ÷ this | sky-co ÷ this |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        rows = results.get(case["key"], {})
        metric = {s: rows[s]["median"].get(case["metric"]) for s in rows if rows[s]["ok"]}
        for s in order:
            if case.get("only") and s not in case["only"]:
                continue
            if s in missing:
                val = f"pending ({missing[s]})"
                lines.append(f"| {case['name']} | {labels[s]} | {val} | | | | | | | |")
                continue
            if s not in rows:
                continue
            r = rows[s]
            if not r["ok"]:
                lines.append(f"| {case['name']} | {labels[s]} | FAILED: {r['error']} | | | | | | | |")
                continue
            m = r["median"]
            digits = 1 if case["metric"] in ("mb_per_s",) else 0
            val = f"{fmt(m.get(case['metric']), digits)} {case['unit']}"
            ratios = []
            for sky in SKY:
                if sky in metric and metric[sky] and metric.get(s):
                    ratios.append(f"{metric[sky] / metric[s]:.2f}")
                else:
                    ratios.append("—")
            us = lambda k: fmt(m[k] / 1000, 2) if m.get(k) is not None else "—"  # noqa: E731
            lines.append(
                f"| {case['name']} | {labels[s]} | {val} | {fmt(m.get('p50_us'), 1)} "
                f"| {fmt(m.get('p99_us'), 1)} | {us('srv_cpu_ns_per_op')} | {us('srv_user_ns_per_op')} "
                f"| {fmt(m.get('lg_cpu_pct'))} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


SPIN = """
import sys, time
end = time.monotonic() + float(sys.argv[1]); last = t0 = time.monotonic(); lost = 0.0
while last < end:
    t = time.monotonic()
    if t - last > 0.0005:
        lost += t - last
    last = t
print(lost / (last - t0))
"""


def cpu_availability(secs=2.0):
    """Spins one process on each of CPU 0 and 1 and returns the fraction of
    wall-clock time they actually ran (a hypervisor that cannot give the
    VM both cores at once shows up here as well below 100 %)."""
    procs = [subprocess.Popen(["taskset", "-c", str(c), sys.executable, "-c", SPIN, str(secs)],
                              stdout=subprocess.PIPE, text=True) for c in (0, 1)]
    lost = []
    for p in procs:
        out, _ = p.communicate(timeout=secs + 30)
        lost.append(float(out.strip() or 1))
    return 1 - max(lost)


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, Linux {os.uname().release}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.path.dirname(BENCH),
                    help="skysocket repo root (default: parent of bench/)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per case (default 3)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per round (default 5)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per case")
    ap.add_argument("--servers", default="sky-cb,sky-co,luv,cqueues,c",
                    help="comma list from sky-cb,sky-co,luv,cqueues,c")
    ap.add_argument("--cases", default=None,
                    help="comma list of case keys (pp1,pp64,pp1000,pp64x4k,stream8,churn,idle10k,held)")
    ap.add_argument("--held", action="store_true",
                    help="also run the held case (skysocket only, heavy)")
    ap.add_argument("--held-conns", type=int, default=100000)
    ap.add_argument("--sky-env", action="append", default=[], metavar="KEY=VALUE",
                    help=f"extra environment for skysocket servers (the runner always sets "
                         f"{SKY_MAX_ENV} to at least the case's connection count + 1000)")
    ap.add_argument("--port-base", type=int, default=21000)
    ap.add_argument("--no-build", action="store_true", help="skip cargo/gcc builds")
    ap.add_argument("--lua", default="lua5.4",
                    help="interpreter for the Lua servers (default lua5.4; e.g. luajit)")
    ap.add_argument("--module-dir", default=None,
                    help="directory of skysocket.so (default REPO/target/lua)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"),
                    help="directory for the JSON, Markdown and server logs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    args.repo = os.path.abspath(args.repo)

    extra_env = {}
    for kv in args.sky_env:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--sky-env needs KEY=VALUE, got {kv!r}")
        extra_env[k] = v

    if not args.no_build or not os.path.exists(LOADGEN):
        build(args.no_build and os.path.exists(LOADGEN))
    defs = server_defs(args.repo, extra_env, args.lua, args.module_dir and os.path.abspath(args.module_dir))
    order = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in order:
        if s not in defs:
            ap.error(f"unknown server {s}")
    labels = {s: defs[s]["label"] for s in defs}
    missing = {}
    for s in order:
        if not os.path.exists(defs[s]["file"]):
            missing[s] = f"{os.path.relpath(defs[s]['file'], args.repo)} not found"
            log(f"SKIP {labels[s]}: {defs[s]['file']} does not exist yet")

    cases = case_defs(args.duration)
    if args.held:
        cases.append(held_case(args.held_conns))
    if args.cases:
        keys = set(args.cases.split(","))
        cases = [c for c in cases if c["key"] in keys]

    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logpath = os.path.join(args.out, f"run-{stamp}.log")
    ports = Ports(args.port_base)
    results = {}
    avail = cpu_availability()
    log(f"CPU availability with both cores busy: {avail:.0%}")
    t_start = time.monotonic()
    with open(logpath, "wb") as logf:
        for case in cases:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            active = []
            for s in order:
                if s in missing or (case.get("only") and s not in case["only"]):
                    continue
                need = case.get("nofile", 0)
                if need > hard and not can_raise_nofile(need):
                    msg = f"skipped: RLIMIT_NOFILE hard limit {hard} < {need} and cannot be raised here"
                    log(f"SKIP {case['name']} / {labels[s]}: {msg}")
                    results.setdefault(case["key"], {})[s] = dict(
                        ok=False, error=msg, rounds=[], median={})
                    continue
                active.append(s)
            # Rounds are interleaved (round 1 of every server, then round 2, ...), so a
            # change in what the shared host gives us affects all servers alike.
            rounds = {s: [] for s in active}
            errors = {s: None for s in active}
            for i in range(args.rounds):
                for s in active:
                    if errors[s]:
                        continue
                    log(f"[{time.monotonic() - t_start:6.0f}s] {case['name']} / {labels[s]} "
                        f"round {i + 1}/{args.rounds}")
                    res, e = run_one(defs[s], case, ports.get(), args, logf)
                    if e:
                        errors[s] = e
                        log(f"  ERROR: {e}")
                        continue
                    rounds[s].append(res)
                    log(f"  {case['metric']}={res.get(case['metric'])} "
                        f"cpu_ns/op={res.get('srv_cpu_ns_per_op', '-')}")
            for s in active:
                keys = {k for r in rounds[s] for k in r}
                median = {k: med([r.get(k) for r in rounds[s]]) for k in keys}
                results.setdefault(case["key"], {})[s] = dict(
                    ok=errors[s] is None, error=errors[s], rounds=rounds[s], median=median)

    avail_end = cpu_availability()
    log(f"CPU availability with both cores busy, after the run: {avail_end:.0%}")
    md = [f"Machine: {machine()}",
          f"Rounds: {args.rounds} x {args.duration:g} s (median shown); server on CPU 0, loadgen on CPU 1; "
          f"repo: {args.repo}",
          f"CPU availability check before the run (both cores spinning, share of wall-clock time "
          f"they actually ran): {avail:.0%} before, {avail_end:.0%} after",
          "",
          table(cases, order, labels, results, missing),
          "",
          "Ratios are skysocket's median divided by that row's median for the case metric "
          "(throughput: > 1 means skysocket is faster; idle B/conn: < 1 means skysocket uses less). "
          "srv CPU = server utime+stime over the measured phase divided by operations "
          "(op = one echoed message; 16 KiB chunk for stream; one connection for churn). "
          "loadgen CPU % = the load generator's own CPU use (of one core) during the phase; "
          "near 100 means the single-threaded client on CPU 1 may be the limit."]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(args.out, f"run-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, f"run-{stamp}.json"), "w") as f:
        json.dump(dict(machine=machine(), cpu_availability=[avail, avail_end], args=vars(args),
                       results=results), f, indent=1)
    log(f"total {time.monotonic() - t_start:.0f} s; raw results and server logs in {args.out}")
    failed = any(not r["ok"] for rows in results.values() for r in rows.values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
