"""`kinfer serve` (one engine, and two replicas) through the official openai client (and raw HTTP for the
errors a client library would not send), on the embedded SmolLM2."""
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import openai
from openai import OpenAI

sys.path.insert(0, os.path.dirname(__file__))
from serve_util import KINFER, Checks, Server, metrics, request, wait_idle  # noqa: E402

KEY = "test-key"
MAX_LEN = 512
srv = Server("--api-key", KEY, "--max-model-len", str(MAX_LEN), "--kv-pages", "512", "--max-seqs", "32",
             "--served-model-name", "smol")
client = OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
AUTH = {"Authorization": "Bearer " + KEY}
PROMPT = "The capital of France is"


def complete(**kw):
    args = dict(model="smol", prompt=PROMPT, max_tokens=12, temperature=0)
    args.update(kw)
    return client.completions.create(**args)


def test_models():
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smol"], ids
    assert client.models.retrieve("smol").id == "smol"


def test_completion_and_usage():
    r = complete()
    assert r.object == "text_completion" and len(r.choices) == 1
    c = r.choices[0]
    assert c.text and c.finish_reason in ("stop", "length"), c
    u = r.usage.model_dump()
    assert u["prompt_tokens"] == 5 and u["completion_tokens"] >= 1, u
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["efflops"] > 0 and u["kv_bytes_read"] > 0, u
    assert u["policy"]["attn"] == "dense" and u["policy"]["page_size"] == 16, u
    assert complete().choices[0].text == c.text  # greedy is deterministic


def test_engine_metrics_grow_with_a_request():
    """/metrics breaks the engine's time down by part; a request adds steps, rows and host time (no device on the CPU)."""
    def engine(m):
        return {k: v for k, v in m.items() if k.startswith("kinfer_engine_")}
    before = engine(wait_idle(srv.port))
    u = complete(max_tokens=6, extra_body={"ignore_eos": True}).usage
    deadline = time.time() + 5  # loop() reads the replicas' stats every 50 ms at most
    steps = before.get("kinfer_engine_steps_total", 0) + u.completion_tokens  # a prefill step, then one a token
    while engine(metrics(srv.port))["kinfer_engine_steps_total"] < steps:
        assert time.time() < deadline, "kinfer_engine_steps_total did not grow"
        time.sleep(0.05)
    after = engine(metrics(srv.port))
    rows = 'kinfer_engine_rows_total{kind="%s"}'
    grown = sum(after[rows % k] - before.get(rows % k, 0) for k in ("prefill", "decode"))
    assert grown == u.prompt_tokens + u.completion_tokens - 1, (grown, u)  # the last token is sampled, not computed
    for part in ("schedule", "stage_and_launch", "postprocess"):
        key = 'kinfer_engine_seconds_total{part="%s"}' % part
        assert after[key] > before.get(key, 0), (part, before, after)
    assert after['kinfer_engine_seconds_total{part="device"}'] == 0, after


def test_best_of_8_and_token_prompts():
    r = complete(n=8, temperature=1.0, seed=3, max_tokens=10)
    assert sorted(c.index for c in r.choices) == list(range(8))
    assert len({c.text for c in r.choices}) > 1, "8 samples at T=1 should differ"
    assert r.usage.prompt_tokens == 5, "the prompt is counted once"
    # A list of prompts (token ids) with n: prompt-major choices.
    ids = [[504, 3575, 282], [1204, 314]]
    r2 = complete(prompt=ids, n=2, max_tokens=4)
    assert sorted(c.index for c in r2.choices) == [0, 1, 2, 3] and r2.usage.prompt_tokens == 5
    assert r2.choices[0].text == r2.choices[1].text  # greedy: both samples of prompt 0 agree


def test_streaming_equals_non_streaming():
    for kw in (dict(temperature=0), dict(temperature=0.8, seed=11, n=3)):
        whole = complete(max_tokens=16, **kw)
        parts, usage, finish = {}, None, {}
        for ch in complete(max_tokens=16, stream=True, stream_options={"include_usage": True}, **kw):
            if ch.usage:
                usage = ch.usage
            for c in ch.choices:
                parts[c.index] = parts.get(c.index, "") + c.text
                if c.finish_reason:
                    finish[c.index] = c.finish_reason
        for c in whole.choices:
            assert parts[c.index] == c.text, (parts[c.index], c.text)
            assert finish[c.index] == c.finish_reason
        assert usage and usage.completion_tokens == whole.usage.completion_tokens
        assert usage.model_dump()["efflops"] == whole.usage.model_dump()["efflops"]


