"""Copy the workkit_workflow package next to the entry module, where wrangler picks up
Python modules (it attaches every ``*.py`` under ``main``'s folder; it does not follow
symlinks out of it). Run it before ``wrangler dev`` / ``wrangler deploy`` in this
repository; a project that installs workkit-workflow as a dependency does not need it.

    python worker/vendor.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src" / "workkit_workflow"
TARGET = HERE / "workkit_workflow"
# Not needed in a Worker: the pytest plugin and the CPython-only local runtime.
LEAVE_OUT = ("testing.py", "local", "__pycache__", "py.typed")


def vendor(target: Path = TARGET) -> list[str]:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns(*LEAVE_OUT))
    return sorted(str(p.relative_to(target.parent)) for p in target.rglob("*.py"))


if __name__ == "__main__":
    files = vendor()
    print(f"copied {len(files)} modules to {TARGET}", file=sys.stderr)
