#!/usr/bin/env python3
"""Builds the tiny random-weight HF checkpoints that tests/model/hf_parity.cpp
checks kinfer's forward against (DESIGN.md, Testing layers).

Runs where torch + transformers are installed (a CPU is enough):
    python3 tools/make_model_fixtures.py OUT_DIR [NAME ...]
For each model it writes OUT_DIR/<name>.tar holding <name>/config.json,
<name>/model.safetensors (fp32), <name>/logits.bin (fp32 little-endian,
[n_tokens, vocab], row-major) and <name>/meta.json (the token ids, the logits
shape, HF's rotary inv_freq, HF's greedy continuation and versions). Unpack
them into tests/fixtures/models/.

Weights are random with a fixed seed, scaled so every part of the network
matters to the logits (norm weights and biases are not left at 1 and 0).

The *_v5 models keep config.json exactly as transformers >= 5 writes it: RoPE
only inside "rope_parameters", no top-level rope_theta, with a non-default
theta and head_dim != hidden_size / num_attention_heads, so a loader that
reads only the legacy keys gets them wrong. They need transformers >= 5.
"""
import io
import json
import math
import os
import sys
import tarfile

import numpy as np
import torch
import transformers

N_TOKENS = 24

# name, class name, config fields, rope scaling (None or llama3 dict), rope theta[, options]
# options: v5 (config.json as transformers >= 5 writes it, see above),
# partial (partial_rotary_factor). New models go at the end: the index seeds the weights.
MODELS = [
    ("qwen3_tied", "Qwen3", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                 vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-6,
                                 max_position_embeddings=512), None, 1000000.0),
    ("qwen2_untied", "Qwen2", dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3,
                                   num_attention_heads=6, num_key_value_heads=2,
                                   vocab_size=320, tie_word_embeddings=False, rms_norm_eps=1e-6,
                                   max_position_embeddings=512), None, 10000.0),
    ("llama3_untied", "Llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                    vocab_size=288, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                    max_position_embeddings=512),
     dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=64), 500000.0),
    ("llama_tied", "Llama", dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                                 num_attention_heads=3, num_key_value_heads=3, head_dim=16,
                                 vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-5,
                                 max_position_embeddings=512), None, 10000.0),
    # GPU-shaped (the CUDA kernels take head_dim 64 or 128): tests/kernels/cuda_model.cpp.
    ("qwen3_hd128", "Qwen3", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                                  vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-6,
                                  max_position_embeddings=512), None, 1000000.0),
    ("llama_hd64", "Llama", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                                 vocab_size=256, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                 max_position_embeddings=512), None, 500000.0),
    ("qwen3_v5", "Qwen3", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                               vocab_size=256, tie_word_embeddings=False, rms_norm_eps=1e-6,
                               max_position_embeddings=512), None, 250000.0, dict(v5=True)),
    ("qwen2_v5", "Qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                               vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-6,
                               max_position_embeddings=512), None, 50000.0, dict(v5=True)),
    ("llama3_v5", "Llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                vocab_size=256, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                max_position_embeddings=512),
     dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=64), 300000.0, dict(v5=True)),
    # partial_rotary_factor 0.5: transformers 5's Llama ignores it with default
    # RoPE (and fails with scaled RoPE), so the reference is its Llama with
    # transformers' own partial-rotary RoPE, Phi-3's (frequencies over the
    # first rotary_dim dims, rotate those, pass the rest): what vLLM's Llama does.
    ("llama_partial_v5", "Llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                       vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-5,
                                       max_position_embeddings=512), None, 20000.0,
     dict(v5=True, partial=0.5)),
    # GPU-shaped transformers-5 checkpoints (tests/kernels/cuda_model.cpp).
    ("qwen3_v5_hd128", "Qwen3", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                                     vocab_size=256, tie_word_embeddings=True, rms_norm_eps=1e-6,
                                     max_position_embeddings=512), None, 5000000.0, dict(v5=True)),
    ("llama3_v5_hd64", "Llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                     vocab_size=256, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                     max_position_embeddings=512),
     dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=64), 800000.0, dict(v5=True)),
]

V5 = int(transformers.__version__.split(".")[0]) >= 5


def make_config(family, fields, scaling, theta, opts):
    cls = getattr(transformers, family + "Config")
    kw = dict(fields)
    if opts.get("v5") and not V5:
        raise RuntimeError(f"transformers {transformers.__version__}: the *_v5 fixtures need transformers >= 5")
    if V5:
        rope = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            rope.update(scaling)
            rope["rope_theta"] = theta
        if "partial" in opts:
            rope["partial_rotary_factor"] = opts["partial"]
        kw["rope_parameters"] = rope
    else:
        kw["rope_theta"] = theta
        if scaling:
            kw["rope_scaling"] = dict(scaling)
    try:
        cfg = cls(**kw)
    except Exception:  # a transformers that wants the other rope spelling
        kw.pop("rope_parameters", None)
        kw["rope_theta"] = theta
        if scaling:
            kw["rope_scaling"] = dict(scaling)
        cfg = cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if "norm" in name:
                val = 1.0 + 0.2 * noise
            elif name.endswith("bias"):
                val = 0.2 * noise
            elif "embed_tokens" in name:
                val = 0.5 * noise
            else:  # [out, in] projection: unit-gain init, a bit hotter to exercise softmax
                val = 1.5 * noise / math.sqrt(p.shape[1])
            p.copy_(val.to(p.dtype))