def test_chat_and_chat_streaming():
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=12, temperature=0)
    m = r.choices[0].message
    assert r.object == "chat.completion" and m.role == "assistant" and m.content, r
    assert r.usage.model_dump()["efflops"] > 0
    text, roles = "", 0
    for ch in client.chat.completions.create(model="smol", messages=msgs, max_tokens=12, temperature=0, stream=True):
        for c in ch.choices:
            roles += c.delta.role == "assistant"
            text += c.delta.content or ""
    assert text == m.content and roles == 1, (text, m.content, roles)
    r2 = client.chat.completions.create(model="smol", messages=msgs, max_completion_tokens=3, temperature=0)
    assert r2.usage.completion_tokens <= 3


def test_logprobs():
    r = complete(logprobs=3, max_tokens=8)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text
    for v, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert v <= 0 and 1 <= len(top) <= 3
        assert abs(max(top.values()) - v) < 1e-4, (v, top)  # greedy: the sampled token is the top one
    c = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) == c.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_echo_scores_the_prompt():
    # Generate greedily with logprobs, then score prompt + generation with echo
    # and max_tokens 0 (what evaluation harnesses do): the generated tokens'
    # prompt logprobs equal the ones they were sampled with.
    ids = [504, 3575, 282, 4649, 314]
    g = client.completions.create(model="smol", prompt=ids, max_tokens=6, temperature=0, logprobs=1,
                                  extra_body={"ignore_eos": True})
    gen_lp = g.choices[0].logprobs.token_logprobs
    full = ids + greedy_ids(ids, 6)
    # vLLM's return_tokens_as_token_ids: the tokens as "token_id:N", the ids a client sends back (a next turn).
    as_ids = client.completions.create(model="smol", prompt=ids, max_tokens=6, temperature=0, logprobs=0,
                                       extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True})
    assert as_ids.choices[0].logprobs.tokens == ["token_id:%d" % t for t in full[len(ids):]], as_ids.choices[0]
    chat = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                          temperature=0, logprobs=True,
                                          extra_body={"return_tokens_as_token_ids": True})
    assert all(t.token.startswith("token_id:") and t.token[9:].isdigit() for t in chat.choices[0].logprobs.content)
    code, body = request(srv.port, "POST", "/v1/completions", {"model": "smol", "prompt": ids,
                                                               "return_tokens_as_token_ids": "yes"}, AUTH)
    assert code == 400 and "return_tokens_as_token_ids" in str(body), (code, body)
    e = client.completions.create(model="smol", prompt=full, max_tokens=0, echo=True, logprobs=1)
    lp = e.choices[0].logprobs
    assert len(lp.tokens) == len(full) and lp.token_logprobs[0] is None, lp
    for a, b in zip(lp.token_logprobs[len(ids):], gen_lp):
        assert abs(a - b) < 1e-3, (a, b)
    assert e.usage.completion_tokens == 0
    text = client.completions.create(model="smol", prompt=PROMPT, max_tokens=0, echo=True).choices[0].text
    assert text == PROMPT, text


