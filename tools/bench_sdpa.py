#!/usr/bin/env python3
"""Time PyTorch scaled_dot_product_attention on the decode shapes of
`kinfer bench attention` (one query row per sequence, contiguous bf16 KV, GQA),
so both are measured in the same GPU run. Prints one JSON object per shape.
--q-rows N times the causal prefill shapes of `kinfer bench attention --q-rows N`
instead: N query rows per sequence at the end of its context (bottom-right
aligned causal mask; is_causal when N = context), K/V expanded to the query
heads, TFLOP/s counting 4 * D * Hq * (keys each row sees).

  python3 tools/bench_sdpa.py --shapes 64x16384,32x32768 --q-heads 16 --kv-heads 8 --head-dim 128
  python3 tools/bench_sdpa.py --shapes 4x2048,1x8192 --q-rows 2048
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right


def time_ms(fn, iters, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(reps):
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b) / iters)
    ms.sort()
    return ms[len(ms) // 2], ms[0]


BACKENDS = (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION))


def causal(a, dev, name):
    """Prefill chunks: q [B, Hq, N, D] against k, v [B, Hq, L, D], causal."""
    N = a.q_rows
    for shape in a.shapes.split(","):
        B, L = (int(x) for x in shape.split("x"))
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.rand(B, a.q_heads, N, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 4 - 2
        k = torch.rand(B, a.kv_heads, L, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 2 - 1
        v = torch.rand(B, a.kv_heads, L, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 2 - 1
        rep = a.q_heads // a.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = None if N == L else causal_lower_right(N, L)
        keys = N * (L - N) + N * (N + 1) / 2  # keys seen, summed over a sequence's rows
        flops = 4.0 * a.head_dim * a.q_heads * B * keys
        rows = {}
        for label, backend in BACKENDS:
            def run(backend=backend):
                with sdpa_kernel(backend):
                    if mask is None:
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            try:
                med, best = time_ms(run, a.iters, a.reps)
                rows[label] = {"ms_per_step": round(med, 4), "ms_min": round(best, 4),
                               "tflops": round(flops / (med * 1e-3) / 1e12, 2)}
            except Exception as e:  # a backend that refuses this shape
                rows[label] = {"error": str(e).splitlines()[0][:160]}
        ok = [r["ms_per_step"] for r in rows.values() if "ms_per_step" in r]
        print(json.dumps({"bench": "sdpa_causal", "device": name, "torch": torch.__version__, "batch": B,
                          "context": L, "q_rows": N, "q_heads": a.q_heads, "kv_heads": a.kv_heads,
                          "head_dim": a.head_dim, "flops": flops, "best_ms_per_step": min(ok) if ok else None,
                          "best_tflops": round(flops / (min(ok) * 1e-3) / 1e12, 2) if ok else None,
                          "variants": rows}), flush=True)
        del q, k, v
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="64x16384,32x32768", help="BATCHxCONTEXT,...")
    ap.add_argument("--q-heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--q-rows", type=int, default=1, help=">1: causal prefill chunks of this many rows")
    a = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    if a.q_rows > 1:
        return causal(a, dev, name)
    for shape in a.shapes.split(","):
        B, L = (int(x) for x in shape.split("x"))
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.rand(B, a.q_heads, 1, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 4 - 2
        k = torch.rand(B, a.kv_heads, L, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 2 - 1
        v = torch.rand(B, a.kv_heads, L, a.head_dim, device=dev, generator=g, dtype=torch.bfloat16) * 2 - 1
        nbytes = 2 * k.numel() * 2 + 2 * q.numel() * 2  # K, V read; q read, out written
        rows = {}
        variants = {
            "default": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
        }
        for label, backend in BACKENDS:
            def run(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            variants[label] = run
        for label, fn in variants.items():
            try:
                med, best = time_ms(fn, a.iters, a.reps)
                rows[label] = {"ms_per_step": round(med, 4), "ms_min": round(best, 4),
                               "effective_gbps": round(nbytes / (med * 1e-3) / 1e9, 1)}
            except Exception as e:  # a backend that refuses this shape
                rows[label] = {"error": str(e).splitlines()[0][:160]}
        ok = [r["ms_per_step"] for r in rows.values() if "ms_per_step" in r]
        print(json.dumps({"bench": "sdpa", "device": name, "torch": torch.__version__, "batch": B, "context": L,
                          "q_heads": a.q_heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim,
                          "bytes_per_step": nbytes, "best_ms_per_step": min(ok) if ok else None,
                          "variants": rows}), flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
