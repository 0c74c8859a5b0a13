#!/usr/bin/env python3
"""HF transformers `generate` baselines for the engine-at-scale comparisons,
run on the GPU machine in the same session as kinfer's numbers. Prints one
JSON line per run.

Synthetic job (`kinfer bench generate --device cuda --model random:qwen3-0.6b
-n 256 --max-tokens 256 --ignore-eos`'s work): a batch of B sequences, each a
P-token prompt followed by exactly L sampled tokens (Qwen3 defaults T 0.6,
top-k 20, top-p 0.95), random bf16 weights of the preset's shape, SDPA:

    python3 tools/bench_hf_generate.py synthetic --preset qwen3-0.6b --batch 256 --prompt 512 --new 256

Eval job (`kinfer eval --device cuda --model SmolLM2-...gguf --dataset gsm8k
-n 16 --max-tokens 320`'s work): the GGUF loaded by transformers (needs the
`gguf` package), GSM8K problems through the model's chat template with
kinfer's kinetics-math prompt, `--problems-per-call` problems x n samples per
generate call (left padding), stopping at EOS or --max-tokens:

    python3 tools/bench_hf_generate.py eval --gguf /tmp/smol.gguf --data data/gsm8k.jsonl --problems 96 -n 16

Generated tokens are counted up to each sample's EOS (what kinfer counts).
"""
import argparse
import json
import time

import torch
import transformers

PRESETS = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}

# kinfer's kinetics-math template (src/eval/prompt.cpp).
KINETICS_MATH = ("Solve the following math problem efficiently and clearly. The last line of your response should "
                 "be of the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is "
                 "correct' (without quotes) where ANSWER is just the final number or expression that solves the "
                 "problem. Think step by step before answering.\n\n{question}")


def synthetic(a):
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rope_theta=1e6,
                                   rms_norm_eps=1e-6, **PRESETS[a.preset])
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = transformers.Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt), device="cuda")
    kw = dict(max_new_tokens=a.new, min_new_tokens=a.new, do_sample=True, temperature=0.6, top_k=20, top_p=0.95,
              pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    new = (out.shape[1] - a.prompt) * a.batch
    print(json.dumps({"bench": "hf_generate", "job": "synthetic", "preset": a.preset, "batch": a.batch,
                      "prompt": a.prompt, "new_tokens": a.new, "generated_tokens": new, "wall_s": secs,
                      "gen_tok_s": new / secs, "transformers": transformers.__version__}), flush=True)


def evaluate(a):
    tok = transformers.AutoTokenizer.from_pretrained(a.gguf_dir, gguf_file=a.gguf)
    model = transformers.AutoModelForCausalLM.from_pretrained(a.gguf_dir, gguf_file=a.gguf,
                                                              torch_dtype=torch.bfloat16).cuda().eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in open(a.data)][: a.problems]
    prompts = [tok.apply_chat_template([{"role": "user", "content": KINETICS_MATH.format(
        question=r.get("question") or r.get("problem"))}], tokenize=False, add_generation_prompt=True) for r in rows]
    eos = {tok.eos_token_id} | ({tok.convert_tokens_to_ids("<|im_end|>")} if "<|im_end|>" in tok.get_vocab() else set())
    gen = 0
    t0 = time.perf_counter()
    for b in range(0, len(prompts), a.problems_per_call):
        batch = [p for p in prompts[b:b + a.problems_per_call] for _ in range(a.n)]
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=a.max_tokens, do_sample=True, temperature=a.temperature,
                                 top_k=a.top_k, top_p=a.top_p, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(eos))
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for seq in new:
            n = len(seq)
            for i, t in enumerate(seq):
                if t in eos:
                    n = i
                    break
            gen += n
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    print(json.dumps({"bench": "hf_generate", "job": "eval", "gguf": a.gguf, "problems": len(prompts), "n": a.n,
                      "max_tokens": a.max_tokens, "generated_tokens": gen, "wall_s": secs, "gen_tok_s": gen / secs,
                      "transformers": transformers.__version__}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="job", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--preset", default="qwen3-0.6b", choices=sorted(PRESETS))
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--prompt", type=int, default=512)
    s.add_argument("--new", type=int, default=256)
    e = sub.add_parser("eval")
    e.add_argument("--gguf", required=True, help="GGUF file name inside --gguf-dir")
    e.add_argument("--gguf-dir", default=".")
    e.add_argument("--data", required=True)
    e.add_argument("--problems", type=int, default=96)
    e.add_argument("--problems-per-call", type=int, default=16)
    e.add_argument("-n", type=int, default=16)
    e.add_argument("--max-tokens", type=int, default=320)
    e.add_argument("--temperature", type=float, default=0.6)
    e.add_argument("--top-k", type=int, default=20)
    e.add_argument("--top-p", type=float, default=0.95)
    a = ap.parse_args()
    synthetic(a) if a.job == "synthetic" else evaluate(a)


if __name__ == "__main__":
    main()
