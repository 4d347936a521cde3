"""The port to a D1 database, and a local stand-in with the same binding shape.

``D1Port`` talks to anything shaped like a D1 binding: ``prepare(sql)``,
``.bind(*args)``, ``.all()`` / ``.run()`` / ``.first()`` and ``batch([...])``.
On Cloudflare that is ``env.HISTORY_DB``; locally it is :class:`LocalD1`, a
small shim over ``sqlite3``. The projection and the query API only see the
port, so the same SQL runs in both places.

Two D1 pitfalls are handled here rather than by callers (measured with
wrangler 3.92.0, see ``miniflare/NOTES.md``): Python ``None`` crosses to JS as
``undefined``, which D1 rejects, so a ``None`` argument becomes a literal
``NULL`` in the SQL text; and ``True``/``False`` become ``1``/``0``. Results
are converted to plain Python once, at this edge.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ..cloudflare import _workers as _cloudflare
from ._schema import migration_statements, statements

Statement = tuple[str, Sequence[Any]]

_NONE = type(None)


MAX_ARGUMENTS = 100
"""Bound parameters D1 takes in one statement: rows are inserted as many at a time as fit."""


@functools.lru_cache(maxsize=64)
def _insert(table: str, columns: str, conflict: str, rows: int) -> str:
    """``INSERT INTO table (columns) VALUES (?, ...), ... conflict`` for ``rows`` rows."""
    row = "(" + ", ".join("?" * (columns.count(",") + 1)) + ")"
    return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * rows)} {conflict}"


def inserts(table: str, columns: str, conflict: str, rows: list[tuple[Any, ...]]) -> list[Statement]:
    """The statements inserting ``rows``, each with as many as D1 takes."""
    if not rows:
        return []
    per = MAX_ARGUMENTS // len(rows[0])
    out: list[Statement] = []
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        out.append((_insert(table, columns, conflict, len(chunk)), list(chain.from_iterable(chunk))))
    return out


def inline_nulls(sql: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
    """Replace each ``?`` whose argument is ``None`` by ``NULL`` (D1 refuses ``undefined``).

    Our SQL never holds a ``?`` inside a string literal, so a plain scan is enough.
    """
    # The projection binds about a hundred arguments per statement, seldom a bool: one
    # scan in C finds both, the conversion runs only when one is there.
    types = set(map(type, args))
    booleans = bool in types
    if _NONE not in types:
        kept = [int(arg) if arg.__class__ is bool else arg for arg in args] if booleans else list(args)
        return _checked(sql, len(args)), kept
    nulls = tuple([arg is None for arg in args])
    kept = [arg for arg in args if arg is not None]
    if booleans:
        kept = [int(arg) if arg.__class__ is bool else arg for arg in kept]
    return _null_sql(sql, nulls), kept


@functools.lru_cache(maxsize=256)
def _null_sql(sql: str, nulls: tuple[bool, ...]) -> str:
    # Cached: a projection writes the same few statements with the same NULL columns
    # over and over, and the scan cost a fifth of a projected step.
    parts = _checked(sql, len(nulls)).split("?")
    out = [parts[0]]
    for null, rest in zip(nulls, parts[1:], strict=True):
        out.append("NULL" if null else "?")
        out.append(rest)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _checked(sql: str, count: int) -> str:
    placeholders = sql.count("?")
    if placeholders != count:
        raise ValueError(f"{placeholders} placeholders for {count} arguments in {sql!r}")
    return sql


def _plain(value: Any) -> Any:
    """A JS value (``JsProxy``) as Python; plain Python passes through. Duck-typed,
    so this module never imports ``pyodide``."""
    to_py = getattr(value, "to_py", None)
    return to_py() if callable(to_py) else value


class D1Port:
    """Queries and atomic batches over a D1-shaped binding."""

    def __init__(self, binding: Any) -> None:
        if not callable(getattr(binding, "prepare", None)):
            raise TypeError(f"a D1 binding needs prepare()/batch(); got {type(binding).__name__}")
        self.binding = binding

    def _prepare(self, sql: str, args: Sequence[Any]) -> Any:
        text, kept = inline_nulls(sql, args)
        statement = self.binding.prepare(text)
        return statement.bind(*kept) if kept else statement

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        result = await self._prepare(sql, args).all()
        rows = _plain(result.results)
        return [dict(row) for row in rows or []]

    async def batch(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one implicit transaction (D1 ``batch`` is atomic)."""
        if not statements:
            return
        prepared = [self._prepare(sql, args) for sql, args in statements]
        await self.binding.batch(_cloudflare.to_js(prepared))

    async def apply_schema(self) -> None:
        """Create the tables, or bring them to the newest schema (what ``migrations/`` does)."""
        paged = bool(await self.query("PRAGMA table_info(wf_step_rows)"))
        columns = (
            [] if paged else [str(row.get("name")) for row in await self.query("PRAGMA table_info(wf_steps)")]
        )
        await self.batch([(s, ()) for s in migration_statements(columns, paged)])


