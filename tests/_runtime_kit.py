"""The real local runtime: the newest workerd with Python Durable Objects (../shared/runtime).

``kit()`` returns the built kit, building it on first use into ``.cache/runtime-kit`` of the
repository (about 10 s with a warm npm cache; reproducible, so a cached build is reused). Set
``WORKKIT_RUNTIME_KIT`` to a folder already built by ``build_dev.sh`` to skip the build.

Tests that need it call ``require_kit()``: it skips with the reason when the kit cannot be built
here, and fails instead when ``WORKKIT_REQUIRE_RUNTIME=1`` (CI), so the tier is never silently
skipped there.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_RUNTIME = ROOT.parent / "shared" / "runtime"
CACHE = ROOT / ".cache" / "runtime-kit"


@dataclass(frozen=True)
class Kit:
    folder: Path
    workerd: Path
    bundle: Path
    newest_date: str
    """The newest compatibility date this workerd accepts."""
    newest_flags: tuple[str, ...]
    """The flags that make the newest date load the locally built bundle."""

    def serve_args(self, config: Path) -> list[str]:
        return [
            str(self.workerd),
            "serve",
            str(config),
            "--experimental",
            f"--pyodide-bundle-disk-cache-dir={self.bundle}",
            f"--pyodide-package-disk-cache-dir={self.bundle}",
        ]


def _load(folder: Path) -> Kit | None:
    workerd = folder / "bin" / "workerd"
    if not workerd.exists() or not (folder / "compat-date").exists():
        return None
    flags = (folder / "compat-flags").read_text().strip()
    return Kit(
        folder=folder,
        workerd=workerd,
        bundle=folder / "bundle",
        newest_date=(folder / "compat-date").read_text().strip(),
        newest_flags=tuple(f.strip().strip('"') for f in flags.split(",") if f.strip()),
    )


def build(folder: Path = CACHE) -> Kit:
    """Build the kit into ``folder`` unless it is there already (one builder at a time)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / (folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kit = _load(folder)
        if kit is not None:
            return kit
        script = SHARED_RUNTIME / "build_dev.sh"
        if not script.exists():
            raise RuntimeError(f"{script} is missing (../shared/ must sit beside the repository)")
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed")
        run = subprocess.run(["bash", str(script), str(folder)], capture_output=True, text=True, timeout=900)
        kit = _load(folder)
        if run.returncode != 0 or kit is None:
            raise RuntimeError(f"build_dev.sh failed:\n{(run.stdout + run.stderr)[-3000:]}")
        return kit


def kit() -> Kit:
    prebuilt = os.environ.get("WORKKIT_RUNTIME_KIT")
    if prebuilt:
        found = _load(Path(prebuilt))
        if found is None:
            raise RuntimeError(f"WORKKIT_RUNTIME_KIT={prebuilt} holds no built kit")
        return found
    return build()


def require_kit() -> Kit:
    try:
        return kit()
    except Exception as exc:
        if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
            pytest.fail(f"WORKKIT_REQUIRE_RUNTIME=1 but the real runtime kit is unavailable: {exc}")
        pytest.skip(f"the real runtime kit is unavailable: {exc}")
