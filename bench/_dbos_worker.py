"""The peer: DBOS Transact on SQLite running the same N-step workflow.

Run in its own process (DBOS is a process-wide singleton with background
threads) by ``bench.run``::

    python -m bench._dbos_worker --synchronous FULL --dir /tmp/x

It prints one JSON line with the pragmas in force, then reads sizes from
stdin, one per line, runs the workflow with that many steps and answers each
with the seconds it took, so the parent interleaves DBOS runs with its own. DBOS's SQLite
system database normally uses SQLite's default rollback journal; to compare
like with like it gets an engine with the same pragmas as the local runtime
(WAL, the given ``synchronous``), plus the settings DBOS's own SQLite engine
applies (IMMEDIATE transactions, busy timeout, foreign keys).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ._peer_loop import worker_args


def main(argv: list[str] | None = None) -> int:
    args = worker_args(argv)

    import sqlalchemy as sa
    from dbos import DBOS, DBOSConfig

    url = f"sqlite:///{os.path.join(args.dir, f'dbos-{args.synchronous}.sqlite')}"
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={args.synchronous}")
        dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={args.checkpoint_pages}")

    config: DBOSConfig = {
        "name": "workkit-bench",
        "system_database_url": url,
        "system_database_engine": engine,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def work(i: int) -> dict[str, Any]:
        return {"i": f"{i:05d}", "ok": True}

    @DBOS.workflow()
    def linear(n: int) -> int:
        for i in range(n):
            work(i)
        return n

    DBOS.launch()
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        linear(3)  # warm up
        print(json.dumps({"journal_mode": mode, "synchronous": sync}), flush=True)
        for line in sys.stdin:
            n = int(line)
            start = time.perf_counter()
            result = linear(n)
            elapsed = time.perf_counter() - start
            assert result == n
            print(elapsed, flush=True)
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