# -- the local stand-in -----------------------------------------------------------------


class D1Error(Exception):
    """What the local D1 raises, like ``D1_ERROR: ...`` on Cloudflare."""


@dataclass
class D1Result:
    results: list[dict[str, Any]]
    success: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


class LocalStatement:
    def __init__(self, db: LocalD1, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._db = db
        self.sql = sql
        self.args = args

    def bind(self, *args: Any) -> LocalStatement:
        if None in args:
            # Faithful to D1: None arrives as undefined and is refused.
            raise D1Error("D1_TYPE_ERROR: Type 'undefined' not supported for value 'undefined'")
        return LocalStatement(self._db, self.sql, args)

    async def all(self) -> D1Result:
        return self._db._run([self])[0]

    async def run(self) -> D1Result:
        return self._db._run([self])[0]

    async def first(self, column: str | None = None) -> Any:
        rows = self._db._run([self])[0].results
        if not rows:
            return None
        return rows[0] if column is None else rows[0].get(column)


class LocalD1:
    """A D1 binding over a SQLite file (or ``":memory:"``), for the local runtime.

    ``synchronous`` is SQLite's setting for the file (WAL mode): ``FULL``, the default,
    makes each batch durable when it returns; ``NORMAL`` may lose the last batches to a
    power cut (not to a crash of the process).

    ``fail`` makes every call raise, as during a D1 outage; ``calls`` counts
    the calls that reached the database. ``read_only=True`` opens an existing file only
    to read it (the CLI's readers): no migration, and every write fails.
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        migrate: bool = True,
        synchronous: str = "FULL",
        read_only: bool = False,
    ) -> None:
        # Imported here, not at module level: the package imports ``history`` on every
        # runtime (its outbox plugs into the engine), and a Worker's Pyodide may lack sqlite3.
        import sqlite3

        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = path
        if read_only:  # reads only: no schema, no journal mode, nothing written to the file
            from pathlib import Path

            uri = Path(path).resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            migrate = False
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        if path != ":memory:" and not read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self.fail: bool | str = False
        self.calls = 0
        """Batches (and single statements) that reached the database."""
        self.statements = 0
        """Statements those held (D1's query limit per Worker invocation may count each)."""
        if migrate:
            paged = bool(self._db.execute("PRAGMA table_info(wf_step_rows)").fetchall())
            columns = [row["name"] for row in self._db.execute("PRAGMA table_info(wf_steps)")]
            for sql in migration_statements(columns, paged):
                self._db.execute(sql)

    @property
    def connection(self) -> Any:
        """The file's SQLite connection, for reading SQLite's own counters (``total_changes``,
        the log's frames: the bench); writes go through ``prepare`` and ``batch``."""
        return self._db

    def prepare(self, sql: str) -> LocalStatement:
        return LocalStatement(self, sql)

    async def batch(self, statements: Sequence[LocalStatement]) -> list[D1Result]:
        return self._run(list(statements))

    async def exec(self, sql: str) -> dict[str, int]:
        for statement in statements(sql):
            self._run([LocalStatement(self, statement)])
        return {"count": len(statements(sql))}

    def _run(self, batch: list[LocalStatement]) -> list[D1Result]:
        import sqlite3

        if self.fail:
            message = self.fail if isinstance(self.fail, str) else "D1_ERROR: Network connection lost."
            raise D1Error(message)
        self.calls += 1
        self.statements += len(batch)
        out = []
        try:
            self._db.execute("BEGIN")
            for statement in batch:
                cursor = self._db.execute(statement.sql, statement.args)
                rows = [dict(r) for r in cursor.fetchall()]
                out.append(D1Result(rows, meta={"changes": cursor.rowcount}))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise D1Error(f"D1_ERROR: {exc}") from None
        return out

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Synchronous read, for tests and the CLI."""
        return [dict(r) for r in self._db.execute(sql, tuple(args)).fetchall()]

    def close(self) -> None:
        self._db.close()
