#!/usr/bin/env bash
# kinfer info --json on random:PRESET models and the real default model (SmolLM2-135M-Instruct Q4_1 GGUF),
# plus --help and a clear error for a missing model. Skips (exit 0) when the
# model is not installed.
set -euo pipefail
: "${KINFER:?set KINFER to the kinfer binary}"
model="${KINFER_DEFAULT_MODEL:-$HOME/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf}"

grep -q -- "--json" <<< "$("$KINFER" info --help)"
if "$KINFER" info --model /nonexistent/model.gguf 2>/tmp/kf_info_err.$$; then
  echo "FAIL: a missing model should be an error"; exit 1
fi
grep -q "/nonexistent/model.gguf" /tmp/kf_info_err.$$ || { echo "FAIL: error does not name the path"; cat /tmp/kf_info_err.$$; exit 1; }
rm -f /tmp/kf_info_err.$$

# random:PRESET: the preset's config and the tensors it reads, nothing stored. The
# plain counts are the published parameter totals of the Hugging Face checkpoints
# (Qwen3-0.6B 596,049,920 with tied embeddings; Qwen3-8B 8,190,735,360).
"$KINFER" info --model random:qwen3-0.6b --json | python3 -c "
import json, sys
j = json.load(sys.stdin)
assert j['format'] == 'random' and j['model'] == 'random:qwen3-0.6b', j
assert j['params'] == {'plain': 596049920, 'kinetics': 596049920 + 151936 * 1024}, j['params']
assert j['tensors']['count'] == 2 + 28 * 11 and j['tensors']['by_dtype'] == {}, j['tensors']  # embed, final norm, 11 a layer; tied: no lm_head
assert j['memory']['weights_stored_bytes'] == 0 and j['memory']['kv_bytes_per_token_bf16'] == 2 * 28 * 8 * 128 * 2, j['memory']
"
"$KINFER" info --model random:qwen3-8b --json | python3 -c "
import json, sys
p = json.load(sys.stdin)['params']
assert p == {'plain': 8190735360, 'kinetics': 8190735360}, p
"
if "$KINFER" info --model random:qwen3-9b 2>/tmp/kf_info_err.$$; then echo "FAIL: unknown preset accepted"; exit 1; fi
grep -q "unknown model preset 'qwen3-9b'" /tmp/kf_info_err.$$ || { echo "FAIL: unknown preset error"; cat /tmp/kf_info_err.$$; exit 1; }
rm -f /tmp/kf_info_err.$$

if [[ ! -e "$model" ]]; then
  echo "SKIP: $model not installed (run scripts/demo)"; exit 0
fi
json="$("$KINFER" info --model "$model" --json)"
python3 - "$json" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
c = j["config"]
want = {"arch": "llama", "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "intermediate_size": 1536,
        "tie_word_embeddings": True, "qk_norm": False, "qkv_bias": False}
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
assert not bad, f"config mismatch (got, want): {bad}"
assert j["format"] == "gguf", j["format"]
p = j["params"]
assert p["plain"] == 134515008, p            # SmolLM2-135M
assert p["kinetics"] == 134515008 + 49152 * 576, p  # lm_head counted again (tied)
m = j["memory"]
assert m["kv_bytes_per_token_bf16"] == 2 * 30 * 3 * 64 * 2, m
assert m["kv_bytes_per_token_f32"] == 2 * 30 * 3 * 64 * 4, m
assert m["weights_f32_cpu_bytes"] == 4 * p["plain"], m
assert m["weights_bf16_gpu_bytes"] == 2 * p["plain"], m
d = j["tensors"]["by_dtype"]
assert d.get("Q8_0") == 1 and d.get("Q4_1", 0) > 0 and d.get("F32", 0) > 0, d
assert j["tensors"]["count"] == sum(d.values())
print("info.sh: OK")
PY
# the text form mentions the parameter count too
"$KINFER" info --model "$model" | grep -q "parameters"
# The smollm2-135m preset reads the tensors the real checkpoint holds: the same counts.
[[ "$("$KINFER" info --model random:smollm2-135m --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["params"])')" == \
   "$("$KINFER" info --model "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["params"])')" ]] ||
  { echo "FAIL: random:smollm2-135m's parameter counts differ from the GGUF's"; exit 1; }
