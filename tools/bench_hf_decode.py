#!/usr/bin/env python3
"""HF transformers baseline for `kinfer bench decode`: the same model shape
(random weights, bf16, SDPA attention, static KV cache) decoding B sequences
that each hold a context of L tokens. Prints one JSON line like kinfer's.

    python3 tools/bench_hf_decode.py --preset qwen3-0.6b --batch 32 --context 16384

The context is prefilled for real (chunks of --chunk tokens, only the last
position's logits kept), then --tokens decode steps are timed with greedy
next tokens fed back. Needs torch and transformers (the GPU machine has both).
"""
import argparse
import inspect
import json
import time

import torch
import transformers
from transformers import Qwen3Config, Qwen3ForCausalLM, StaticCache

# Shapes of the cost-model presets (src/cost/presets.cpp), Qwen3 family.
PRESETS = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}


def make_cache(cfg, batch, max_len):
    params = inspect.signature(StaticCache.__init__).parameters
    kw = dict(config=cfg, max_cache_len=max_len)
    if "max_batch_size" in params:
        kw["max_batch_size"] = batch
    if "batch_size" in params:
        kw["batch_size"] = batch
    if "device" in params:
        kw["device"] = "cuda"
    if "dtype" in params:
        kw["dtype"] = torch.bfloat16
    return StaticCache(**kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen3-0.6b", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=16384)
    ap.add_argument("--tokens", type=int, default=10, help="timed decode steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024, help="prefill chunk length")
    a = ap.parse_args()

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6,
                      **PRESETS[a.preset])
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    max_len = a.context + a.warmup + a.tokens + 1
    cache = make_cache(cfg, a.batch, max_len)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.context), device="cuda")
    t0 = time.time()
    with torch.inference_mode():
        for s in range(0, a.context, a.chunk):
            e = min(a.context, s + a.chunk)
            out = model(input_ids=ids[:, s:e], past_key_values=cache, use_cache=True,
                        cache_position=torch.arange(s, e, device="cuda"), logits_to_keep=1)
        torch.cuda.synchronize()
        prefill_s = time.time() - t0
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        pos = a.context
        times = []
        for i in range(a.warmup + a.tokens):
            torch.cuda.synchronize()
            t = time.time()
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True,
                        cache_position=torch.tensor([pos], device="cuda"))
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            if i >= a.warmup:
                times.append(time.time() - t)
            pos += 1
    step = sum(times) / len(times)
    print(json.dumps({
        "bench": "hf_decode", "model": a.preset, "transformers": transformers.__version__,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(), "attn": "sdpa", "cache": "static",
        "batch": a.batch, "context": a.context, "tokens": a.tokens, "prefill_s": prefill_s,
        "step_ms": step * 1e3, "tokens_per_s": a.batch / step,
    }))


if __name__ == "__main__":
    main()
