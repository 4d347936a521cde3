"""The one module that touches Cloudflare's JavaScript world.

Everything here converts at the edge, once: ``undefined``/``null`` become
``None``, a ``Map`` from ``get([...])``/``list()`` becomes a dict, Python
dicts and lists become plain JS objects and arrays before they reach
``ctx.storage``, a stub or ``fetch``. No ``JsProxy`` crosses into the core.

Why convert explicitly: older ``workers`` SDKs (and workerd without the
SDK) hand Python containers to JavaScript unconverted, and then several
storage calls *silently* do nothing (``put(dict)`` writes nothing,
``delete(list)`` deletes nothing, ``list({"prefix": ...})`` ignores the
options); newer SDKs wrap ``ctx.storage`` and convert. A value that is
already a JS object passes through the newer wrapper unchanged, so explicit
conversion is right under both (see "Deploying to Cloudflare" in README.md).

``js``, ``pyodide`` and ``workers`` are imported only when running under
Pyodide, so ``import workkit_workflow`` works on CPython.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Coroutine, Mapping, MutableSequence, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._journal import MAX_VALUE_BYTES, check_size
from ._ports import KEEP_ALARM, Clock, Storage, SystemClock, WireRequest, WireResponse
from .errors import TransportError

log = logging.getLogger("workkit_workflow")

IN_PYODIDE = sys.platform == "emscripten"
INTERNAL_ORIGIN = "https://workkit-workflow.internal"


def _durable_object_base() -> type:
    # The runtime exports only subclasses of workers.DurableObject as Durable
    # Object classes; elsewhere (CPython, workerd without the SDK) the class
    # is a plain one.
    if not IN_PYODIDE:
        return object
    try:
        from workers import DurableObject
    except ImportError:
        return object
    return DurableObject  # type: ignore[no-any-return]


DurableObjectBase: type = _durable_object_base()


def base_takes_ctx_env(base: type) -> bool:
    """Whether ``base`` (the SDK's ``DurableObject``) has a constructor of its own, which
    takes ``(ctx, env)``; the April-2025 SDK's class has none."""
    return base is not object and getattr(base, "__init__", None) is not object.__init__


# -- values ------------------------------------------------------------------


def _jsnull() -> Any:
    # ``pyodide.ffi.jsnull`` exists from Pyodide 0.28 on; before, JS null
    # arrives as None.
    try:
        from pyodide.ffi import jsnull
    except ImportError:
        return None
    return jsnull


def to_py(value: Any) -> Any:
    """A JS value as plain Python: ``undefined``/``null`` → None, proxies converted."""
    if value is None or not IN_PYODIDE:
        return value
    from pyodide.ffi import JsProxy

    if value is _jsnull():
        return None
    if isinstance(value, JsProxy):
        return value.to_py()
    return value


def to_js(value: Any) -> Any:
    """A Python dict/list as a JS object/array (dicts as plain objects, not Maps)."""
    if not IN_PYODIDE:
        return value
    from js import Object
    from pyodide.ffi import to_js as _to_js

    return _to_js(value, dict_converter=Object.fromEntries)


def _text_map(value: Any) -> dict[str, str]:
    converted = to_py(value)
    if converted is None:
        return {}
    if not isinstance(converted, Mapping):
        raise TypeError(f"expected a Map from storage, got {type(converted).__name__}")
    return {str(k): v for k, v in converted.items() if isinstance(v, str)}


# -- storage -------------------------------------------------------------------


class DurableObjectStorage:
    """The Storage port over ``ctx.storage`` of a SQLite-backed Durable Object.

    Values are JSON text, the one value type that round-trips exactly (floats
    like ``2.0`` come back as ints otherwise). ``commit`` issues its put,
    delete and alarm calls without an ``await`` between them, which Cloudflare
    coalesces into one atomic write; sizes are checked before anything is
    issued, because a batch with an oversize value is half-written.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def get(self, key: str) -> str | None:
        value = to_py(await self._storage.get(key))
        return value if isinstance(value, str) else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        return _text_map(await self._storage.get(to_js(list(keys))))

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        options: dict[str, Any] = {}
        if prefix is not None:
            options["prefix"] = prefix
        if start is not None:
            options["start"] = start
        if end is not None:
            options["end"] = end
        if limit is not None:
            options["limit"] = limit
        if reverse:
            options["reverse"] = True
        result = await (self._storage.list(to_js(options)) if options else self._storage.list())
        return _text_map(result)

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        for key, value in puts.items():
            if not isinstance(value, str):
                raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
            check_size(key, value, what=f"stored value {key!r}")
        # Issued back to back, awaited after: one implicit transaction on Cloudflare.
        pending = []
        if puts:
            pending.append(self._storage.put(to_js(dict(puts))))
        if deletes:
            pending.append(self._storage.delete(to_js(list(deletes))))
        if alarm is not KEEP_ALARM:
            if alarm is None:
                pending.append(self._storage.deleteAlarm())
            else:
                pending.append(self._storage.setAlarm(_ms(alarm)))
        for promise in pending:
            await promise

    async def get_alarm(self) -> float | None:
        value = to_py(await self._storage.getAlarm())
        return None if value is None else float(value) / 1000.0

    async def set_alarm(self, at: float | None) -> None:
        if at is None:
            await self._storage.deleteAlarm()
        else:
            await self._storage.setAlarm(_ms(at))


JOURNAL_TABLE = "workkit_journal"
_CREATE = f"CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SELECT_ONE = f"SELECT value FROM {JOURNAL_TABLE} WHERE key = ?"
_ANY_ROW = f"SELECT 1 FROM {JOURNAL_TABLE} LIMIT 1"
_MAX_BOUND = 100
"""Bound parameters per statement a Durable Object's SQLite accepts."""
_ROWS_PER_UPSERT = _MAX_BOUND // 2


@functools.cache
def _upsert(rows: int) -> str:
    values = ", ".join(["(?, ?)"] * rows)
    return (
        f"INSERT INTO {JOURNAL_TABLE} (key, value) VALUES {values} "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


@functools.cache
def _delete(keys: int) -> str:
    return f"DELETE FROM {JOURNAL_TABLE} WHERE key IN ({', '.join(['?'] * keys)})"


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[at : at + size] for at in range(0, len(items), size)]


class SqlJournalStorage:
    """The Storage port over ``ctx.storage.sql`` of a SQLite-backed Durable Object.

    Why: an awaited ``ctx.storage.put`` per step suspends the step's task, which costs
    Pyodide about three event-loop turns plus the JavaScript wake-up (0.13-0.4 ms a step in
    workerd, miniflare/realruntime/NOTES.md); ``sql.exec`` is synchronous (0.01-0.03 ms),
    so ``commit`` completes without suspending.

    Atomicity: a step's commit (a few puts, the alarm kept) is one multi-row upsert, and a
    SQL statement is atomic by itself. A commit of more than one statement (deletes, more
    than 50 puts) or with an alarm change runs inside one ``transactionSync`` callback, so a
    throw part-way rolls every write and the alarm change back (measured in workerd:
    miniflare/realruntime/worker/probes.py); ``transactionSync`` is left off the hot path
    because in the engine it costs more than the upsert (miniflare/realruntime/NOTES.md).
    The object's SQLite database commits key-value data, SQL tables and the alarm together,
    so a crash keeps a commit whole or drops it (SIGKILL test in tests/test_realruntime_do.py).
    Durability is what an awaited ``put`` gave: the runtime's output gate holds every
    response and outgoing message until the write is on disk. A commit that changes the
    alarm (not a step's: the engine changes it when it starts, parks or settles) awaits
    ``setAlarm``'s promise after the transaction, to surface a refusal; the change is
    already in the transaction (on SQLite-backed objects the alarm lives in that database).

    Keys and values are text in one table, in the byte order of their UTF-8 keys (SQLite's
    BINARY collation), like the key-value API's ``list``. Values stay str: ``sql.exec``
    refuses ints >= 2**53 and stores True as 'true'.

    Executions journaled by an older version of this package through the key-value API are
    adopted once per object, on first use: the table is empty, so every text value of the
    key-value store is copied into it and deleted from the key-value store in one
    transaction (see :meth:`_adopt_key_value_journal`).
    """

    def __init__(self, storage: Any, sql: Any) -> None:
        self._storage = storage
        self._sql = sql
        sql.exec(_CREATE)
        self._adopted = False
        self._adopting = asyncio.Lock()

    # -- reads ------------------------------------------------------------------

    def _rows(self, query: str, *args: Any) -> list[list[Any]]:
        rows = to_py(self._sql.exec(query, *args).raw().toArray())
        return rows if isinstance(rows, list) else []

    async def get(self, key: str) -> str | None:
        await self._ready()
        rows = self._rows(_SELECT_ONE, key)
        return rows[0][0] if rows and isinstance(rows[0][0], str) else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        await self._ready()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for at in range(0, len(unique), _MAX_BOUND):
            chunk = unique[at : at + _MAX_BOUND]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT key, value FROM {JOURNAL_TABLE} WHERE key IN ({marks})"
            found.update(_text_rows(self._rows(query, *chunk)))
        # In key order, as the key-value API's get([...]) answers.
        return {key: found[key] for key in sorted(found, key=_utf8)}

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        await self._ready()
        where, args = _range_clause(prefix, start, end)
        query = f"SELECT key, value FROM {JOURNAL_TABLE}{where} ORDER BY key{' DESC' if reverse else ''}"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        return _text_rows(self._rows(query, *args))

    # -- writes -----------------------------------------------------------------

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        args: list[str] = []
        for key, value in puts.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
            if not (key.isascii() and value.isascii() and len(key) + len(value) <= MAX_VALUE_BYTES):
                check_size(key, value, what=f"stored value {key!r}")
            args += (key, value)
        if not self._adopted:
            await self._adopt_key_value_journal()
        if alarm is KEEP_ALARM and not deletes and len(puts) <= _ROWS_PER_UPSERT:
            # A step's commit: one statement, no await (the step's task does not suspend).
            if args:
                self._sql.exec(_upsert(len(puts)), *args)
            return
        await self._transaction(lambda issued: self._write(puts, deletes, alarm, issued))

    async def _transaction(self, body: Callable[[MutableSequence[Any]], None]) -> None:
        """Run ``body`` in one ``transactionSync``, then await the storage calls it issued
        (alarm changes, key-value deletes), to surface a refusal as an error: their writes
        are already part of the committed transaction. Only such commits wait; a step's
        does not get here."""
        issued: list[Any] = []
        try:
            self._storage.transactionSync(lambda: body(issued))
        except BaseException:
            for call in issued:
                _discard(call)
            raise
        for call in issued:
            await call

    def _write(
        self, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any, issued: MutableSequence[Any]
    ) -> None:
        self._upsert(puts)
        for chunk in _chunks(list(dict.fromkeys(deletes)), _MAX_BOUND):
            self._sql.exec(_delete(len(chunk)), *chunk)
        if alarm is not KEEP_ALARM:
            issued.append(self._issue_alarm(alarm))

    def _upsert(self, puts: Mapping[str, str]) -> None:
        for chunk in _chunks(list(puts.items()), _ROWS_PER_UPSERT):
            self._sql.exec(_upsert(len(chunk)), *[part for row in chunk for part in row])

    def _issue_alarm(self, at: float | None) -> Any:
        """Issue the alarm change; its promise (or the SDK wrapper's coroutine)."""
        if at is None:
            return self._storage.deleteAlarm()
        return self._storage.setAlarm(_ms(at))

    async def get_alarm(self) -> float | None:
        value = to_py(await self._storage.getAlarm())
        return None if value is None else float(value) / 1000.0

    async def set_alarm(self, at: float | None) -> None:
        await self._issue_alarm(at)

    # -- executions journaled through the key-value API ------------------------------

    async def _ready(self) -> None:
        if not self._adopted:
            await self._adopt_key_value_journal()

    async def _adopt_key_value_journal(self) -> None:
        """Move what an older version journaled through the key-value API into the table.

        Only while the table is empty: once anything is in it, the table is the journal and
        key-value leftovers (there are none: the move is one transaction) are not read.
        """
        async with self._adopting:
            if self._adopted:
                return
            if not self._rows(_ANY_ROW):
                legacy = _text_map(await self._storage.list())
                if legacy and not self._rows(_ANY_ROW):
                    await self._transaction(lambda issued: self._move(legacy, issued))
                    log.info(
                        "workkit_workflow: moved %d key-value entries into %s", len(legacy), JOURNAL_TABLE
                    )
            self._adopted = True

    def _move(self, legacy: Mapping[str, str], issued: MutableSequence[Any]) -> None:
        self._upsert(legacy)
        for chunk in _chunks(list(legacy), 128):
            # Issued inside the transaction, so part of it (128 keys: the per-call limit of
            # key-value-backed objects, kept for safety).
            issued.append(self._storage.delete(to_js(list(chunk))))


def _discard(call: Any) -> None:
    # The SDK's storage wrapper returns a coroutine around the JS promise: closed, not
    # left to warn "never awaited" (the transaction that issued it was rolled back).
    if asyncio.iscoroutine(call):
        call.close()


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _text_rows(rows: list[list[Any]]) -> dict[str, str]:
    return {str(row[0]): row[1] for row in rows if isinstance(row[1], str)}


def _range_clause(prefix: str | None, start: str | None, end: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of a key-value ``list``: ``start`` inclusive, ``end`` exclusive."""
    clauses: list[str] = []
    args: list[Any] = []
    if prefix is not None:
        # The range lets SQLite use the primary key; substr checks the prefix exactly.
        clauses.append("key >= ? AND substr(key, 1, ?) = ?")
        args += [prefix, len(prefix), prefix]
    if start is not None:
        clauses.append("key >= ?")
        args.append(start)
    if end is not None:
        clauses.append("key < ?")
        args.append(end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def storage_of(storage: Any) -> Storage:
    """The Storage port for a Durable Object's ``ctx.storage``: the SQL journal on
    SQLite-backed objects, the key-value API on the others (classes declared with a
    ``new_classes`` migration).

    On those, ``storage.sql`` is there (the SDK's wrapper resolves it lazily) but every
    statement throws, so a trivial statement decides. Only that one: a SQLite-backed
    object that then fails to create the table raises, it never falls back to the
    key-value API, where its journal is not.
    """
    try:
        sql = storage.sql
        sql.exec("SELECT 1")
    except Exception:
        return DurableObjectStorage(storage)
    return SqlJournalStorage(storage, sql)


def _ms(at: float) -> int:
    # Rounded up: an alarm that fires before the engine's wake-up time finds
    # nothing due and parks again at the same (rounded-down) millisecond.
    return math.ceil(round(at * 1000.0, 3))


class CloudflareHost:
    """What a Durable Object's ``ctx`` gives the engine."""

    is_workkit_host = True
    faults = None

    def __init__(self, ctx: Any, *, clock: Clock | None = None) -> None:
        self.ctx = ctx
        self.storage: Storage = storage_of(ctx.storage)
        self.clock: Clock = clock or SystemClock()
        try:
            name = to_py(ctx.id.name)
        except AttributeError:
            name = None
        # workerd of 2024 gives no name inside the object (undefined).
        self.object_name: str | None = name if isinstance(name, str) and name else None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        # Pyodide 0.27's WebLoop calls exception() on a finished task whose only
        # done-callback is its own; for a cancelled task (the engine cancels its
        # timers) that raises, is logged as "Exception in callback", and the
        # loop's in-progress count never returns to zero. A second callback
        # keeps it off that path.
        task.add_done_callback(_settled)
        return task


def _settled(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("workkit_workflow: background task ended with %r", task.exception())


def host_from_ctx(ctx: Any) -> CloudflareHost:
    return CloudflareHost(ctx)


# -- requests and responses ----------------------------------------------------------


def headers_of(headers: Any) -> dict[str, str]:
    """Request/response headers (JS ``Headers`` or ``http.client.HTTPMessage``) as a
    dict with lower-case names."""
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers.entries()
    out: dict[str, str] = {}
    for pair in items:
        name, value = pair[0], pair[1]
        out[str(name).lower()] = str(value)
    return out


async def read_request(request: Any) -> WireRequest:
    """A ``workers.Request`` or JS ``Request`` as a plain WireRequest."""
    url = urlsplit(str(request.url))
    method = str(getattr(request.method, "value", request.method)).upper()
    body = b""
    if method not in ("GET", "HEAD"):
        text = to_py(await request.text())
        body = (text or "").encode()
    return WireRequest(
        method=method,
        path=url.path or "/",
        query=dict(parse_qsl(url.query)),
        body=body,
        headers=headers_of(getattr(request, "headers", None)),
    )


def make_response(response: WireResponse, headers: Mapping[str, str] | None = None) -> Any:
    """A JSON response object for the runtime (see :func:`make_text_response`)."""
    text = json.dumps(response.body, separators=(",", ":"))
    return make_text_response(response.status, text, {"content-type": "application/json", **(headers or {})})


def make_text_response(status: int, text: str, headers: Mapping[str, str]) -> Any:
    """A response object for the runtime: ``workers.Response`` when the SDK is
    there, else a JS ``Response`` built with a JS init object (a plain dict
    would be ignored silently and give status 200)."""
    all_headers = dict(headers)
    try:
        from workers import Response
    except ImportError:
        from js import Response as JsResponse

        return JsResponse.new(text, to_js({"status": status, "headers": all_headers}))
    return Response(text, status=status, headers=all_headers)


# -- the namespace, from a Worker ---------------------------------------------------


class DurableObjectNamespaceClient:
    """The client's Namespace port over a ``DurableObjectNamespace`` binding."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse:
        stub = self._binding.get(self._binding.idFromName(name))
        url = INTERNAL_ORIGIN + path + ("?" + urlencode(dict(query)) if query else "")
        options: dict[str, Any] = {
            "method": method,
            # A JS object: raw stubs reject a Python dict here ("not of type
            # 'Sequence'"), the SDK's stub wrapper passes it through.
            "headers": to_js({"content-type": "application/json"}),
        }
        if body is not None:
            options["body"] = json.dumps(body, separators=(",", ":"))
        try:
            # Keyword form: Pyodide turns the keywords into the JS init object,
            # and the SDK's stub wrapper (workers.fetch) accepts only keywords.
            response = await stub.fetch(url, **options)
            status = int(to_py(response.status))
            text = to_py(await response.text()) or ""
        except Exception as exc:
            raise TransportError(f"the execution object did not answer: {exc}") from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            raise TransportError(
                f"the execution object answered {status} with non-JSON: {text[:200]!r}"
            ) from None
        return WireResponse(status, payload)


def namespace_from_binding(binding: Any) -> DurableObjectNamespaceClient:
    if not hasattr(binding, "idFromName"):
        raise TypeError(
            "create_durable_workflow() needs a Durable Object namespace binding (env.WORKFLOW_DO) "
            f"or a workkit_workflow.local.LocalNamespace, got {type(binding).__name__}"
        )
    return DurableObjectNamespaceClient(binding)


# -- outbound HTTP (workkit_workflow.http) ---------------------------------------------


async def js_fetch(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None
) -> tuple[int, dict[str, str], bytes]:
    """One request through the runtime's global ``fetch`` (the only outbound HTTP a
    Worker has: no synchronous XMLHttpRequest, so no pyodide-http)."""
    from js import fetch

    options: dict[str, Any] = {"method": method, "headers": to_js(dict(headers))}
    if body is not None:
        options["body"] = to_js(body)
    response = await fetch(url, **options)
    status = int(to_py(response.status))
    data = await response.arrayBuffer()
    return status, headers_of(response.headers), bytes(data.to_bytes())


# -- Cloudflare Workflows: the SDK's classes -----------------------------------------


def sdk_non_retryable_error() -> type[Exception]:
    if IN_PYODIDE:
        try:
            from workers.workflows import NonRetryableError as SdkNonRetryable
        except ImportError:
            pass
        else:
            return cast(type[Exception], SdkNonRetryable)
    # Same class name: the engine recognises either by name.
    from .errors import NonRetryableError

    return NonRetryableError


def sdk_has_native_non_retryable() -> bool:
    """Whether the ``workers`` SDK turns a raised NonRetryableError into one the engine
    does not retry (workers-runtime-sdk >= 1.9.0). Unknown counts as no."""
    if not IN_PYODIDE:
        return False
    try:
        from workers import entrypoints
    except ImportError:
        return False
    if hasattr(entrypoints, "_wrap_js_workflow_step"):
        return True
    try:
        from importlib.metadata import version

        parts = [int(p) for p in re.findall(r"\d+", version("workers-runtime-sdk"))[:2]]
    except Exception:
        return False
    return parts >= [1, 9]


def workflow_entrypoint_base() -> type:
    if IN_PYODIDE:
        try:
            from workers import WorkflowEntrypoint
        except ImportError:
            pass
        else:
            return cast(type, WorkflowEntrypoint)
    return _PlainEntrypoint


class _PlainEntrypoint:
    """The base outside Pyodide (tests, type checks): same constructor as the SDK's."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


# -- Cloudflare Workflows: the value an entry point returns ------------------------------


def json_to_js(value: Any) -> Any:
    """JSON data as the same JS value (objects, arrays, ``null`` kept), for a value
    handed to the runtime unconverted: the built-in SDK passes what a workflow's
    ``run`` returns to JavaScript as is, and a Python dict there is a
    ``DataCloneError``. Through JSON text, a ``None`` inside becomes ``null``, not
    the ``undefined`` of ``to_js``, which a JSON round trip would drop."""
    if not IN_PYODIDE:
        return value
    from js import JSON

    return JSON.parse(json.dumps(value, separators=(",", ":")))


class _Rejection:
    """A thenable that rejects with one JavaScript error (see :func:`rejection_with`)."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def then(self, resolve: Any, reject: Any) -> None:
        # Handed to JS, a JsException is the original JS error object again.
        reject(self._error)


def rejection_with(exc: BaseException) -> Any:
    """For an entry point to *return* so that the runtime's promise rejects with ``exc``
    itself, a JS error caught in Python; None when ``exc`` is no JS error (or outside
    Pyodide).

    Raised instead, it would reach JavaScript as a ``PythonError`` whose message is
    the traceback, and a returned JS promise is awaited in Python by the runtime's
    entry point glue (the same ``PythonError``). A Python object with a ``then``
    method is not awaitable in Python, and JavaScript adopts it as a thenable.
    """
    if not IN_PYODIDE:
        return None
    from pyodide.ffi import JsException

    if not isinstance(exc, JsException):
        return None
    return _Rejection(exc)
