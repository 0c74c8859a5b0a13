#!/usr/bin/env python3
"""Builds the tiny random-weight HF checkpoints that tests/model/hf_parity.cpp
checks kinfer's forward against (DESIGN.md, Testing layers).

Runs where torch + transformers are installed (the GPU machine):
    python3 tools/make_model_fixtures.py OUT_DIR [NAME ...]
For each model it writes OUT_DIR/<name>.tar holding <name>/config.json,
<name>/model.safetensors (fp32), <name>/logits.bin (fp32 little-endian,
[n_tokens, vocab], row-major) and <name>/meta.json (the token ids, the logits
shape, HF's rotary inv_freq and versions). Unpack them into
tests/fixtures/models/.

Weights are random with a fixed seed, scaled so every part of the network
matters to the logits (norm weights and biases are not left at 1 and 0).
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

# name, class name, config fields, rope scaling (None or llama3 dict), rope theta
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
]

V5 = int(transformers.__version__.split(".")[0]) >= 5


def make_config(family, fields, scaling, theta):
    cls = getattr(transformers, family + "Config")
    kw = dict(fields)
    if V5:
        rope = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            rope.update(scaling)
            rope["rope_theta"] = theta
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


def make_one(out, idx, name, family, fields, scaling, theta):
    cfg = make_config(family, fields, scaling, theta)
    cls = getattr(transformers, family + "ForCausalLM")
    model = cls(cfg).to(torch.float32).eval()
    randomize(model, 1234 + idx)
    rng = np.random.default_rng(99 + idx)
    ids = rng.integers(0, cfg.vocab_size, size=N_TOKENS)
    ids[0], ids[5] = 0, cfg.vocab_size - 1
    ids_t = torch.tensor(ids[None, :], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids_t).logits[0].to(torch.float32)
        logits64 = model.to(torch.float64)(input_ids=ids_t).logits[0]
    model.to(torch.float32)
    fp32_vs_fp64 = float((logits.double() - logits64).abs().max())
    try:
        inv_freq = model.model.rotary_emb.inv_freq.detach().double().tolist()
    except AttributeError:
        inv_freq = []

    tmp = os.path.join(out, "_tmp_" + name)
    model.save_pretrained(tmp, safe_serialization=True)
    legacy_rope_keys(os.path.join(tmp, "config.json"), scaling, theta)
    meta = {
        "name": name, "family": family, "tokens": [int(t) for t in ids],
        "logits_shape": [N_TOKENS, cfg.vocab_size], "logits_dtype": "f32",
        "hf_inv_freq": inv_freq, "max_abs_fp32_vs_fp64": fp32_vs_fp64,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
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
          f"fp32 vs fp64 {fp32_vs_fp64:.2e}, saved {sorted(os.listdir(out))}")


if __name__ == "__main__":
    main()
