"""The bench's SQLite section counts what SQLite did, exactly: log frames and checkpoints read
from the wal-index (``bench._wal``), the floor's outbox writes as measured, the logs emptied
before each timed run. Counts only: no test here asserts a time."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from bench import _wal
from bench._engine import Engine
from bench._floor import NO_OUTBOX, Floor, OutboxModel
from bench._sqlite import OutboxRiders, System, count_frames, outbox_model, timed_run

from workkit_workflow.local._backends import CHECKPOINT_PAGES, SqliteBackend


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, str]]:
    """A WAL file with one one-row table: each update of the row is one commit of one page."""
    path = str(tmp_path / "t.db")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("CREATE TABLE t (x INTEGER)")
    connection.execute("INSERT INTO t VALUES (0)")
    try:
        yield connection, path
    finally:
        connection.close()


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    """The floor over a file of its own, at synchronous=OFF (counts only)."""
    made = Floor(str(tmp_path / "f.db"), "OFF")
    try:
        yield made
    finally:
        made.close()


def _commits(connection: sqlite3.Connection, count: int) -> None:
    # A new value each time: SQLite writes no page for an update that changes nothing.
    for _ in range(count):
        connection.execute("UPDATE t SET x = x + 1")


def test_the_frame_counter_counts_one_frame_per_one_page_commit_across_two_checkpoints(
    db: tuple[sqlite3.Connection, str],
) -> None:
    connection, path = db
    counter = _wal.FrameCounter(connection, path)
    _commits(connection, 2500)  # the log restarts twice (a checkpoint every 1,000 pages)
    counter.stop()
    assert (counter.frames, counter.checkpoints) == (2500, 2)
    # Stopped: the connection's next commits are not counted.
    _commits(connection, 10)
    assert counter.frames == 2500


def test_checkpoints_between_two_readings_count_each_restart_and_a_pending_one(
    db: tuple[sqlite3.Connection, str],
) -> None:
    connection, path = db
    _wal.restart(connection)
    empty = _wal.read(path)
    # The whole log is in the database; the next write starts it again from its first frame.
    assert empty.frames == empty.backfilled and empty.page_size == 4096
    _commits(connection, 2500)
    assert _wal.checkpoints(empty, _wal.read(path)) == 2
    _wal.restart(connection)
    before = _wal.read(path)
    _commits(connection, 1000)  # the 1,000th page's commit checkpoints; nothing restarts it yet
    after = _wal.read(path)
    assert (after.frames, after.backfilled, _wal.checkpoints(before, after)) == (1000, 1000, 1)
    assert _wal.frames_between(before, after) == 1000


def test_without_automatic_checkpoints_the_log_keeps_every_frame(db: tuple[sqlite3.Connection, str]) -> None:
    connection, path = db
    connection.execute("PRAGMA wal_autocheckpoint=0")
    before = _wal.read(path)
    _commits(connection, 1500)
    after = _wal.read(path)
    assert (_wal.frames_between(before, after), _wal.checkpoints(before, after)) == (1500, 0)


def test_frames_are_not_guessed_across_two_restarts(db: tuple[sqlite3.Connection, str]) -> None:
    connection, path = db
    before = _wal.read(path)
    _commits(connection, 2500)
    with pytest.raises(RuntimeError, match="2 restarts"):
        _wal.frames_between(before, _wal.read(path))


def test_a_file_without_a_wal_index_reads_as_empty(tmp_path: Path) -> None:
    assert _wal.read(str(tmp_path / "none.db")) == _wal.EMPTY


def _commit_statements(floor: Floor) -> list[str]:
    seen: list[str] = []
    floor.db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def _settings(connection: sqlite3.Connection) -> tuple[object, ...]:
    pragmas = ("journal_mode", "synchronous", "wal_autocheckpoint", "page_size")
    return tuple(connection.execute(f"PRAGMA {name}").fetchone()[0] for name in pragmas)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_the_floor_stores_as_the_engines_backend_does(tmp_path: Path, synchronous: str) -> None:
    """Same journal mode, sync setting, checkpoint interval and pages: the floor's commits
    wait on the disk as often as the engine's would for the same pages."""
    floor, backend = (
        Floor(str(tmp_path / "f.db"), synchronous),
        SqliteBackend(str(tmp_path / "e.db"), synchronous=synchronous),
    )
    try:
        assert _settings(floor.db) == _settings(backend.connection)
        assert _settings(backend.connection)[2] == CHECKPOINT_PAGES > 1000  # not SQLite's default
    finally:
        floor.close()
        backend.close()


def test_the_floor_does_the_outbox_commits_and_bytes_it_is_given(floor: Floor) -> None:
    commits = _commit_statements(floor)
    model = OutboxModel(commits_per_step=0.028, bytes_per_step=9.8)
    floor.run(1000, 100, model)
    assert len(commits) == floor.last_commits == 1028
    (head,) = floor.db.execute("SELECT value FROM kv WHERE key = ?", (b"o:head",)).fetchone()
    assert len(head) == model.commit_bytes() == 350
    commits.clear()
    floor.run(1000, 100)
    assert len(commits) == floor.last_commits == 1000


