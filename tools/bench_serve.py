#!/usr/bin/env python3
"""Serving benchmark for `kinfer serve`, in the manner of vLLM's
benchmark_serving: streaming completions at a sweep of concurrencies (or
Poisson request rates), reporting TTFT, inter-token latency (ITL), TPOT,
end-to-end latency and output tokens/s; optionally the same work through
`kinfer bench generate` for the throughput ratio (C concurrent requests
against `bench generate -n C --requests C`: C requests that each prefill
their prompt, as the server's clients do; the one-request run that
prefills the prompt once for all C samples is reported beside it).
With --turns T each request is a conversation of T turns: a turn after the
first sends the previous turn's prompt, its answer (as token ids, by vLLM's
return_tokens_as_token_ids) and --turn-len new ids, as a chat's next turn
does; each level reports TTFT by turn.

Standard library only (asyncio HTTP/1.1), so it runs on any machine with
python3. Prompts are token ids (random:PRESET models have no tokenizer):
the same 64 pseudo ids `kinfer bench generate` uses, every request runs to
--output-len (ignore_eos). With --shared-prefix-len K each request's prompt
is instead K ids common to all (a system prompt) and --input-len - K ids of
its own (its question): the workload a prefix cache is for (serve with
on by default in kinfer serve; /metrics' prefix rows are in each level's "engine"; with --compare-generate
bench generate then runs with --prefix-cache too). Before each level, --warmup untimed waves at its
concurrency (8 tokens a request) pay the server's one-time costs at new
batch sizes, as `kinfer bench generate --warmup` does for its own run.
Each level also reports the server engine's steps, rows and milliseconds a
step by part (host: schedule, stage_and_launch, postprocess,
wait_for_device; device) from /metrics, and with --compare-generate the same
parts from `bench generate --profile`, so a gap shows where it is.

  # launch the server itself, sweep, then bench generate on the same work:
  python3 tools/bench_serve.py --kinfer build/kinfer \\
      --server-args "--device cuda --model random:qwen3-0.6b" \\
      --concurrency 1,16,64,256,1024 --output-len 256 --compare-generate \\
      --out bench/results/serve_cuda_qwen3-0.6b.json
  # a shared 1,024-id system prompt and 64 ids of each request's own (the prefix cache is on by default;
  # --server-args "... --no-prefix-cache" for the server without it):
  python3 tools/bench_serve.py --server-args "--device cuda --model random:qwen3-0.6b" \
      --concurrency 64,256 --input-len 1088 --shared-prefix-len 1024 --output-len 256
  # or against a running server:
  python3 tools/bench_serve.py --url http://127.0.0.1:8000 --request-rate 4,16,inf --num-prompts 256
"""
import argparse
import asyncio
import json
import math
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    f = math.floor(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def summary_ms(xs):
    return {"mean": 1e3 * statistics.fmean(xs) if xs else 0.0, "median": 1e3 * percentile(xs, 50),
            "p99": 1e3 * percentile(xs, 99)}


async def one_request(host, port, body):
    """A streaming completion: (ttft s, [itl s], e2e s, output tokens, output token ids). The ids come from the
    chunks' logprobs when the body asks for them as ids (return_tokens_as_token_ids: a next turn sends them back)."""
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(host, port, limit=1 << 22)
    data = json.dumps(body).encode()
    w.write(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        rest = await r.read()
        w.close()
        raise RuntimeError(f"HTTP {status}: {rest[:300]!r}")
    ttft, last, itl, tokens, ids = None, None, [], 0, []
    buf = b""
    while True:
        size = int((await r.readline()).strip(), 16)
        if size == 0:
            break
        buf += await r.readexactly(size)
        await r.readexactly(2)
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            payload = event[len(b"data: "):]
            if payload == b"[DONE]":
                continue
            j = json.loads(payload)
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
            for c in j["choices"]:
                for t in (c.get("logprobs") or {}).get("tokens") or []:
                    ids.append(int(t[len("token_id:"):]))
            if any(c.get("text") for c in j["choices"]):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - t0
                else:
                    itl.append(now - last)
                last = now
    w.close()
    return ttft or 0.0, itl, time.perf_counter() - t0, tokens, ids


def prompt_maker(args, vocab):
    """prompt(i): request i's token ids. Without --shared-prefix-len, the ids `kinfer bench generate` uses on
    random: models, for every request; with it, that many of them, then ids of the request's own."""
    common = [(i * 7919 + 13) % vocab for i in range(args.input_len)]  # as `kinfer bench generate` on random:
    k = args.shared_prefix_len
    if k is None:
        return lambda i: common

    def prompt(i):
        rng = random.Random(1000003 * (i + 1))
        return common[:k] + [rng.randrange(vocab) for _ in range(args.input_len - k)]
    return prompt


async def run_level(args, host, port, prompt, concurrency=None, rate=None, warm=False):
    n = args.num_prompts or (concurrency if concurrency else 256)
    if concurrency and args.num_prompts == 0:
        n = max(concurrency, args.min_prompts)
    max_tokens = args.output_len
    if warm:  # one untimed wave at this concurrency, 8 tokens a request, all at once
        n, max_tokens, rate = concurrency or args.min_prompts, min(8, args.output_len), None
    body = {"model": args.model_name, "max_tokens": max_tokens, "temperature": args.temperature,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    first = 1 << 30 if warm else 0  # warm-up requests have suffixes of their own
    if args.kinfer_policy:
        body["kinfer"] = json.loads(args.kinfer_policy)
    turns = 1 if warm else args.turns
    if turns > 1:  # the answer's ids, to quote in the next turn
        body.update(logprobs=0, return_tokens_as_token_ids=True)
    results, errors = [], []  # results: (turn, one_request's tuple)
    sem = asyncio.Semaphore(concurrency or n)
    rng = random.Random(0)

    async def task(i):
        # A conversation: turn t + 1's prompt is turn t's prompt, its answer and --turn-len new ids.
        async with sem:
            p = prompt(first + i)
            for turn in range(turns):
                try:
                    r = await one_request(host, port, dict(body, seed=i * turns + turn, prompt=p))
                except Exception as e:  # noqa: BLE001 - reported in the results
                    errors.append(repr(e)[:200])
                    return
                results.append((turn, r))
                more = random.Random(7919 * (first + i) + turn)
                p = p + r[4] + [more.randrange(args.vocab) for _ in range(args.turn_len)]

    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(task(i)))
        if rate and math.isfinite(rate):
            await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    by_turn = [[r for t, r in results if t == k] for k in range(turns)]
    results = [r for _, r in results]
    ttft = [r[0] for r in results]
    itl = [x for r in results for x in r[1]]
    tpot = [(r[2] - r[0]) / max(1, r[3] - 1) for r in results if r[3] > 1]
    out_tokens = sum(r[3] for r in results)
    return {"concurrency": concurrency, "request_rate": rate, "requests": n * turns, "conversations": n,
            "turns": turns, "ttft_ms_by_turn": [summary_ms([r[0] for r in rs]) for rs in by_turn],
            "completed": len(results),
            "errors": len(errors), "error_samples": errors[:3], "wall_s": wall, "output_tokens": out_tokens,
            "output_tok_s": out_tokens / wall if wall > 0 else 0.0, "request_s": len(results) / wall if wall else 0.0,
            "ttft_ms": summary_ms(ttft), "itl_ms": summary_ms(itl), "tpot_ms": summary_ms(tpot),
            "e2e_ms": summary_ms([r[2] for r in results])}


def engine_metrics(host, port):
    """The engine's counters from /metrics: {name or name{labels}: value} of the kinfer_engine_ ones and the prompt
    rows the prefix cache served."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics") as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("kinfer_engine_", "kinfer_prefix_cache_rows_total ")):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def engine_delta(before, after):
    """Steps, rows (prefill, decode and prompt rows from the prefix cache) and ms a step by part (host parts and
    device) between two engine_metrics() reads."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    steps = d.get("kinfer_engine_steps_total", 0.0)
    parts = {k.split('"')[1]: v for k, v in d.items() if k.startswith("kinfer_engine_seconds_total")}
    rows = {k.split('"')[1]: v for k, v in d.items() if k.startswith("kinfer_engine_rows_total")}
    rows["prefix_cached"] = d.get("kinfer_prefix_cache_rows_total", 0.0)
    return {"steps": steps, "rows": rows,
            "ms_per_step": {part: 1e3 * v / steps if steps else 0.0 for part, v in parts.items()}}


def launch(args):
    cmd = [args.kinfer, "serve", "--port", "0", "--json", *shlex.split(args.server_args), *shlex.split(args.serve_extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("kinfer serve did not start: " + " ".join(cmd))
    return proc, json.loads(line)


def bench_generate(args, n, requests=1):
    # The server's prefix cache (on by default in serve, off in bench generate) on both sides.
    cache = ["--prefix-cache"] if args.prefix_cache else []
    cmd = [args.kinfer, "bench", "generate", *shlex.split(args.server_args), *cache, "-n", str(n), "--requests",
           str(requests), "--max-tokens", str(args.output_len), "--temp", str(args.temperature), "--profile", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    p = j.get("profile", {})
    host = p.get("host_ms_per_step", {})
    return {"command": " ".join(cmd), "gen_tok_s": j["gen_tok_s"], "decode_tok_s": j["decode_tok_s"],
            "wall_s": j["wall_s"], "generated_tokens": j["generated_tokens"], "steps": j["steps"],
            "ms_per_step": {"schedule": host.get("schedule"), "stage_and_launch": host.get("stage_and_launch"),
                            "postprocess": host.get("postprocess"), "wait_for_device": host.get("wait_for_device"),
                            "device": p.get("device_ms_per_step")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (else --kinfer launches one with --server-args)")
    ap.add_argument("--kinfer", default="build/kinfer")
    ap.add_argument("--server-args", default="--model default", help="kinfer serve / bench generate model+engine flags")
    ap.add_argument("--serve-extra", default="", help="flags for kinfer serve only (e.g. --http-threads 4)")
    ap.add_argument("--model-name", default=None, help="the served model name (default: what the server lists)")
    ap.add_argument("--concurrency", default="", help="comma list, e.g. 1,16,64,256")
    ap.add_argument("--request-rate", default="", help="comma list of requests/s (inf = all at once)")
    ap.add_argument("--num-prompts", type=int, default=0, help="requests per level (0: = concurrency, >= --min-prompts)")
    ap.add_argument("--min-prompts", type=int, default=32)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--shared-prefix-len", type=int, default=None,
                    help="the first K of --input-len ids are common to all requests, the rest each request's own")
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--turns", type=int, default=1,
                    help="requests a conversation: turn t + 1 quotes turn t's prompt and answer (its token ids, by "
                         "return_tokens_as_token_ids) and adds --turn-len ids (a chat's next turn)")
    ap.add_argument("--turn-len", type=int, default=64, help="new ids a turn after the first adds")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--kinfer-policy", default="", help='per-request policy JSON, e.g. {"attn":"blocktopk"}')
    ap.add_argument("--compare-generate", action="store_true",
                    help="also run `kinfer bench generate -n C --requests C` per concurrency C (the same work: "
                         "same prompt and lengths, C requests), and -n C as one request (the prompt prefilled once)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed waves before each level (its concurrency, 8 tokens a request; 0: none)")
    ap.add_argument("--out", help="write the results JSON here")
    args = ap.parse_args()
    args.prefix_cache = False  # a server launched here says whether it has one (a --url server: unknown, taken off)
    if args.turns < 1 or args.turn_len < 0:
        ap.error(f"--turns {args.turns} must be >= 1 and --turn-len {args.turn_len} >= 0")
    if args.turns > 1 and args.compare_generate:
        ap.error("--compare-generate runs single requests: leave out --turns")
    if args.shared_prefix_len is not None:
        if not 0 <= args.shared_prefix_len <= args.input_len:
            ap.error(f"--shared-prefix-len {args.shared_prefix_len} must be within 0..--input-len {args.input_len}")
        if args.compare_generate:
            ap.error("--compare-generate runs one prompt for all requests: leave out --shared-prefix-len")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    proc = None
    if args.url:
        host, port = args.url.split("//")[1].split(":")
        port = int(port.rstrip("/"))
    else:
        proc, info = launch(args)
        host, port = "127.0.0.1", info["port"]
        args.prefix_cache = bool(info.get("prefix_cache"))
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/models") as r:
            listed = json.load(r)["data"][0]
        args.model_name = args.model_name or listed["id"]
        vocab = listed.get("vocab_size", 32000)
        args.vocab = vocab
        prompt = prompt_maker(args, vocab)
        levels = []

        def level(concurrency=None, rate=None):
            # The server's one-time costs at a new batch size (graph capture, kernel plans) are paid by
            # untimed waves first, as `kinfer bench generate --warmup` pays its own.
            warm = [asyncio.run(run_level(args, host, port, prompt, concurrency, rate, warm=True))
                    for _ in range(args.warmup)]
            time.sleep(0.1)  # the server reads the engine's stats every 50 ms
            before = engine_metrics(host, port)
            lv = asyncio.run(run_level(args, host, port, prompt, concurrency, rate))
            time.sleep(0.1)
            lv["engine"] = engine_delta(before, engine_metrics(host, port))
            lv["warmup_requests"] = sum(w["completed"] for w in warm)
            lv["warmup_errors"] = sum(w["errors"] for w in warm)
            levels.append(lv)
            print(json.dumps({k: lv[k] for k in ("concurrency", "request_rate", "completed", "errors", "output_tok_s")}),
                  file=sys.stderr, flush=True)

        for c in filter(None, args.concurrency.split(",")):
            level(concurrency=int(c))
        for r in filter(None, args.request_rate.split(",")):
            level(rate=float(r))
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=120)
    result = {"bench": "serve", "server_args": args.server_args, "prefix_cache": args.prefix_cache,
              "input_len": args.input_len, "turns": args.turns, "turn_len": args.turn_len,
              "shared_prefix_len": args.shared_prefix_len, "output_len": args.output_len, "warmup": args.warmup,
              "levels": levels}
    if args.compare_generate:
        for lv in levels:
            if lv["concurrency"]:
                # The same work: C requests, each prefilling its copy of the prompt; and, for reference,
                # one request of C samples that prefills the prompt once (copy-on-write).
                g = bench_generate(args, lv["concurrency"], requests=lv["concurrency"])
                shared = bench_generate(args, lv["concurrency"])
                lv["bench_generate"] = g
                lv["bench_generate_shared_prompt"] = shared
                lv["ratio_to_generate"] = lv["output_tok_s"] / g["gen_tok_s"] if g["gen_tok_s"] else 0.0
                lv["ratio_to_generate_shared_prompt"] = (lv["output_tok_s"] / shared["gen_tok_s"]
                                                         if shared["gen_tok_s"] else 0.0)
                # The decode-phase ratio (C streams / mean ITL) leaves the prefill steps out.
                itl = lv["itl_ms"]["mean"] / 1e3
                lv["decode_tok_s_estimate"] = lv["concurrency"] / itl if itl > 0 else 0.0
                lv["decode_ratio_to_generate"] = (lv["decode_tok_s_estimate"] / g["decode_tok_s"]
                                                  if g["decode_tok_s"] else 0.0)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    for lv in levels:
        print(f"conc={lv['concurrency']} rate={lv['request_rate']}: {lv['output_tok_s']:.1f} tok/s, "
              f"TTFT median {lv['ttft_ms']['median']:.1f} ms, ITL median {lv['itl_ms']['median']:.2f} ms"
              + (f", {lv['ratio_to_generate']:.2f}x bench generate overall, {lv['decode_ratio_to_generate']:.2f}x "
                 f"in decode ({lv['ratio_to_generate_shared_prompt']:.2f}x of one request of C samples)"
                 if "ratio_to_generate" in lv else ""),
              file=sys.stderr)


if __name__ == "__main__":
    main()
