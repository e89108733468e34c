"""Kinetic's Python runtime for warm pod pools: Fission's environment protocol.

A pool pod runs this server before it has any code. The node agent unpacks the claimant's
code into the `userfunc` volume and calls one of:
- `POST /specialize` (interface v1): load the file `$USERFUNCVOL/user`, use its `main`;
- `POST /v2/specialize` (v2, v3) with `{"filepath", "functionName", "url"}`: `filepath` is a
  directory (put on `sys.path`, then `module.function` is imported, `main.main` by default)
  or a file (loaded, then `function` is taken from it).
Every other request calls the loaded function with no arguments; it returns a `str` or
`bytes` body, or `(body, status)`. `GET /healthz` answers 200 once the server listens.

Without a pool, the same server specialises itself at start: with `$CODE` set (a directory
or file) it loads `argv[1]` (the function name, optional) from there before it listens.
`$PRELOAD` (comma-separated modules) is imported before anything: an environment image
pre-imports the dependencies it ships, as Fission's environment images ship theirs.
Standard library only (no Flask), so it runs on a bare interpreter.
"""

import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERFUNCVOL = os.environ.get("USERFUNCVOL", "/userfunc")
PORT = int(os.environ.get("RUNTIME_PORT", "8888"))

for name in filter(None, os.environ.get("PRELOAD", "").split(",")):
    importlib.import_module(name)

LOCK = threading.Lock()
FUNC = None


def load_file(path, function="main"):
    loader = importlib.machinery.SourceFileLoader("userfunc", path)
    spec = importlib.util.spec_from_loader("userfunc", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return getattr(module, function or "main")


def load(filepath, handler):
    """Fission's v2 rule: `module.function`, a bare `function` in `main`, `main.main` by default."""
    module, _, function = (handler or "main.main").rpartition(".")
    module = module or "main"
    if os.path.isdir(filepath):
        if filepath not in sys.path:
            sys.path.insert(0, filepath)
        return getattr(importlib.import_module(module), function)
    return load_file(filepath, function)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body=b""):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def specialize(self, v2):
        global FUNC
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        began = time.perf_counter()
        try:
            with LOCK:
                if v2:
                    req = json.loads(raw or b"{}")
                    FUNC = load(req.get("filepath", ""), req.get("functionName", ""))
                else:
                    FUNC = load_file(os.path.join(USERFUNCVOL, "user"))
        except Exception as e:  # the agent reports any failure as the pod's
            self.reply(500, f"specialize failed: {type(e).__name__}: {e}\n")
            return
        self.reply(200, f"specialized in {time.perf_counter() - began:.3f}s\n")

    def call(self):
        func = FUNC
        if func is None:
            self.reply(500, "not specialized\n")
            return
        try:
            out = func()
        except Exception as e:
            self.reply(500, f"{type(e).__name__}: {e}\n")
            return
        status = 200
        if isinstance(out, tuple):
            out, status = out
        self.reply(status, out)

    def do_POST(self):
        if self.path == "/specialize":
            self.specialize(False)
        elif self.path == "/v2/specialize":
            self.specialize(True)
        else:
            self.call()

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200)
        else:
            self.call()

    def log_message(self, *args):
        pass


def main():
    global FUNC
    code = os.environ.get("CODE")
    if code:
        FUNC = load(code, sys.argv[1] if len(sys.argv) > 1 else "")
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    print(f"listening on {PORT}", flush=True)
    server.serve_forever()


main()