def test_outbox_bytes_without_outbox_commits_ride_in_the_steps_rows(floor: Floor) -> None:
    commits = _commit_statements(floor)
    floor.run(50, 100, OutboxModel(commits_per_step=0.0, bytes_per_step=12.4))
    sizes = {len(v) for (v,) in floor.db.execute("SELECT value FROM kv WHERE obj = 'floor-000001'")}
    assert (len(commits), sizes) == (50, {112})


def test_outbox_rows_in_the_journals_commits_ride_in_steps_commits(floor: Floor) -> None:
    commits = _commit_statements(floor)
    changes = floor.db.total_changes
    floor.run(1000, 100, OutboxModel(0.0, 0.0, riders_per_step=0.05, rider_bytes_per_step=10.0))
    # 1,000 step rows, 50 of them with an outbox row of 200 bytes in the same commit.
    assert (len(commits), floor.db.total_changes - changes) == (1000, 1050)
    (head,) = floor.db.execute("SELECT value FROM kv WHERE key = ?", (b"o:head",)).fetchone()
    assert len(head) == 200
    commits.clear()
    changes = floor.db.total_changes
    floor.run(1000, 100, OutboxModel(0.002, 0.0, riders_per_step=0.05, rider_bytes_per_step=10.0))
    # Two extra commits without bytes of their own: each deletes the outbox row.
    assert (len(commits), floor.db.total_changes - changes) == (1002, 1052)
    gone = floor.db.execute("SELECT 1 FROM kv WHERE obj = 'floor-000002' AND key = ?", (b"o:head",))
    assert gone.fetchone() is None


def test_the_outbox_model_is_the_history_engines_extra_over_the_plain_engines() -> None:
    riders = OutboxRiders()
    riders("x", {"j:00000001": "a", "o:0001": "b" * 10}, [])  # a journal commit carrying a record
    riders("x", {"o:head": "zz"}, [])  # the outbox's own commit: not riding
    riders("x", {"j:00000002": "c"}, [])
    plain = SimpleNamespace(last_writes=1003, last_bytes=284_874)
    history = SimpleNamespace(last_writes=1031, last_bytes=294_711)
    model = outbox_model(plain, history, 1000, riders)  # type: ignore[arg-type]
    assert model == OutboxModel(0.028, 9.821, 0.001, 0.016)
    assert (model.extra_commits(1000), model.commit_bytes(), model.riders(1000), model.rider_bytes()) == (
        28,
        351,
        1,
        16,
    )
    assert outbox_model(history, plain, 1000, OutboxRiders()) == NO_OUTBOX  # type: ignore[arg-type]


async def test_an_engine_run_writes_at_least_one_frame_per_commit(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "e.db"), "OFF", history=True)
    try:
        await engine.run(2)
        frames = await count_frames(engine.wal_files(), lambda: engine.run(20))
        assert set(frames) == {"object file", "D1 file"}
        assert frames["object file"] >= engine.last_writes > 20
        assert frames["D1 file"] > 0
    finally:
        await engine.close()


async def test_a_timed_run_starts_from_an_empty_log_and_counts_its_own_checkpoints(
    db: tuple[sqlite3.Connection, str],
) -> None:
    connection, path = db
    _commits(connection, 900)  # left by an earlier run: emptied, not counted

    async def run(n: int) -> float:
        _commits(connection, n)
        return 0.0

    system = System(run, {"t": (path, connection)})
    timed = await timed_run(system, 1500, fresh_log=True)
    assert timed.checkpoints == {"t": 1} and timed.closing is not None
    left = _wal.read(path)
    assert left.backfilled == left.frames == 500  # the closing checkpoint copied the rest
    _commits(connection, 900)
    kept = await timed_run(system, 1500, fresh_log=False)
    assert kept.checkpoints == {"t": 2} and kept.closing is None


async def test_what_the_history_sends_d1_is_counted_per_step(tmp_path: Path) -> None:
    """The untimed run counts D1's rows, statements and batches (no time): 100 plain steps
    are one row of ``wf_step_pages``, and its rows go several to a statement."""
    from bench._sqlite import SyncResult, _untimed

    engine = Engine(str(tmp_path / "e.db"), "OFF")
    history = Engine(str(tmp_path / "h.db"), "OFF", history=True)
    floor = Floor(str(tmp_path / "f.db"), "OFF")
    result = SyncResult("OFF", 0)
    try:
        await _untimed(engine, history, floor, result, 400)
    finally:
        await engine.close()
        await history.close()
        floor.close()
    d1 = result.d1_per_step
    # A page row per 100 plain steps (written again when a delivery ends inside it), the
    # row of each delivery's last step, still running, and the execution's few.
    assert 1 / 100 < d1["rows"] < 0.1
    assert d1["statements"] < 0.05  # a page's rows, its running step's and the execution's
    assert 0 < d1["batches"] <= d1["statements"]
