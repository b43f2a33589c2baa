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
