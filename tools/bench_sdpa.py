#!/usr/bin/env python3
"""Time PyTorch scaled_dot_product_attention on the decode shapes of
`kinfer bench attention` (one query row per sequence, contiguous bf16 KV, GQA),
so both are measured in the same GPU run. Prints one JSON object per shape.

  python3 tools/bench_sdpa.py --shapes 64x16384,32x32768 --q-heads 16 --kv-heads 8 --head-dim 128
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="64x16384,32x32768", help="BATCHxCONTEXT,...")
    ap.add_argument("--q-heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
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
        for label, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                               ("cudnn", SDPBackend.CUDNN_ATTENTION)):
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