def legacy_rope_keys(config_path, scaling, theta):
    """Real HF checkpoints (Qwen3, Llama 3) carry rope_theta / rope_scaling at the
    top level; transformers 5 writes rope_parameters. Keep both so the fixture
    looks like what users download."""
    with open(config_path) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_theta", theta)
    if scaling and not cfg.get("rope_scaling"):
        cfg["rope_scaling"] = dict(scaling)
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def greedy(model, ids, n):
    """HF's greedy continuation of ids (n tokens, full recompute each step) and
    the smallest top-1 margin on the way, so a test can trust the ids."""
    seq, margin = ids.clone(), float("inf")
    with torch.no_grad():
        for _ in range(n):
            last = model(input_ids=seq).logits[0, -1]
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq = torch.cat([seq, last.argmax().view(1, 1)], dim=1)
    return [int(t) for t in seq[0, ids.shape[1]:]], margin


def add_file(tar, arcname, data):
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "fixtures_out"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    only = set(sys.argv[2:])  # optional model names: make just these
    for idx, model_def in enumerate(MODELS):
        if only and model_def[0] not in only:
            continue
        try:
            make_one(out, idx, *model_def)
        except Exception:  # keep going: one broken model must not lose the others
            import traceback
            traceback.print_exc()


def partial_rotary_llama():
    """Swaps transformers' Llama RoPE (frequencies and their application) for
    its partial-rotary one, Phi-3's; returns the function that undoes it."""
    from transformers.models.llama import modeling_llama as llama
    from transformers.models.phi3 import modeling_phi3 as phi3
    apply, init = llama.apply_rotary_pos_emb, llama.LlamaRotaryEmbedding.compute_default_rope_parameters
    llama.apply_rotary_pos_emb = phi3.apply_rotary_pos_emb
    llama.LlamaRotaryEmbedding.compute_default_rope_parameters = staticmethod(
        phi3.Phi3RotaryEmbedding.compute_default_rope_parameters)

    def undo():
        llama.apply_rotary_pos_emb = apply
        llama.LlamaRotaryEmbedding.compute_default_rope_parameters = staticmethod(init)
    return undo


def make_one(out, idx, name, family, fields, scaling, theta, opts=None):
    opts = opts or {}
    undo = partial_rotary_llama() if "partial" in opts else (lambda: None)
    try:
        make_model(out, idx, name, family, fields, scaling, theta, opts)
    finally:
        undo()


def make_model(out, idx, name, family, fields, scaling, theta, opts):
    cfg = make_config(family, fields, scaling, theta, opts)
    cls = getattr(transformers, family + "ForCausalLM")
    model = cls(cfg).to(torch.float32).eval()
    randomize(model, 1234 + idx)
    rng = np.random.default_rng(99 + idx)
    ids = rng.integers(0, cfg.vocab_size, size=N_TOKENS)
    ids[0], ids[5] = 0, cfg.vocab_size - 1
    ids_t = torch.tensor(ids[None, :], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids_t).logits[0].to(torch.float32)
        greedy_ids, greedy_margin = greedy(model, ids_t, N_TOKENS)
        logits64 = model.to(torch.float64)(input_ids=ids_t).logits[0]
        greedy64, _ = greedy(model, ids_t, N_TOKENS)
    model.to(torch.float32)
    fp32_vs_fp64 = float((logits.double() - logits64).abs().max())
    # fp32 rounding must not decide a greedy token, or the ids test nothing stable.
    assert greedy64 == greedy_ids, f"{name}: greedy ids differ between fp32 and fp64"
    try:
        inv_freq = model.model.rotary_emb.inv_freq.detach().double().tolist()
    except AttributeError:
        inv_freq = []

    tmp = os.path.join(out, "_tmp_" + name)
    model.save_pretrained(tmp, safe_serialization=True)
    config_path = os.path.join(tmp, "config.json")
    if opts.get("v5"):
        with open(config_path) as f:
            saved = json.load(f)
        assert "rope_theta" not in saved and "rope_parameters" in saved, f"{name}: not a transformers-5 layout"
    else:
        legacy_rope_keys(config_path, scaling, theta)
    meta = {
        "name": name, "family": family, "tokens": [int(t) for t in ids],
        "logits_shape": [N_TOKENS, cfg.vocab_size], "logits_dtype": "f32",
        "hf_inv_freq": inv_freq, "max_abs_fp32_vs_fp64": fp32_vs_fp64,
        "greedy": greedy_ids, "greedy_min_top2_margin": greedy_margin,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    if "partial" in opts:
        meta["reference"] = ("transformers LlamaForCausalLM with Phi-3's partial-rotary RoPE (inv_freq and "
                             "apply_rotary_pos_emb); transformers' Llama ignores partial_rotary_factor")
    assert len(inv_freq) * 2 == int(cfg.head_dim * opts.get("partial", 1.0)), f"{name}: inv_freq {len(inv_freq)}"
    with tarfile.open(os.path.join(out, name + ".tar"), "w") as tar:
        for fn in ("config.json", "model.safetensors"):
            with open(os.path.join(tmp, fn), "rb") as f:
                add_file(tar, f"{name}/{fn}", f.read())
        add_file(tar, f"{name}/logits.bin", logits.numpy().astype("<f4").tobytes())
        add_file(tar, f"{name}/meta.json", json.dumps(meta, indent=1).encode())
    for fn in os.listdir(tmp):
        os.remove(os.path.join(tmp, fn))
    os.rmdir(tmp)
    print(f"{name}: vocab {cfg.vocab_size}, logits absmax {float(logits.abs().max()):.3f}, "
          f"fp32 vs fp64 {fp32_vs_fp64:.2e}, greedy margin {greedy_margin:.3g}, saved {sorted(os.listdir(out))}")


if __name__ == "__main__":
    main()
