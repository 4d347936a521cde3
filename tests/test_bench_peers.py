"""The bench's peers: where the Restate server is found, what is said when it is not, and that
a peer's own servers are stopped with it between runs (``bench._peers``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench import _peers

FAKE_PEER = """
import json, subprocess, sys
child = subprocess.Popen(["sleep", "120"])  # a server the peer starts, as Restate's or Temporal's
def state():
    with open(f"/proc/{child.pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
print(json.dumps({"child": child.pid}), flush=True)
for line in sys.stdin:
    print(0.0 if state() == "T" else 1.0, flush=True)  # 1.0: its server runs during the run
child.kill()
"""


def _stopped(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return True
        time.sleep(0.01)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_a_peers_own_server_is_stopped_between_runs_and_runs_during_them(tmp_path: Path) -> None:
    script = tmp_path / "fake_peer.py"
    script.write_text(FAKE_PEER)
    python = tmp_path / "python"  # what PeerProcess runs as ``python -m module ...``
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}"\n')
    python.chmod(0o755)
    peer = _peers.PeerProcess("Fake", "bench._fake", str(python), [])
    try:
        child = int(peer.info["child"])
        assert _stopped(child)
        assert peer.run(3) == 1.0
        assert _stopped(child)
    finally:
        peer.close()
    assert peer.proc.returncode == 0


def test_the_restate_server_is_found_in_the_environment_then_on_path_then_in_bench_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "node_modules" / ".bin" / "restate-server"
    monkeypatch.setattr(_peers, "RESTATE_FROM_NPM", installed)
    monkeypatch.delenv("RESTATE_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _peers.restate_server() is None
    installed.parent.mkdir(parents=True)
    installed.write_text("#!/bin/sh\n")
    assert _peers.restate_server() is None  # not executable
    installed.chmod(0o755)
    assert _peers.restate_server() == str(installed)
    on_path = tmp_path / "bin" / "restate-server"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert _peers.restate_server() == str(on_path)
    monkeypatch.setenv("RESTATE_SERVER", "/opt/restate/restate-server")
    assert _peers.restate_server() == "/opt/restate/restate-server"


def test_without_a_restate_server_the_bench_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_peers, "RESTATE_FROM_NPM", tmp_path / "none")
    monkeypatch.delenv("RESTATE_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(_peers, "_importable", lambda python, module: None)
    missing = _peers.start("Restate", sys.executable, str(tmp_path), "FULL")
    assert isinstance(missing, _peers.Missing)
    assert "not installed" in missing.reason and "npm ci --prefix bench/peers" in missing.reason


def test_the_restate_server_bench_peers_installs_is_pinned() -> None:
    package = json.loads((_peers.ROOT / "bench" / "peers" / "package.json").read_text())
    lock = json.loads((_peers.ROOT / "bench" / "peers" / "package-lock.json").read_text())
    pinned = package["dependencies"]["@restatedev/restate-server"]
    assert pinned[0].isdigit()  # an exact version: the peers' figures name what ran
    assert lock["packages"]["node_modules/@restatedev/restate-server"]["version"] == pinned
    assert _peers.RESTATE_FROM_NPM.relative_to(_peers.ROOT).parts[:3] == ("bench", "peers", "node_modules")


def test_a_peer_worker_imports_this_checkout_from_a_python_that_lacks_it(tmp_path: Path) -> None:
    # The peers run in a Python of their own (``--peer-python``); Restate's worker imports
    # this package. ``-S``: no site-packages, so only the worker's environment can provide it.
    probe = "import workkit_workflow.local._backends as b; print(b.__file__)"
    found = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=tmp_path,
        env=_peers.peer_environment(),
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(_peers.ROOT / "src")
    bare = {k: v for k, v in _peers.peer_environment().items() if k != "PYTHONPATH"}
    refused = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=bare, capture_output=True)
    assert refused.returncode != 0  # the probe does test the environment
