"""The peers, each in its own process, driven one run at a time.

A peer worker (``bench._dbos_worker``, ``bench._temporal_worker``) prints one JSON
line about itself, then reads step counts from stdin, one per line, runs a workflow
of that many steps and answers each with the seconds it took, so the parent
interleaves the peers' runs with its own. Between runs a peer is stopped
(SIGSTOP to its process group, so the servers it started stop too): its background
threads and servers take no CPU from the others.

A peer that is not installed is reported, never silently left out: DBOS, Restate
and Temporal come with the ``bench`` extra (``pip install -e '.[bench]'``); the
Restate server is a separate binary (``restate-server`` on PATH or ``$RESTATE_SERVER``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workkit_workflow.local._backends import CHECKPOINT_PAGES

ROOT = Path(__file__).resolve().parent.parent
RESTATE_FROM_NPM = ROOT / "bench" / "peers" / "node_modules" / ".bin" / "restate-server"
"""Where ``npm ci --prefix bench/peers`` puts the Restate server (``bench/peers/package.json``)."""


@dataclass(frozen=True)
class Missing:
    name: str
    reason: str


PEERS = {
    "DBOS": ("bench._dbos_worker", "dbos"),
    "Temporal": ("bench._temporal_worker", "temporalio"),
    "Restate": ("bench._restate_worker", "restate"),
}


def restate_server() -> str | None:
    """The Restate server to run: ``$RESTATE_SERVER``, else ``restate-server`` on PATH, else
    the one ``npm ci --prefix bench/peers`` installed; None when there is none."""
    found = os.environ.get("RESTATE_SERVER") or shutil.which("restate-server")
    if found:
        return found
    return str(RESTATE_FROM_NPM) if os.access(RESTATE_FROM_NPM, os.X_OK) else None


def peer_environment() -> dict[str, str]:
    """The environment of a peer's worker: this one, with this checkout's ``src`` first on
    ``PYTHONPATH``. A worker runs in the peers' own Python (``--peer-python``), where this
    package need not be installed, and some import it (Restate's, for the checkpoint interval)."""
    paths = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


class PeerProcess:
    """One peer worker process."""

    def __init__(self, name: str, module: str, python: str, args: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [python, "-m", module, *args],
            cwd=ROOT,
            env=peer_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: a server it starts (Restate's, Temporal's dev server)
            # is stopped with it between runs.
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError(f"{name} did not start:\n{self.proc.communicate()[1][-2000:]}")
        self.info: dict[str, Any] = json.loads(first)
        self._signal(signal.SIGSTOP)

    def _signal(self, signum: int) -> None:
        """Send ``signum`` to the worker and every process it started."""
        os.killpg(self.proc.pid, signum)

    def run(self, steps: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._signal(signal.SIGCONT)
        try:
            self.proc.stdin.write(f"{steps}\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} stopped:\n{self.proc.communicate()[1][-2000:]}")
            return float(line)
        finally:
            self._signal(signal.SIGSTOP)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self._signal(signal.SIGCONT)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def _importable(python: str, module: str) -> str | None:
    """None if ``python`` can import ``module``, else the reason it cannot."""
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or ["import failed"])[-1]


def start(name: str, python: str, workdir: str, synchronous: str) -> PeerProcess | Missing:
    module, package = PEERS[name]
    reason = _importable(python, package)
    if reason is not None:
        return Missing(name, f"not installed ({reason}): pip install -e '.[bench]'")
    if name == "Restate" and restate_server() is None:
        return Missing(
            name,
            "not installed: no restate-server in $RESTATE_SERVER, on PATH or in bench/peers"
            " (npm ci --prefix bench/peers)",
        )
    try:
        # The log's checkpoint interval too, for a peer on SQLite: the same storage settings.
        args = ["--synchronous", synchronous, "--dir", workdir, "--checkpoint-pages", str(CHECKPOINT_PAGES)]
        return PeerProcess(name, module, python, args)
    except RuntimeError as exc:
        return Missing(name, f"could not start: {str(exc)[-600:]}")


def python_for_peers(explicit: str | None) -> str:
    return explicit or sys.executable
