#!/usr/bin/env python3
"""Drive headless Chromium over the DevTools protocol: open a page, wait until a
JavaScript expression is truthy, print the page's text, save a screenshot.

    cdp.py URL EXPRESSION SCREENSHOT.png [TIMEOUT_S]

Exits 0 when EXPRESSION became truthy, 1 on timeout (the page text is printed either
way). Chromium is started with a fresh profile and killed at the end.
"""
import base64, json, os, shutil, subprocess, sys, tempfile, time

from websockets.sync.client import connect

url, expr, shot = sys.argv[1], sys.argv[2], sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if not chromium:
    print("no chromium"); sys.exit(2)
profile = tempfile.mkdtemp(prefix="skysocket-chromium-")
proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--user-data-dir=" + profile, "--remote-debugging-port=0",
                         "--remote-debugging-address=127.0.0.1", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ok = False
try:
    portfile = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + timeout
    while not os.path.exists(portfile) or len(open(portfile).read().split("\n")) < 2:
        if time.time() > deadline or proc.poll() is not None:
            print("chromium did not start"); sys.exit(1)
        time.sleep(0.05)
    port, path = open(portfile).read().split("\n")[:2]
    with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10) as ws:
        seq = [0]
        def call(method, params=None, session=None):
            seq[0] += 1
            msg = {"id": seq[0], "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            ws.send(json.dumps(msg))
            while True:
                r = json.loads(ws.recv(timeout=max(1.0, deadline - time.time())))
                if r.get("id") == seq[0]:
                    if "error" in r:
                        raise RuntimeError(r["error"])
                    return r["result"]
        target = call("Target.createTarget", {"url": url})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        def evaluate(e):
            r = call("Runtime.evaluate", {"expression": e, "returnByValue": True}, session)
            return r.get("result", {}).get("value")
        while time.time() < deadline:
            if evaluate(expr):
                ok = True
                break
            time.sleep(0.1)
        print(evaluate("document.body ? document.body.innerText : ''") or "")
        data = call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        with open(shot, "wb") as f:
            f.write(base64.b64decode(data))
        # a clean shutdown lets Chromium reap its own helper processes
        try:
            seq[0] += 1
            ws.send(json.dumps({"id": seq[0], "method": "Browser.close"}))
        except Exception:
            pass
finally:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(profile, ignore_errors=True)
sys.exit(0 if ok else 1)
