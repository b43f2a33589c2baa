"""The README's Python example runs as written (extracted from the Markdown)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, wstore_bin


def test_readme_python_example(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(wstore_bin()).resolve().parent}{os.pathsep}{os.environ['PATH']}")
    # Warnings are errors: a numeric overflow in the example would be a bad example.
    r = subprocess.run([sys.executable, "-W", "error", str(REPO / "scripts/readme_python_example.py"), str(REPO / "README.md"),
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 layers served under a 2-expert budget" in r.stdout, r.stdout
    assert "cached prefix of the next prompt: 256 tokens" in r.stdout, r.stdout
    assert "KV: 512 of 512 tokens from the cache" in r.stdout, r.stdout
    assert (tmp_path / "tiny-moe.wstore").is_dir() and (tmp_path / "prompts.kvstore").is_dir()