def greedy_ids(prompt_ids, n_tokens):
    """The greedy continuation's token ids, from `kinfer generate` (the same engine)."""
    out = subprocess.run([KINFER, "generate", "--model", "default", "--prompt-ids", ",".join(map(str, prompt_ids)),
                          "--max-tokens", str(n_tokens), "--temp", "0", "--ignore-eos", "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["samples"][0]["tokens"]


def test_stop_strings_and_stop_tokens():
    base = complete(max_tokens=24, extra_body={"ignore_eos": True}).choices[0].text
    stop = base[6:9]
    first = base.find(stop)
    r = complete(max_tokens=24, stop=[stop], extra_body={"ignore_eos": True})
    assert r.choices[0].text == base[:first] and r.choices[0].finish_reason == "stop", (r.choices[0].text, base, stop)
    s = "".join(c.choices[0].text for c in complete(max_tokens=24, stop=[stop], stream=True,
                                                    extra_body={"ignore_eos": True}))
    assert s == base[:first], (s, base[:first])
    prompt_ids = json.loads(subprocess.run([KINFER, "tokenize", "--model", "default", "--json", PROMPT],
                                           capture_output=True, text=True, check=True).stdout)["ids"]
    toks = greedy_ids(prompt_ids, 24)
    r2 = complete(max_tokens=24, extra_body={"ignore_eos": True, "stop_token_ids": [toks[3]]})
    assert r2.usage.completion_tokens == toks.index(toks[3]), (r2.usage, toks)


def test_seed_reproducibility_and_generate_parity():
    kw = dict(temperature=0.9, top_p=0.95, max_tokens=20, extra_body={"top_k": 20})
    a = complete(seed=42, **kw).choices[0].text
    b = complete(seed=42, **kw).choices[0].text
    c = complete(seed=43, **kw).choices[0].text
    assert a == b and a != c, (a, b, c)
    out = subprocess.run([KINFER, "generate", "--model", "default", "--prompt", PROMPT, "--seed", "42", "--temp", "0.9",
                          "--top-p", "0.95", "--top-k", "20", "--max-tokens", "20", "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["samples"][0]["text"] == a


def test_per_request_policy_and_usage():
    long_prompt = [int(t) for t in range(200, 460)]  # 260 tokens: 17 pages
    kw = dict(prompt=long_prompt, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    results = {}

    def run(name, extra):
        body = dict(kw["extra_body"], **extra)
        results[name] = client.completions.create(model="smol", prompt=long_prompt, max_tokens=16, temperature=0,
                                                  extra_body=body)

    threads = [threading.Thread(target=run, args=("dense", {})),
               threading.Thread(target=run, args=("sparse", {"kinfer": {"attn": "blocktopk", "topk_pages": 2,
                                                                        "local_pages": 1}}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d, s = results["dense"].usage.model_dump(), results["sparse"].usage.model_dump()
    assert d["policy"]["attn"] == "dense" and s["policy"] == {"attn": "blocktopk", "topk_pages": 2, "local_pages": 1,
                                                             "page_size": 16}, s
    assert 0 < s["kv_bytes_read"] < d["kv_bytes_read"] / 2, (s, d)
    assert 0 < s["efflops"] < d["efflops"], (s, d)


def test_errors():
    def err(status, body, path="/v1/completions", headers=AUTH, method="POST", param=None):
        got, b = request(srv.port, method, path, body, headers)
        assert got == status, (got, b)
        e = b["error"]
        assert set(e) >= {"message", "type", "param", "code"} and e["message"], e
        if param:
            assert e["param"] == param, e
    err(400, "{not json")
    err(400, {"model": "smol", "prompt": PROMPT, "n": "two"}, param="n")
    err(400, {"model": "smol", "prompt": PROMPT, "max_tokens": -1}, param="max_tokens")
    err(400, {"model": "smol", "prompt": PROMPT, "temperature": 7}, param="temperature")
    err(400, {"model": "smol", "prompt": [1] * (MAX_LEN + 1)}, param="prompt")
    err(400, {"model": "smol", "prompt": [1] * 500, "max_tokens": 100}, param="max_tokens")
    err(400, {"model": "smol", "messages": "hi"}, path="/v1/chat/completions", param="messages")
    err(401, {"model": "smol", "prompt": PROMPT}, headers={})
    err(401, {"model": "smol", "prompt": PROMPT}, headers={"Authorization": "Bearer wrong"})
    err(404, {"model": "gpt-4", "prompt": PROMPT}, param="model")
    err(404, None, path="/v1/nothing", method="GET")
    err(405, None, method="GET")
    # The client library raises the matching exceptions.
    for exc, kw in ((openai.BadRequestError, dict(max_tokens=-5)), (openai.NotFoundError, dict(model="nope"))):
        try:
            complete(**kw)
            raise AssertionError("no error")
        except exc:
            pass
    try:
        OpenAI(base_url=srv.url + "/v1", api_key="bad", max_retries=0).completions.create(model="smol", prompt="x")
        raise AssertionError("no error")
    except openai.AuthenticationError:
        pass
    assert request(srv.port, "GET", "/health")[0] == 200


def test_hangup_cancels_and_frees_pages():
    before = metrics(srv.port).get('kinfer_requests_total{status="499"}', 0)
    body = json.dumps({"model": "smol", "prompt": PROMPT, "max_tokens": 400, "stream": True, "ignore_eos": True})
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
               f"{KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while b"data:" not in got:
        got += s.recv(4096)
    deadline = time.time() + 10  # /metrics shows the engine as of its last step
    while metrics(srv.port)["kinfer_kv_pages_used"] == 0:
        assert time.time() < deadline, "the streaming request holds no KV pages"
        time.sleep(0.05)
    s.close()
    m = wait_idle(srv.port, timeout=20)
    assert m['kinfer_requests_total{status="499"}'] == before + 1, m


def test_waiting_limit_and_graceful_shutdown():
    small = Server("--max-waiting", "1", "--max-seqs", "4", "--kv-pages", "256")
    try:
        c = OpenAI(base_url=small.url + "/v1", api_key="x", max_retries=0, timeout=120)
        statuses, texts = [], []

        def one(i):
            try:
                r = c.completions.create(model="default", prompt=[500 + i] * 200, max_tokens=30,
                                         extra_body={"ignore_eos": True})
                statuses.append(200)
                texts.append(r.choices[0].text)
            except openai.RateLimitError:
                statuses.append(429)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert 200 in statuses and 429 in statuses, statuses
        # SIGTERM with a request in flight: it completes, new connections are refused, exit 0.
        done = {}

        def long_one():
            done["r"] = c.completions.create(model="default", prompt=PROMPT, max_tokens=60, temperature=0,
                                             extra_body={"ignore_eos": True})
        t = threading.Thread(target=long_one)
        t.start()
        time.sleep(1.0)
        small.proc.send_signal(15)
        t.join(timeout=120)
        assert done["r"].usage.completion_tokens == 60, done
        code, out, err = small.stop(timeout=60)
        assert code == 0, (code, err[-1000:])
        assert json.loads(out.strip().splitlines()[-1])["event"] == "shutdown"
    finally:
        if small.proc.poll() is None:
            small.proc.kill()


def test_thousand_open_connections_do_not_starve_new_requests():
    # 1,000 clients that sent half a request hold their connections open (a
    # server with a thread per connection from a fixed pool would stall);
    # health checks and completions still answer at once.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            socks.append(s)
        t0 = time.time()
        assert request(srv.port, "GET", "/health")[0] == 200
        r = complete(max_tokens=2)
        assert r.choices[0].text and time.time() - t0 < 30, time.time() - t0
    finally:
        for s in socks:
            s.close()


def test_data_parallel_replicas_serve_the_same_samples():
    # Two engine replicas (--replicas 2: the CPU's data-parallel path, as
    # --devices 0,1 on GPUs) behind one server: requests spread over both,
    # and every sample is the one engine's (Philox keyed by seed, request,
    # sample and token; CPU ops are batch-invariant).
    two = Server("--replicas", "2", "--kv-pages", "256", "--max-seqs", "16")
    try:
        c = OpenAI(base_url=two.url + "/v1", api_key="x", max_retries=0, timeout=120)
        kw = dict(prompt=PROMPT, max_tokens=12, temperature=0.9, top_p=0.95, n=3, extra_body={"top_k": 20})
        got, want = {}, {}

        def one(i):
            got[i] = [ch.text for ch in c.completions.create(model="default", seed=100 + i, **kw).choices]
        ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for i in range(6):
            want[i] = [ch.text for ch in complete(seed=100 + i, **dict(kw, model="smol")).choices]
        assert got == want, (got, want)
        m = wait_idle(two.port, timeout=60)
        assert m['kinfer_requests_total{status="200"}'] == 6, m
        # Both replicas' pools: no page used; free but for the prefix cache's (serve's default), which holds the
        # prompts' and answers' full pages.
        assert m["kinfer_kv_pages_used"] == 0, m
        assert m["kinfer_kv_pages_free"] + m["kinfer_kv_pages_cached"] == 2 * 256, m
        code, _, err = two.stop(timeout=60)
        assert code == 0, err[-1000:]
    finally:
        if two.proc.poll() is None:
            two.proc.kill()


def test_prefix_cache():
    """The prefix cache (on by default in serve): a second request of one prompt prefills only past its full pages
    (its last two rows at least), with the same text as the first and as the server without the cache (CPU ops are
    batch-invariant); /metrics counts the rows and, idle, shows no page used but the prompt's pages cached."""
    cached = Server("--kv-pages", "256", "--max-seqs", "16")
    plain = Server("--no-prefix-cache", "--kv-pages", "256", "--max-seqs", "16")
    try:
        assert cached.info["prefix_cache"] is True and srv.info["prefix_cache"] is True, (cached.info, srv.info)
        assert plain.info["prefix_cache"] is False, plain.info
        c = OpenAI(base_url=cached.url + "/v1", api_key="x", max_retries=0, timeout=120)
        uncached = OpenAI(base_url=plain.url + "/v1", api_key="x", max_retries=0, timeout=120).completions.create
        prompt = ("A long shared system prompt: you are a careful assistant who answers questions about geography "
                  "in one short sentence, without lists or markdown. Question: what is the capital of France?")
        kw = dict(model="default", prompt=prompt, max_tokens=10, temperature=0)
        rows = 'kinfer_engine_rows_total{kind="prefill"}'

        def settled(want_prefill):  # /metrics follows the engine every 50 ms at most
            deadline = time.time() + 10
            while True:
                m = metrics(cached.port)
                if m.get(rows) == want_prefill and m["kinfer_kv_pages_used"] == 0:
                    return m
                assert time.time() < deadline, m
                time.sleep(0.05)
        first = c.completions.create(**kw)
        L, P = first.usage.prompt_tokens, 16
        m = settled(L)
        assert m["kinfer_prefix_cache_rows_total"] == 0 and m["kinfer_kv_pages_cached"] == L // P, (L, m)
        second = c.completions.create(**kw)
        shared = min(P * (L // P), L - 2)
        m = settled(2 * L - shared)
        assert shared > 0 and m["kinfer_prefix_cache_rows_total"] == shared, (L, m)
        assert second.choices[0].text == first.choices[0].text, (first, second)
        # OpenAI's usage.prompt_tokens_details.cached_tokens: the prompt tokens the cache served.
        assert first.usage.prompt_tokens_details.cached_tokens == 0, first.usage
        assert second.usage.prompt_tokens_details.cached_tokens == shared, (second.usage, shared)
        again = uncached(**kw)
        assert again.choices[0].text == first.choices[0].text, (first, again)
        assert again.usage.prompt_tokens_details.cached_tokens == 0, again.usage
        assert metrics(plain.port)["kinfer_prefix_cache_rows_total"] == 0
        assert m["kinfer_kv_pages_cached"] == L // P, m
        assert m["kinfer_prefix_cache_evictions_total"] == 0, m  # 256 pages: nothing to evict
        assert m["kinfer_kv_pages_used"] + m["kinfer_kv_pages_cached"] + m["kinfer_kv_pages_free"] == 256, m
        for server in (cached, plain):
            code, _, err = server.stop(timeout=60)
            assert code == 0, err[-1000:]
    finally:
        for server in (cached, plain):
            if server.proc.poll() is None:
                server.proc.kill()


def test_chat_next_turn_shares_the_answer():
    """A chat's second turn quotes the first answer: with dense attention (the default) the answer's full pages are
    indexed too, so the second turn's cached_tokens reach past the first turn's prompt pages into its answer."""
    chat = Server("--kv-pages", "256", "--max-seqs", "8")
    try:
        c = OpenAI(base_url=chat.url + "/v1", api_key="x", max_retries=0, timeout=120)
        m1 = [{"role": "system", "content": "You are a helpful assistant who explains things in detail."},
              {"role": "user", "content": "Tell me about the city of Paris and its history."}]
        r1 = c.chat.completions.create(model="default", messages=m1, max_tokens=60, temperature=0)
        P = 16
        prompt_pages = r1.usage.prompt_tokens // P * P
        # Rows computed for the first turn: its prompt and all its answer but the last token.
        computed = (r1.usage.prompt_tokens + r1.usage.completion_tokens - 1) // P * P
        assert computed > prompt_pages, r1.usage
        m2 = m1 + [{"role": "assistant", "content": r1.choices[0].message.content},
                   {"role": "user", "content": "And what about Lyon?"}]
        r2 = c.chat.completions.create(model="default", messages=m2, max_tokens=8, temperature=0)
        cached = r2.usage.prompt_tokens_details.cached_tokens
        assert prompt_pages < cached <= computed and cached % P == 0, (r1.usage, r2.usage)
        code, _, err = chat.stop(timeout=60)
        assert code == 0, err[-1000:]
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_prefix_cache_routes_by_prompt_across_replicas():
    """--prefix-cache with two replicas: requests of one prompt, one after another, all go to the replica that took
    it first (the other is as idle), so each later one shares its pages; /metrics counts them as routed by prefix."""
    two = Server("--replicas", "2", "--kv-pages", "256", "--max-seqs", "16")
    try:
        c = OpenAI(base_url=two.url + "/v1", api_key="x", max_retries=0, timeout=120)
        prompt = ("Routing by prefix: a system prompt long enough to fill a few KV pages, shared by every request "
                  "of this test, then the question. Question: what is the capital of Italy?")
        texts = [c.completions.create(model="default", prompt=prompt, max_tokens=4, temperature=0).choices[0].text
                 for _ in range(4)]
        assert len(set(texts)) == 1, texts
        L, P = c.completions.create(model="default", prompt=prompt, max_tokens=1).usage.prompt_tokens, 16
        shared = min(P * (L // P), L - 2)
        deadline = time.time() + 10  # /metrics follows the engines every 50 ms at most
        while True:
            m = wait_idle(two.port, timeout=60)
            if m["kinfer_prefix_routed_requests_total"] == 4 and m["kinfer_prefix_cache_rows_total"] == 4 * shared:
                break
            assert time.time() < deadline, (L, shared, m)
            time.sleep(0.05)
        code, _, err = two.stop(timeout=60)
        assert code == 0, err[-1000:]
    finally:
        if two.proc.poll() is None:
            two.proc.kill()


def test_cli():
    h = subprocess.run([KINFER, "serve", "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--served-model-name" in h.stdout and "--max-waiting" in h.stdout
    assert "--prefix-cache" in h.stdout
    bad = subprocess.run([KINFER, "serve", "--model", "default", "--port", "70000"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "--port" in bad.stderr, bad.stderr
    busy = subprocess.run([KINFER, "serve", "--model", "default", "--port", str(srv.port)], capture_output=True,
                          text=True, timeout=120)
    assert busy.returncode == 1 and "cannot listen" in busy.stderr, busy.stderr


checks = Checks()
try:
    for fn in (test_models, test_completion_and_usage, test_engine_metrics_grow_with_a_request,
               test_best_of_8_and_token_prompts,
               test_streaming_equals_non_streaming, test_chat_and_chat_streaming, test_logprobs,
               test_echo_scores_the_prompt, test_stop_strings_and_stop_tokens,
               test_seed_reproducibility_and_generate_parity, test_per_request_policy_and_usage, test_errors,
               test_hangup_cancels_and_frees_pages, test_waiting_limit_and_graceful_shutdown,
               test_thousand_open_connections_do_not_starve_new_requests,
               test_data_parallel_replicas_serve_the_same_samples, test_prefix_cache,
               test_chat_next_turn_shares_the_answer, test_prefix_cache_routes_by_prompt_across_replicas, test_cli):
        checks.run(fn)
    checks.run(lambda: wait_idle(srv.port))
finally:
    code, _, err = srv.stop()
    if code != 0:
        print("kinfer serve exited with", code, err[-2000:])
        checks.failed += 1
sys.exit(checks.finish())
