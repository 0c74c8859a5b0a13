#!/usr/bin/env bash
# kinfer info checks a checkpoint the way loading does and says which config
# fields took defaults: on copies of the HF fixtures in tests/fixtures/models/
# (a q_proj of the wrong shape must fail naming the tensor and the file; a
# config.json without rope_theta / rms_norm_eps shows the defaults used; a
# transformers-5 config reads its theta from rope_parameters).
set -euo pipefail
: "${KINFER:?set KINFER to the kinfer binary}"
src="${KINFER_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/fixtures/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1) q_proj stored as [64, 128] where the config implies [128, 64] (same bytes).
cp -r "$src/qwen3_tied" "$tmp/badshape"
python3 - "$tmp/badshape/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
t = header["model.layers.0.self_attn.q_proj.weight"]
assert t["shape"] == [128, 64], t
t["shape"] = [64, 128]
h = json.dumps(header).encode()
open(path, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
PY
for args in "" "--json"; do
  if "$KINFER" info --model "$tmp/badshape" $args >"$tmp/out" 2>"$tmp/err"; then
    echo "FAIL: info $args accepted a q_proj of the wrong shape"; cat "$tmp/out"; exit 1
  fi
  for want in "$tmp/badshape/model.safetensors" "model.layers.0.self_attn.q_proj.weight" "[128, 64]" "[64, 128]"; do
    grep -qF -- "$want" "$tmp/err" || { echo "FAIL: info $args error lacks '$want'"; cat "$tmp/err"; exit 1; }
  done
done

# 2) rope_theta and rms_norm_eps left out: the family defaults, shown as such.
cp -r "$src/llama_tied" "$tmp/defaults"
python3 - "$tmp/defaults/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
for k in ("rope_theta", "rope_parameters", "rope_scaling", "rms_norm_eps"):
    c.pop(k, None)
json.dump(c, open(p, "w"))
PY
text="$("$KINFER" info --model "$tmp/defaults")"
for field in rope_theta rms_norm_eps; do
  echo "$text" | grep -E "^ +$field +[0-9.e-]+ \(default: not in config.json\)$" >/dev/null ||
    { echo "FAIL: info does not show $field as defaulted"; echo "$text"; exit 1; }
done
echo "$text" | grep -q "^defaulted  rms_norm_eps, rope_theta" || { echo "FAIL: no defaulted summary"; echo "$text"; exit 1; }
"$KINFER" info --model "$tmp/defaults" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["config"]
assert c["defaulted"] == ["rms_norm_eps", "rope_theta"], c["defaulted"]
assert c["rope_theta"] == 10000 and abs(c["rms_norm_eps"] - 1e-6) < 1e-12, c
'

# 3) a transformers-5 config: theta only inside rope_parameters, nothing defaulted.
"$KINFER" info --model "$src/qwen3_v5" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["config"]
assert c["rope_theta"] == 250000 and c["head_dim"] == 24 and c["defaulted"] == [], c
'
"$KINFER" info --model "$src/llama_partial_v5" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["config"]
assert c["rotary_dim"] == 16 and c["head_dim"] == 32, c
'
echo "info_checks.sh: OK"
