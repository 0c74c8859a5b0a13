#!/usr/bin/env python3
"""Greedy continuations of SmolLM2 by llama.cpp: the independent reference of
tests/model/llamacpp_greedy.cpp (fixture tests/fixtures/llamacpp/smollm2_greedy.json).

For each prompt it records llama.cpp's prompt token ids, the 32 greedy tokens
and, at each step, the gap between llama.cpp's two largest logits; once with
llama.cpp's defaults (flash attention auto: on for the CPU, summing the output
in f16) and once with flash attention off (f32 sums). It drives
the libllama built by tools/llamacpp_build.sh through the ctypes module of the
llama-cpp-python sdist (standard library only: the package's high-level layer
is not imported). One thread, F16 KV cache (llama.cpp's default).

  source tools/llamacpp_build.sh
  python3 tools/make_llamacpp_greedy.py --model ~/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --out tests/fixtures/llamacpp/smollm2_greedy.json
"""
import argparse
import ctypes
import json
import os
import sys
import types

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village,",
    "<|im_start|>user\nNatalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?<|im_end|>\n<|im_start|>assistant\n",
]


def load_bindings(sdist, lib_dir):
    """The sdist's llama_cpp/llama_cpp.py (ctypes) without the package's __init__."""
    os.environ["LLAMA_CPP_LIB_PATH"] = lib_dir
    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [os.path.join(sdist, "llama_cpp")]
    sys.modules["llama_cpp"] = pkg
    import llama_cpp.llama_cpp as ll  # noqa: E402

    return ll


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sdist", default=os.environ.get("LLAMACPP_SDIST"))
    ap.add_argument("--lib", default=os.environ.get("LLAMACPP_BIN"))
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    if not a.sdist or not a.lib:
        sys.exit("--sdist/--lib (or source tools/llamacpp_build.sh) are required")
    ll = load_bindings(a.sdist, a.lib)
    ll.llama_backend_init()
    mp = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit(f"llama.cpp could not load {a.model}")
    vocab = ll.llama_model_get_vocab(model)
    n_vocab = ll.llama_vocab_n_tokens(vocab)

    def tokenize(text):
        buf = (ll.llama_token * 4096)()
        n = ll.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 4096, False, True)
        if n < 0:
            sys.exit(f"tokenize failed for {text!r}")
        return [buf[i] for i in range(n)]

    def piece(tok):
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(vocab, tok, buf, 256, 0, True)
        return buf.raw[:n]

    def greedy(flash_attn):
        results = []
        for text in PROMPTS:
            cp = ll.llama_context_default_params()
            cp.n_ctx = 512
            cp.n_batch = 512
            cp.n_threads = 1
            cp.n_threads_batch = 1
            cp.flash_attn_type = {"auto": -1, "off": 0}[flash_attn]
            ctx = ll.llama_init_from_model(model, cp)
            prompt = tokenize(text)
            ids = (ll.llama_token * len(prompt))(*prompt)
            if ll.llama_decode(ctx, ll.llama_batch_get_one(ids, len(prompt))) != 0:
                sys.exit("llama_decode failed on the prompt")
            out, gaps, text_out = [], [], b""
            for _ in range(a.tokens):
                logits = ll.llama_get_logits_ith(ctx, -1)
                row = [logits[i] for i in range(n_vocab)]
                best = max(range(n_vocab), key=lambda i: (row[i], -i))  # ties -> lowest id
                second = max(row[i] for i in range(n_vocab) if i != best)
                out.append(best)
                gaps.append(round(row[best] - second, 6))
                text_out += piece(best)
                one = (ll.llama_token * 1)(best)
                if ll.llama_decode(ctx, ll.llama_batch_get_one(one, 1)) != 0:
                    sys.exit("llama_decode failed")
            ll.llama_free(ctx)
            results.append({"prompt": text, "prompt_ids": prompt, "greedy_ids": out, "top2_gap": gaps,
                            "text": text_out.decode("utf-8", errors="replace")})
            print(f"[flash attn {flash_attn}] {text[:40]!r} -> {results[-1]['text']!r}", file=sys.stderr)
        return results

    # llama.cpp's default (flash attention auto = on for the CPU, which sums
    # the output in f16) and its f32-accumulating path (flash attention off).
    runs = {"flash_attn_auto": greedy("auto"), "flash_attn_off": greedy("off")}
    ll.llama_model_free(model)
    fixture = {
        "made_by": "tools/make_llamacpp_greedy.py",
        "llama_cpp": {"pypi": "llama-cpp-python==0.3.36", "commit": os.environ.get("LLAMACPP_COMMIT", "unknown"),
                      "threads": 1, "kv_cache": "default (F16)"},
        "model": os.path.basename(a.model),
        "model_bytes": os.path.getsize(a.model),
        "tokens": a.tokens,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
