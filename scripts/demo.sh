#!/usr/bin/env bash
# The main job, end to end, on generated data. Usage: scripts/demo.sh WSTORE_BIN OUT_DIR
set -euo pipefail
bin=$1; out=$2
rm -rf "$out"; mkdir -p "$out"
echo "== wstore sample: a generated MoE-shaped bf16 model (random weights) =="
"$bin" sample "$out/sample.wstore" --layers 4 --experts 8 --hidden 256 --ffn 512
echo
echo "== wstore inspect =="
"$bin" inspect "$out/sample.wstore"
echo
echo "== a sample checkpoint written by the Python safetensors package (Qwen-MoE names, bf16, 2 shards) =="
python3 "$(dirname "$0")/fixtures/make_demo_checkpoint.py" "$out/checkpoint"
echo
echo "== wstore pack (all cores; atomic) =="
"$bin" pack "$out/checkpoint" -o "$out/packed.wstore" --model demo-moe
echo
echo "== wstore inspect =="
"$bin" inspect "$out/packed.wstore" --largest 5
echo
echo "== wstore export, then load it back with Python safetensors and compare with the shards =="
"$bin" export "$out/packed.wstore" -o "$out/exported.safetensors"
python3 - "$out" <<'PY'
import glob, sys
from safetensors import deserialize
out = sys.argv[1]
src = {}
for f in sorted(glob.glob(f"{out}/checkpoint/*.safetensors")):
    src.update(dict(deserialize(open(f, "rb").read())))
got = dict(deserialize(open(f"{out}/exported.safetensors", "rb").read()))
same = sum(1 for k, t in src.items() if k in got and bytes(got[k]["data"]) == bytes(t["data"])
           and got[k]["dtype"] == t["dtype"] and list(got[k]["shape"]) == list(t["shape"]))
print(f"python safetensors: {same} of {len(src)} tensors byte-identical, {len(got)} in the export")
sys.exit(0 if same == len(src) == len(got) else 1)
PY
echo
echo "== wstore verify =="
"$bin" verify "$out/packed.wstore"
