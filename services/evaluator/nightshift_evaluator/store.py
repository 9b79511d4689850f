"""The evaluator's DuckDB file: schema migrations, projected rows and consumer positions.

One DuckDB instance per process. All writes go through one dedicated cursor on one
dedicated thread, so they never interleave and never block the event loop; readers get
fresh cursors of the same instance (`read_cursor`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from nightshift_evaluator.projection import RowInsert

log = logging.getLogger("nightshift.evaluator.store")

# The instance can reach no file but its own, load no extension and change no setting,
# so a query that gets through to DuckDB still cannot touch the host (query.py).
DUCKDB_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "projection bookkeeping",
        (
            """CREATE TABLE projection_positions (
                consumer VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                last_sequence BIGINT NOT NULL,
                PRIMARY KEY (consumer, stream)
            )""",
            # Every event whose rows are in the projections; a second delivery is skipped by id.
            """CREATE TABLE projected_events (
                event_id VARCHAR PRIMARY KEY,
                type VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                stream_sequence BIGINT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "sandbox checks",
        (
            """CREATE TABLE sandbox_checks (
                event_id VARCHAR PRIMARY KEY,
                check_id VARCHAR NOT NULL,
                occurred_at TIMESTAMP,
                correlation_id VARCHAR NOT NULL,
                causation_id VARCHAR NOT NULL,
                task_id VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                mode VARCHAR NOT NULL,
                edition VARCHAR NOT NULL,
                backend VARCHAR NOT NULL,
                source_sha256 VARCHAR NOT NULL,
                source_bytes BIGINT NOT NULL,
                has_tests BOOLEAN NOT NULL,
                tests_replaced BOOLEAN NOT NULL,
                tests_passed INTEGER NOT NULL,
                tests_failed INTEGER NOT NULL,
                error_codes VARCHAR[] NOT NULL,
                compile_seconds DOUBLE NOT NULL,
                run_seconds DOUBLE NOT NULL,
                total_seconds DOUBLE NOT NULL,
                output_truncated BOOLEAN NOT NULL,
                detail VARCHAR NOT NULL,
                stream_sequence BIGINT NOT NULL
            )""",
            """CREATE TABLE sandbox_check_diagnostics (
                event_id VARCHAR NOT NULL,
                position INTEGER NOT NULL,
                code VARCHAR NOT NULL,
                level VARCHAR NOT NULL,
                message VARCHAR NOT NULL,
                line INTEGER NOT NULL,
                "column" INTEGER NOT NULL,
                rendered VARCHAR NOT NULL,
                PRIMARY KEY (event_id, position)
            )""",
        ),
    ),
)


class StoreError(RuntimeError):
    """The DuckDB file cannot be used by this version of the evaluator."""


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def insert_statements(rows: Sequence[RowInsert]) -> list[tuple[str, list[list[object]]]]:
    """Group rows by (table, columns) into INSERT statements with their parameter lists, in order."""
    grouped: dict[tuple[str, tuple[str, ...]], list[list[object]]] = {}
    for r in rows:
        key = (r.table, tuple(r.row))
        grouped.setdefault(key, []).append(list(r.row.values()))
    statements = []
    for (table, columns), params in grouped.items():
        cols = ", ".join(quote_identifier(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        statements.append((f"INSERT INTO {quote_identifier(table)} ({cols}) VALUES ({marks})", params))
    return statements


class ProjectionStore:
    """The DuckDB file of the projections. Open with `await ProjectionStore.open(path)`."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path):
        self.path = path
        self._conn = conn
        self._cursor_lock = threading.Lock()
        self._writer = conn.cursor()
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer")
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> ProjectionStore:
        """Open (creating if missing) the file and bring its schema up to date."""
        path = Path(path)
        conn = await asyncio.to_thread(_connect, path)
        store = cls(conn, path)
        try:
            applied = await store._write(store._migrate)
        except BaseException:
            await store.close()
            raise
        if applied:
            log.info("%s: applied migrations %s", path, applied)
        return store

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the same instance, for one reader on one thread."""
        with self._cursor_lock:
            return self._conn.cursor()

    async def apply(
        self,
        *,
        consumer: str,
        stream: str,
        sequence: int,
        event_id: str,
        event_type: str,
        rows: Sequence[RowInsert] | None,
    ) -> bool:
        """Write an event's rows and the consumer's new position in one transaction.

        `rows` None means the projections ignore this event type: only the position moves.
        Returns True when rows were written. A sequence at or behind the stored position (a
        redelivery) changes nothing; an event id already projected (the same event stored
        again at a later sequence) only moves the position.
        """
        return await self._write(self._apply, consumer, stream, sequence, event_id, event_type, rows)

    async def position(self, consumer: str, stream: str) -> int:
        """The last stream sequence committed by `consumer` on `stream` (0 when none)."""
        return await self._write(self._position, consumer, stream)

    async def schema_version(self) -> int:
        return await self._write(self._schema_version)

    async def close(self) -> None:
        """Finish pending writes and close the file (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._writer_thread.shutdown, True)
        self._writer.close()
        self._conn.close()

    async def _write(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    def _schema_version(self) -> int:
        row = self._writer.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def _migrate(self) -> list[int]:
        cur = self._writer
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name VARCHAR NOT NULL,
                applied_at TIMESTAMP NOT NULL
            )"""
        )
        current = self._schema_version()
        known = max(m.version for m in MIGRATIONS)
        if current > known:
            raise StoreError(f"{self.path} has schema version {current}, newer than this evaluator's {known}")
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            cur.execute("BEGIN TRANSACTION")
            try:
                for statement in migration.statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    [migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None)],
                )
                cur.execute("COMMIT")
            except BaseException:
                _rollback_quietly(cur)
                raise
            applied.append(migration.version)
        return applied

    def _position(self, consumer: str, stream: str) -> int:
        row = self._writer.execute(
            "SELECT last_sequence FROM projection_positions WHERE consumer = ? AND stream = ?",
            [consumer, stream],
        ).fetchone()
        return int(row[0]) if row else 0

    def _apply(
        self,
        consumer: str,
        stream: str,
        sequence: int,
        event_id: str,
        event_type: str,
        rows: Sequence[RowInsert] | None,
    ) -> bool:
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            if sequence <= self._position(consumer, stream):
                cur.execute("ROLLBACK")
                return False
            written = False
            if rows is not None:
                seen = cur.execute("SELECT 1 FROM projected_events WHERE event_id = ?", [event_id]).fetchone()
                if seen is None:
                    for sql, params in insert_statements(rows):
                        if len(params) == 1:
                            cur.execute(sql, params[0])
                        else:
                            cur.executemany(sql, params)
                    cur.execute(
                        "INSERT INTO projected_events VALUES (?, ?, ?, ?)",
                        [event_id, event_type, stream, sequence],
                    )
                    written = True
            cur.execute(
                """INSERT INTO projection_positions VALUES (?, ?, ?)
                   ON CONFLICT (consumer, stream) DO UPDATE SET last_sequence = excluded.last_sequence""",
                [consumer, stream, sequence],
            )
            cur.execute("COMMIT")
        except BaseException:
            _rollback_quietly(cur)
            raise
        return written


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), config=DUCKDB_CONFIG)


def _rollback_quietly(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.warning("rollback failed: %s", exc)
