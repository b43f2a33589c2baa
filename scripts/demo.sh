#!/usr/bin/env bash
# The main job, end to end, on generated data. Usage: scripts/demo.sh WSTORE_BIN OUT_DIR
set -euo pipefail
bin=$1; out=$2
py=${WSTORE_PYTHON:-python3}   # the Makefile's virtual environment
rm -rf "$out"; mkdir -p "$out"
echo "== wstore sample: a generated MoE-shaped bf16 model (random weights) =="
"$bin" sample "$out/sample.wstore" --layers 4 --experts 8 --hidden 256 --ffn 512
echo
echo "== wstore inspect =="
"$bin" inspect "$out/sample.wstore"
echo
echo "== a sample checkpoint written by the Python safetensors package (Qwen-MoE names, bf16, 2 shards) =="
"$py" "$(dirname "$0")/fixtures/make_demo_checkpoint.py" "$out/checkpoint"
echo
echo "== wstore pack (all cores; atomic) =="
"$bin" pack "$out/checkpoint" -o "$out/packed.wstore" --model demo-moe
echo
echo "== wstore inspect =="
"$bin" inspect "$out/packed.wstore" --largest 5
echo
echo "== wstore export, then load it back with Python safetensors and compare with the shards =="
"$bin" export "$out/packed.wstore" -o "$out/exported.safetensors"
"$py" - "$out" <<'PY'
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
echo
echo "== residency: a synthetic routing trace (labelled synthetic), every policy beside Belady's MIN at 50% residency =="
"$bin" trace synth "$out/routing.jsonl" --layers 4 --experts 8 --requests 4 --tokens 64
"$bin" bench cache --trace "$out/routing.jsonl" --capacity 50%
echo
echo "== the same trace over the sample store: real loads, prefetch hints one layer ahead, 500 µs of compute per layer =="
"$bin" bench cache --trace "$out/routing.jsonl" --capacity 50% --prefetch --store "$out/sample.wstore" --layer-time-us 500
echo
echo "== wstore bench kv: prefix-cache hit rates of a request trace =="
trace=../shared/data/mooncake/conversation_trace.jsonl
if [ -f "$trace" ]; then
    trace_args=(--trace "$trace")
    "$bin" bench kv "${trace_args[@]}" --capacity-blocks 0,20000,5000,1000
else
    echo "note: $trace is absent (no ../shared); replaying a generated trace instead"
    trace_args=(--generate 3000)
    "$bin" bench kv "${trace_args[@]}" --capacity-blocks 0,2000,500
fi
echo
echo "== wstore bench kv --model-shape: KV bytes through a real store (first 8 requests, int4), then kv inspect =="
"$bin" bench kv "${trace_args[@]}" --capacity-blocks 64 --requests 8 \
    --model-shape layers=2,kv_heads=8,head_dim=128,dtype=bf16 --codec int4 --store "$out/kv.store"
"$bin" kv inspect "$out/kv.store"
echo
echo "== SnapKV (per KV head, keep 1024 of 4096 tokens) + int4 on a generated KV cache; then int4 alone =="
"$py" "$(dirname "$0")/fixtures/make_demo_kv.py" "$out/kv.safetensors" 2 4096
"$bin" kv compress --input "$out/kv.safetensors" --output "$out/kv-snapkv-int4.safetensors" \
    --snapkv window=32,capacity=1024,kernel=7,pool=max,heads=kv --codec int4
"$bin" kv compress --input "$out/kv.safetensors" --output "$out/kv-int4.safetensors" --codec int4

echo
echo "== wstore bench load: the packed checkpoint's experts beside memcpy and a pread of the same tensors from their safetensors shard =="
"$bin" pack "$out/checkpoint/model-00001-of-00002.safetensors" -o "$out/shard1-raw.wstore" --codec raw --model shard1 --quiet
"$bin" bench load "$out/shard1-raw.wstore" --experts --limit 16 --iterations 3 \
    --source "$out/checkpoint/model-00001-of-00002.safetensors"
echo
echo "== the same, compressed (the default codec): materializing decodes and checks every checksum =="
"$bin" bench load "$out/packed.wstore" --experts --limit 16 --iterations 3
echo
echo "== the README's Python example, from Python (python/, import wstore): pack a checkpoint, serve its experts under a budget =="
bindir=$(cd "$(dirname "$bin")" && pwd)
PATH="$bindir:$PATH" "$py" "$(dirname "$0")/readme_python_example.py" "$(dirname "$0")/../README.md" "$out/python"
