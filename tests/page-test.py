#!/usr/bin/env python3
"""Whole-page check: serve a built page (trunk's dist/) on 127.0.0.1, open it in headless
Chromium through ChromeDriver (plain WebDriver HTTP, standard library only), wait for the page's
readiness signal and require that the worker started the wasm module on the requested backend
and loaded the model (tests/page-test.mjs is the full test: image, sentence, mask).

    python3 tests/page-test.py dist [--backend webgpu|cpu] [--screenshot page.png]

Environment: CHROMEDRIVER (default: chromedriver on PATH), CHROMIUM (default
/usr/lib/chromium/chromium), PAGE_TIMEOUT seconds (default 300).
"""

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
    }

    def log_message(self, *args):
        pass


def serve(directory):
    port = free_port()
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


class WebDriver:
    def __init__(self, base):
        self.base = base
        self.session = None

    def call(self, method, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}")

    def start(self, chromium, user_data_dir):
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--enable-unsafe-webgpu",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            f"--user-data-dir={user_data_dir}",
                            "--window-size=1200,1000",
                        ],
                    },
                }
            }
        }
        value = self.call("POST", "/session", caps)
        self.session = value["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def goto(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def js(self, script, *args):
        return self.call("POST", self.s("/execute/sync"), {"script": script, "args": list(args)})

    def screenshot(self, path):
        png = self.call("GET", self.s("/screenshot"))
        with open(path, "wb") as f:
            f.write(base64.b64decode(png))

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", self.s(""), timeout=30)
            except Exception:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dist", help="folder with the built page (index.html)")
    ap.add_argument("--backend", choices=["webgpu", "cpu"], default="webgpu")
    ap.add_argument("--screenshot", help="write a PNG of the page here")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(args.dist, "index.html")):
        sys.exit(f"page-test: {args.dist}/index.html not found (run `trunk build` first)")
    chromedriver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    chromium = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
    if not chromedriver:
        sys.exit("page-test: chromedriver not found (bash tools/setup.sh)")
    timeout = float(os.environ.get("PAGE_TIMEOUT", "300"))

    server, port = serve(args.dist)
    driver_port = free_port()
    driver_proc = subprocess.Popen(
        [chromedriver, f"--port={driver_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    user_data_dir = tempfile.mkdtemp(prefix="rsrefseg-page-")
    wd = WebDriver(f"http://127.0.0.1:{driver_port}")
    try:
        for _ in range(100):
            try:
                wd.call("GET", "/status", timeout=2)
                break
            except Exception:
                time.sleep(0.1)
        wd.start(chromium, user_data_dir)
        # The embedded model when the build has one, else the synthetic nano model.
        embedded = os.path.isfile(os.path.join(args.dist, "models", "nano", "nano.rsb"))
        model = "embedded" if embedded else "synthetic"
        url = f"http://127.0.0.1:{port}/?backend={args.backend}&model={model}"
        wd.goto(url)
        start = time.time()
        state = None
        while time.time() - start < timeout:
            state = wd.js(
                "return {ready: document.body.dataset.ready || '',"
                " state: document.getElementById('status').dataset.state,"
                " status: document.getElementById('status').textContent,"
                " backend: document.getElementById('backend-used').textContent,"
                " version: document.getElementById('version').textContent};"
            )
            if state["ready"] == "1" and state["state"] != "loading":
                break
            time.sleep(0.5)
        if args.screenshot:
            wd.screenshot(args.screenshot)
        took = time.time() - start
        print(f"page-test: {url} after {took:.1f}s: {json.dumps(state)}")
        if not state or state["ready"] != "1":
            sys.exit("page-test: FAILED, the page never became ready")
        if state["state"] != "ready":
            sys.exit(f"page-test: FAILED, page status: {state['status']}")
        want = {"webgpu": "WebGPU", "cpu": "CPU"}[args.backend]
        if state["backend"] != want:
            sys.exit(f"page-test: FAILED, expected the {want} backend, got {state['backend']!r}")
        print("page-test: ok")
    finally:
        wd.quit()
        driver_proc.terminate()
        try:
            driver_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver_proc.kill()
        server.shutdown()
        shutil.rmtree(user_data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
