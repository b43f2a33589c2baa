"""The Python example of README.md ("From Python: `import wstore`"), extracted from the
Markdown and run as written, so the README cannot drift from the package.

Usage: python scripts/readme_python_example.py README.md WORK_DIR
Runs the example with WORK_DIR as its working directory (the `wstore` binary must be on
PATH). Used by python/tests/test_readme.py and scripts/demo.sh.
"""
from __future__ import annotations

import os
import re
import sys

SECTION = "## From Python: `import wstore`"


def example(readme: str) -> str:
    """The first ```python block of the README's Python section."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    m = re.search(r"```python\n(.*?)```", text[start:end if end >= 0 else len(text)], re.S)
    if m is None:
        raise SystemExit(f"{readme}: no python block under {SECTION!r}")
    return m.group(1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    code = example(sys.argv[1])
    os.makedirs(sys.argv[2], exist_ok=True)
    os.chdir(sys.argv[2])
    exec(compile(code, f"{sys.argv[1]} (Python example)", "exec"), {"__name__": "__main__"})
