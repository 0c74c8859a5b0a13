"""Shared by the serve tests: start `kinfer serve` on a free port, raw HTTP."""
import http.client
import json
import os
import signal
import subprocess
import time

KINFER = os.environ.get("KINFER", "build/kinfer")


class Server:
    """A `kinfer serve --port 0 --json` process; .port, .url, .stop()."""

    def __init__(self, *args, timeout=120):
        self.proc = subprocess.Popen([KINFER, "serve", "--model", "default", "--port", "0", "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("kinfer serve exited: " + self.proc.stderr.read())
        ev = json.loads(line)
        assert ev["event"] == "listening", ev
        self.port = ev["port"]
        self.info = ev
        self.url = f"http://127.0.0.1:{self.port}"
        while time.time() < deadline:
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("kinfer serve did not become healthy")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("kinfer serve did not stop within %s s: %s" % (timeout, err[-2000:]))
        return self.proc.returncode, out, err


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP request: (status, parsed JSON or text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    c.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def metrics(port):
    """/metrics as {name or name{labels}: value}."""
    status, text = request(port, "GET", "/metrics")
    assert status == 200, status
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wait_idle(port, timeout=60):
    """Waits until no request is in flight and no KV page is used; returns the metrics."""
    deadline = time.time() + timeout
    while True:
        m = metrics(port)
        if m["kinfer_kv_pages_used"] == 0 and m["kinfer_requests_in_flight"] == 0:
            return m
        if time.time() > deadline:
            raise AssertionError("server not idle: %s" % {k: v for k, v in m.items() if "kv" in k or "flight" in k})
        time.sleep(0.1)


class Checks:
    """Runs test functions, prints each result and 'N passed, M failed'."""

    def __init__(self):
        self.passed, self.failed = 0, 0

    def run(self, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
            self.passed += 1
            print(f"PASS {fn.__name__} ({time.time() - t0:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            import traceback
            traceback.print_exc()
            print(f"FAIL {fn.__name__}: {e!r}", flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0
