#!/usr/bin/env bash
# `pip install ./python` into a fresh virtual environment, then import the package and read a
# store with it. Usage: python/tests/fresh_venv.sh [PYTHON]  (run by `make python-install-check`)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${1:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install -q "$root/python"
cd "$dir"   # away from the source tree: the installed package is what gets imported
"$dir/venv/bin/python" - <<'PY'
import os, sys
import numpy as np
import wstore
assert wstore.library_path.startswith(os.path.dirname(wstore.__file__)), wstore.library_path
assert wstore.abi_version >= 1
try:
    wstore.open(".")
except wstore.NotAStore as e:
    print(f"fresh venv: wstore {wstore.__version__} (ABI {wstore.abi_version}) imported from {wstore.__file__}; "
          f"a non-store is refused: {e}")
else:
    sys.exit("opening a non-store did not raise")
PY
