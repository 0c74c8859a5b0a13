"""Load test of `kinfer serve` (SmolLM2; CPU, or LOAD_SERVER_ARGS="--device cuda"): 1,000 requests from 200
concurrent clients, a mix of streaming, n > 1, chat, bad JSON, oversized
prompts, clients that hang up mid-stream, and block top-k requests whose long
prompts share pages. Every valid request completes
exactly once with well-formed output, every invalid one gets its 4xx, the
server stays up, KV pages in use return to zero and /metrics agrees with the
client's counts. Bounded: small max_tokens, and the whole run must finish in
LOAD_TIMEOUT seconds (default 300)."""
import asyncio
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from serve_util import Server, metrics, request, wait_idle  # noqa: E402

REQUESTS = int(os.environ.get("LOAD_REQUESTS", "1000"))
CLIENTS = int(os.environ.get("LOAD_CLIENTS", "200"))
TIMEOUT = float(os.environ.get("LOAD_TIMEOUT", "300"))
# More server flags, e.g. "--device cuda" (dev/cuda/gpu.sh serve_load runs it on the H200) or
# "--replicas 2"; LOAD_KV_PAGES sizes the pool (a small one makes the prefix cache evict).
SERVER_ARGS = os.environ.get("LOAD_SERVER_ARGS", "").split()
STRESS = os.environ.get("LOAD_EXPECT_EVICTIONS") == "1"
MAX_LEN = 256


