#!/usr/bin/env python3
"""Times HF `tokenizers` on the texts `kinfer bench tokenize` uses (GSM8K
question/answer + MATH500 problem/solution), one text at a time on one
thread, and prints one JSON object. --model: tokenizer.json (or .json.gz, or
an HF directory) or a GGUF file / 'default' (the tokenizer is rebuilt from the
GGUF vocabulary as tools/make_tokenizer_fixtures.py does).

  pip install tokenizers gguf
  python3 tools/bench_hf_tokenize.py --model default --data ../shared/data
"""
import argparse
import gzip
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def load(model):
    if model == "default":
        model = os.environ.get("KINFER_DEFAULT_MODEL") or os.path.expanduser(
            "~/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.isdir(model):
        model = os.path.join(model, "tokenizer.json")
    if model.endswith(".gguf"):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import make_tokenizer_fixtures as fx
        os.environ["KINFER_DEFAULT_MODEL"] = model
        return fx.smollm2_tokenizer()[0]
    if model.endswith(".gz"):
        with gzip.open(model, "rt", encoding="utf-8") as f:
            return Tokenizer.from_str(f.read())
    return Tokenizer.from_file(model)


def texts(data):
    out = []
    for name, keys in (("gsm8k.jsonl", ("question", "answer")), ("math500.jsonl", ("problem", "solution"))):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out += [r[k] for k in keys if isinstance(r.get(k), str)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    t0 = time.perf_counter()
    tok = load(a.model)
    load_s = time.perf_counter() - t0
    xs = texts(a.data)
    secs, tokens = [], 0
    for _ in range(a.repeat + 1):  # pass 0 is the cold one
        t = time.perf_counter()
        tokens = sum(len(tok.encode(x, add_special_tokens=False).ids) for x in xs)
        secs.append(time.perf_counter() - t)
    best = min(secs[1:])
    print(json.dumps({"impl": "hf-tokenizers", "version": tokenizers.__version__, "texts": len(xs),
                      "tokens": tokens, "load_s": load_s, "cold_s": secs[0], "best_s": best,
                      "tokens_per_s": tokens / best, "cold_tokens_per_s": tokens / secs[0]}))


if __name__ == "__main__":
    main()
