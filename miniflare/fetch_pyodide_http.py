"""Fetch pyodide-http (the PyPI package, not vendored in this repository) for the
workerd probe that shows it cannot work in a Worker.

    python miniflare/fetch_pyodide_http.py   # -> miniflare/workerd/py/pyodide_http/ (git-ignored)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.2.2"
DEST = Path(__file__).resolve().parent / "workerd" / "py" / "pyodide_http"


def fetch() -> Path:
    """The package's folder, downloaded once from PyPI (pip) and unpacked."""
    if (DEST / "__init__.py").exists():
        return DEST
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
             "-d", tmp, f"pyodide-http=={VERSION}"],
            check=True,
            capture_output=True,
        )
        wheel = next(Path(tmp).glob("pyodide_http-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("pyodide_http/") and name.endswith(".py"):
                    target = DEST / Path(name).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
    return DEST


if __name__ == "__main__":
    print(fetch())
