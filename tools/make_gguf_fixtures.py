#!/usr/bin/env python3
"""Make the small GGUF fixtures under tests/fixtures/gguf/ with the reference
`gguf` Python package (pip install gguf numpy). Deterministic (fixed seed).

quants.gguf      for each storage type T: tensor "T.raw" (random blocks, 2 rows)
                 and "T.expected" (F32, gguf.quants.dequantize of the same bytes);
                 plus metadata of every GGUF value type, nested arrays included.
tiny_llama.gguf  a 1-layer llama with Q/K rows permuted as llama.cpp's converter
                 does; "expected.q_proj"/"expected.k_proj" hold the HF layout.
tiny_qwen2.gguf  a 1-layer qwen2 with q/k/v biases and an untied output.
tiny_qwen3.gguf  a 1-layer qwen3 with q/k norms, linear rope scaling, untied.
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gguf")
rng = np.random.default_rng(1234)

# Byte offsets of the f16 scale fields in each block (ggml block layouts); they
# get finite random values so the random blocks dequantise to finite floats.
F16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208]}


def random_blocks(qtype, rows, cols):
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // block
    raw = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        halves = rng.uniform(-2, 2, size=nblocks).astype(np.float16)
        raw[:, off:off + 2] = halves.view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(rows, cols // block * type_size)


def write_quants():
    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), "test")
    rows, cols = 2, 512
    for name, qtype in [("Q8_0", Q.Q8_0), ("Q4_0", Q.Q4_0), ("Q4_1", Q.Q4_1), ("Q4_K", Q.Q4_K), ("Q6_K", Q.Q6_K)]:
        raw = random_blocks(qtype, rows, cols)
        expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert expected.shape == (rows, cols) and np.all(np.isfinite(expected))
        w.add_tensor(f"{name}.raw", raw, raw_dtype=qtype)
        w.add_tensor(f"{name}.expected", expected)
    x = rng.normal(size=(rows, 64)).astype(np.float32)
    w.add_tensor("F32.raw", x)
    w.add_tensor("F32.expected", x)
    h = x.astype(np.float16)
    w.add_tensor("F16.raw", h)
    w.add_tensor("F16.expected", h.astype(np.float32))
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation gives exact bf16 values
    w.add_tensor("BF16.raw", bf.view(np.uint8), raw_dtype=Q.BF16)
    w.add_tensor("BF16.expected", gguf.quants.dequantize(bf.view(np.uint8), Q.BF16).astype(np.float32))
    # a 3-D tensor: GGUF stores ne = [4, 3, 2], kinfer reports row-major [2, 3, 4]
    w.add_tensor("shape3d", np.arange(24, dtype=np.float32).reshape(2, 3, 4))

    # one key per value type
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo wörld")
    w.add_uint64("test.u64", 2**40 + 7)
    w.add_int64("test.i64", -(2**40) - 7)
    w.add_float64("test.f64", 0.125)
    w.add_array("test.arr_str", ["a", "", "ccc", "Ġthe"])
    w.add_key_value("test.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_f32", [0.5, -1.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_array("test.nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("test.nested_str", [["x", "yy"], ["zzz"]])
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_model(path, arch, *, permute, bias, qk_norm, tied, rope_linear=None):
    hidden, ffn, n_head, n_kv, hd, vocab = 32, 48, 4, 2, 8, 16
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if rope_linear:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_linear)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def r(*shape):
        return rng.normal(size=shape).astype(np.float32)

    # Quantised Q8_0 (rows quantise independently, so permuting rows commutes with it):
    # the embedding and Q; "expected.*" hold what kinfer must read back in HF layout.
    q, k = r(n_head * hd, hidden), r(n_kv * hd, hidden)
    q8 = gguf.quants.quantize(llama_permute(q, n_head) if permute else q, Q.Q8_0)
    q = gguf.quants.dequantize(gguf.quants.quantize(q, Q.Q8_0), Q.Q8_0).astype(np.float32)
    emb8 = gguf.quants.quantize(r(vocab, hidden), Q.Q8_0)
    w.add_tensor("token_embd.weight", emb8, raw_dtype=Q.Q8_0)
    w.add_tensor("expected.embed", gguf.quants.dequantize(emb8, Q.Q8_0).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", r(hidden))
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.attn_k.weight", llama_permute(k, n_kv) if permute else k)
    w.add_tensor("blk.0.attn_v.weight", r(n_kv * hd, hidden))
    w.add_tensor("blk.0.attn_output.weight", r(hidden, n_head * hd))
    if bias:
        qb, kb = r(n_head * hd), r(n_kv * hd)
        w.add_tensor("blk.0.attn_q.bias", llama_permute(qb, n_head) if permute else qb)
        w.add_tensor("blk.0.attn_k.bias", llama_permute(kb, n_kv) if permute else kb)
        w.add_tensor("blk.0.attn_v.bias", r(n_kv * hd))
        w.add_tensor("expected.q_bias", qb)
        w.add_tensor("expected.k_bias", kb)
    if qk_norm:
        w.add_tensor("blk.0.attn_q_norm.weight", r(hd))
        w.add_tensor("blk.0.attn_k_norm.weight", r(hd))
    w.add_tensor("blk.0.ffn_norm.weight", r(hidden))
    w.add_tensor("blk.0.ffn_gate.weight", r(ffn, hidden))
    w.add_tensor("blk.0.ffn_up.weight", r(ffn, hidden))
    w.add_tensor("blk.0.ffn_down.weight", r(hidden, ffn).astype(np.float16))  # an F16 tensor
    w.add_tensor("output_norm.weight", r(hidden))
    if not tied:
        w.add_tensor("output.weight", r(vocab, hidden))
    w.add_tensor("expected.q_proj", q)
    w.add_tensor("expected.k_proj", k)
    finish(w)


def main():
    os.makedirs(OUT, exist_ok=True)
    write_quants()
    tiny_model(os.path.join(OUT, "tiny_llama.gguf"), "llama", permute=True, bias=True, qk_norm=False, tied=True)
    tiny_model(os.path.join(OUT, "tiny_qwen2.gguf"), "qwen2", permute=False, bias=True, qk_norm=False, tied=False)
    tiny_model(os.path.join(OUT, "tiny_qwen3.gguf"), "qwen3", permute=False, bias=False, qk_norm=True, tied=False,
               rope_linear=2.0)
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), file=sys.stderr)


if __name__ == "__main__":
    main()