async def http(port, body, stream_hangup=False):
    """One request on its own connection: (status, body text or SSE events), or 'hangup'."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
    w.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode() + data)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = head.decode().lower()
    if "transfer-encoding: chunked" in headers:
        body_bytes = b""
        while True:
            size = int((await r.readline()).strip(), 16)
            if size == 0:
                await r.readline()
                break
            body_bytes += await r.readexactly(size)
            await r.readexactly(2)
            if stream_hangup and b"data:" in body_bytes:
                w.close()  # the client goes away mid-stream
                return "hangup", None
        events = [e[len("data: "):] for e in body_bytes.decode().split("\n\n") if e]
        w.close()
        return status, events
    n = int(headers.split("content-length:")[1].split("\r\n")[0])
    text = (await r.readexactly(n)).decode()
    w.close()
    return status, text


def check_completion(body, n, chat):
    j = json.loads(body)
    assert j["object"] == ("chat.completion" if chat else "text_completion"), j
    assert sorted(c["index"] for c in j["choices"]) == list(range(n)), j
    for c in j["choices"]:
        assert c["finish_reason"] in ("stop", "length"), c
        assert isinstance(c["message"]["content"] if chat else c["text"], str)
    u = j["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and "efflops" in u, u
    return u["completion_tokens"]


def check_stream(events, n, chat):
    assert events[-1] == "[DONE]", events[-3:]
    finished = set()
    tokens = 0
    for e in events[:-1]:
        j = json.loads(e)
        if j.get("usage"):
            tokens = j["usage"]["completion_tokens"]
        for c in j["choices"]:
            if c["finish_reason"]:
                assert c["index"] not in finished, "a choice finished twice"
                finished.add(c["index"])
    assert finished == set(range(n)), (finished, n)
    return tokens


def make_jobs(rng):
    kinds = (["plain"] * 34 + ["stream"] * 20 + ["best_of"] * 10 + ["chat"] * 12 + ["bad_json"] * 8 +
             ["oversized"] * 8 + ["wrong_type"] * 2 + ["hangup"] * 6 + ["sparse"] * 8)
    # Long prompts from a few families (full pages for the prefix cache to share), under
    # block top-k: per-sequence policies in the same batches as the dense requests.
    families = [[rng.randrange(300, 40000) for _ in range(64)] for _ in range(4)]
    jobs = []
    for i in range(REQUESTS):
        kind = rng.choice(kinds)
        prompt = [rng.randrange(300, 40000) for _ in range(rng.randrange(2, 6))]
        base = {"model": "default", "prompt": prompt, "max_tokens": rng.randrange(1, 3), "temperature": 0.7,
                "seed": i, "ignore_eos": True}
        if kind == "stream":
            base.update(stream=True, stream_options={"include_usage": True})
        elif kind == "best_of":
            base.update(n=3, max_tokens=2)
        elif kind == "chat":
            msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": str(i)}]
            base = {"model": "default", "messages": msgs, "max_tokens": 2,
                    "stream": rng.random() < 0.5, "stream_options": {"include_usage": True}}
        elif kind == "bad_json":
            base = '{"model": "default", "prompt": [1, 2'
        elif kind == "oversized":
            base.update(prompt=[rng.randrange(300, 40000) for _ in range(MAX_LEN + rng.randrange(1, 50))])
        elif kind == "wrong_type":
            base.update(n="three")
        elif kind == "hangup":
            base.update(stream=True, max_tokens=150)
        elif kind == "sparse":
            head = rng.choice(families)[:rng.randrange(32, 65)]
            base.update(prompt=head + prompt, max_tokens=rng.randrange(2, 9), n=rng.randrange(1, 3),
                        kinfer={"attn": "blocktopk", "topk_pages": 1, "local_pages": 1})
        jobs.append((kind, base))
    return jobs


async def main():
    srv = Server("--max-model-len", str(MAX_LEN), "--kv-pages", os.environ.get("LOAD_KV_PAGES", "600"), "--max-seqs", "128", "--max-waiting", "100000",
                 *SERVER_ARGS)
    rng = random.Random(7)
    jobs = make_jobs(rng)
    counts = {"ok": 0, "400": 0, "hangup": 0}
    completion_tokens = 0
    failures = []
    queue = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)

    async def client():
        nonlocal completion_tokens
        while not queue.empty():
            kind, body = queue.get_nowait()
            try:
                status, got = await http(srv.port, body, stream_hangup=kind == "hangup")
                if kind in ("bad_json", "oversized", "wrong_type"):
                    assert status == 400, (kind, status, got)
                    assert json.loads(got)["error"]["code"] == 400
                    counts["400"] += 1
                elif kind == "hangup":
                    assert status == "hangup", (status, got)
                    counts["hangup"] += 1
                else:
                    assert status == 200, (kind, status, got)
                    chat = "messages" in body
                    n = body.get("n", 1)
                    if body.get("stream"):
                        completion_tokens += check_stream(got, n, chat)
                    else:
                        completion_tokens += check_completion(got, n, chat)
                    counts["ok"] += 1
            except Exception as e:  # noqa: BLE001 - collected and reported
                failures.append((kind, repr(e)[:300]))

    t0 = time.time()
    try:
        await asyncio.wait_for(asyncio.gather(*[client() for _ in range(CLIENTS)]), TIMEOUT)
        wall = time.time() - t0
        assert request(srv.port, "GET", "/health")[0] == 200, "the server is down"
        m = wait_idle(srv.port, timeout=30)
        got = {"ok": m.get('kinfer_requests_total{status="200"}', 0), "400": m.get('kinfer_requests_total{status="400"}', 0),
               "hangup": m.get('kinfer_requests_total{status="499"}', 0)}
        summary = {"requests": REQUESTS, "clients": CLIENTS, "wall_s": round(wall, 1), "client_counts": counts,
                   "metrics_counts": got, "completion_tokens": completion_tokens,
                   "generated_tokens_metric": m["kinfer_generation_tokens_total"],
                   "kv_pages_used_after": m["kinfer_kv_pages_used"], "preemptions": m["kinfer_preemptions_total"],
                   "prefix_cache_evictions": m.get("kinfer_prefix_cache_evictions_total", 0),
                   "prefix_cached_rows": m.get("kinfer_prefix_cache_rows_total", 0),
                   "failures": len(failures)}
        print(json.dumps(summary), flush=True)
        for f in failures[:10]:
            print("failure:", f)
        ok = not failures and sum(counts.values()) == REQUESTS and got == {k: float(v) for k, v in counts.items()}
        ok = ok and m["kinfer_kv_pages_used"] == 0
        ok = ok and summary["prefix_cached_rows"] > 0  # the block top-k families share their prompt pages
        if STRESS:  # the small pools must have made the prefix caches evict (preemptions vary run to run)
            ok = ok and summary["prefix_cache_evictions"] > 0
    finally:
        code, _, err = srv.stop()
    ok = ok and code == 0
    print(("1 passed, 0 failed" if ok else "0 passed, 1 failed"), flush=True)
    return 0 if ok else 1


sys.exit(asyncio.run(main()))
