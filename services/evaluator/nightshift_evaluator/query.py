"""Read-only SQL over the projections.

Read-only is enforced by DuckDB itself, not by looking at keywords: every query runs on a
fresh cursor inside `BEGIN TRANSACTION READ ONLY`, on an instance that can reach no file,
load no extension and change no setting (store.DUCKDB_CONFIG). On top of that exactly one
statement is accepted, and only SELECT or EXPLAIN, because a few statements (LOAD, CREATE
TEMP ...) would otherwise succeed inside a read-only transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import duckdb
from nightshift.v1 import evaluator_pb2

from nightshift_evaluator.store import ProjectionStore

log = logging.getLogger("nightshift.evaluator.query")

ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Rows are fetched in chunks so a capped result never materialises more than it returns.
FETCH_CHUNK_ROWS = 1024
# Serialisation overhead of one row inside QueryResponse (tag + length prefix), a safe upper bound.
ROW_OVERHEAD_BYTES = 6


class QueryRefusedError(ValueError):
    """The sql is not one read-only statement, or DuckDB rejected it; the message says why."""


class QueryTimedOutError(RuntimeError):
    """The query ran past its time limit and was interrupted."""


class QueryTooLargeError(RuntimeError):
    """The query needs more memory, or a single row more bytes, than a response may hold."""


class QueryFailedError(RuntimeError):
    """DuckDB failed internally; the details are in the evaluator's log, not in the response."""


def single_read_statement(sql: str) -> duckdb.Statement:
    """Parse `sql` and return its one statement if it is a SELECT or an EXPLAIN, else refuse."""
    if not sql.strip():
        raise QueryRefusedError("is empty")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefusedError(f"does not parse: {exc}") from None
    if not statements:
        raise QueryRefusedError("holds no statement")
    if len(statements) > 1:
        raise QueryRefusedError(f"must be exactly one statement, got {len(statements)}")
    statement = statements[0]
    if statement.type not in ALLOWED_STATEMENTS:
        raise QueryRefusedError(f"only SELECT and EXPLAIN statements are allowed, got {statement.type.name}")
    return statement


def blob_text(value: bytes) -> str:
    """Bytes as DuckDB prints a BLOB: printable ASCII kept, everything else as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b != 0x5C else f"\\x{b:02X}" for b in value)


def _json_default(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return blob_text(bytes(value))
    return scalar_text(value)


def scalar_text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def query_value(value: object) -> evaluator_pb2.QueryValue:
    """One DuckDB value as a QueryValue.

    NULL, booleans, 64-bit integers, floating point and DECIMAL numbers (as doubles) and strings
    keep their kind; wider integers, timestamps, dates, intervals and UUIDs become text; lists,
    structs and maps become JSON text.
    """
    if value is None:
        return evaluator_pb2.QueryValue(is_null=True)
    if isinstance(value, bool):
        return evaluator_pb2.QueryValue(bool_value=value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return evaluator_pb2.QueryValue(int_value=value)
        return evaluator_pb2.QueryValue(string_value=str(value))
    if isinstance(value, float | decimal.Decimal):
        return evaluator_pb2.QueryValue(double_value=float(value))
    if isinstance(value, str):
        return evaluator_pb2.QueryValue(string_value=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return evaluator_pb2.QueryValue(string_value=blob_text(bytes(value)))
    if isinstance(value, list | tuple | dict):
        try:
            text = json.dumps(value, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
        return evaluator_pb2.QueryValue(string_value=text)
    if isinstance(value, dt.date | dt.time | dt.timedelta | uuid.UUID):
        return evaluator_pb2.QueryValue(string_value=scalar_text(value))
    return evaluator_pb2.QueryValue(string_value=str(value))


class _Interruptible:
    """Lets the event loop interrupt the cursor a worker thread is running, race-free."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self.interrupted = False

    def attach(self, cursor: duckdb.DuckDBPyConnection) -> bool:
        with self._lock:
            if self.interrupted:
                return False
            self._cursor = cursor
            return True

    def detach(self) -> None:
        with self._lock:
            self._cursor = None

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True
            if self._cursor is not None:
                self._cursor.interrupt()


class ReadOnlyQueries:
    """Runs read-only queries on their own threads, capped in rows, bytes and time."""

    def __init__(
        self,
        store: ProjectionStore,
        *,
        max_rows: int,
        timeout_seconds: float,
        max_bytes: int,
        workers: int = 4,
    ):
        self.store = store
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="duckdb-query")

    async def run(
        self, sql: str, *, max_rows: int = 0, timeout_seconds: float | None = None
    ) -> evaluator_pb2.QueryResponse:
        """Run one read-only statement; `max_rows` (0 = the default) may only lower the row cap."""
        cap = min(max_rows, self.max_rows) if max_rows > 0 else self.max_rows
        timeout = (
            self.timeout_seconds if timeout_seconds is None else min(timeout_seconds, self.timeout_seconds)
        )
        guard = _Interruptible()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._run_sync, sql, cap, guard)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            guard.interrupt()
            await self._settle(future)
            raise QueryTimedOutError(f"ran longer than {timeout:g}s and was interrupted") from None
        except asyncio.CancelledError:
            guard.interrupt()
            raise

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    @staticmethod
    async def _settle(future: asyncio.Future) -> None:
        # Give the interrupted thread a moment to release its cursor; its outcome no longer matters.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(future), 5.0)

    def _run_sync(self, sql: str, cap: int, guard: _Interruptible) -> evaluator_pb2.QueryResponse:
        statement = single_read_statement(sql)
        cursor = self.store.read_cursor()
        try:
            if not guard.attach(cursor):
                raise QueryTimedOutError("was interrupted before it started")
            try:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    cursor.execute(statement)
                    return self._collect(cursor, cap)
                finally:
                    with contextlib.suppress(duckdb.Error):
                        cursor.execute("ROLLBACK")
            except duckdb.InterruptException:
                raise QueryTimedOutError("was interrupted") from None
            except duckdb.OutOfMemoryException as exc:
                raise QueryTooLargeError(str(exc)) from None
            except (duckdb.InternalException, duckdb.FatalException) as exc:
                log.error("query failed inside DuckDB: %s", exc)
                raise QueryFailedError("DuckDB failed internally") from None
            except duckdb.Error as exc:
                raise QueryRefusedError(str(exc)) from None
            finally:
                guard.detach()
        finally:
            cursor.close()

    def _collect(self, cursor: duckdb.DuckDBPyConnection, cap: int) -> evaluator_pb2.QueryResponse:
        description = cursor.description or []
        response = evaluator_pb2.QueryResponse(
            columns=[d[0] for d in description], column_types=[str(d[1]) for d in description]
        )
        size = response.ByteSize()
        if not description:
            return response
        count = 0
        while True:
            chunk = cursor.fetchmany(min(FETCH_CHUNK_ROWS, cap + 1 - count))
            if not chunk:
                return response
            for values in chunk:
                if count == cap:
                    response.truncated = True
                    return response
                row = evaluator_pb2.QueryRow(values=[query_value(v) for v in values])
                size += row.ByteSize() + ROW_OVERHEAD_BYTES
                if size > self.max_bytes:
                    if count == 0:
                        raise QueryTooLargeError(f"its first row alone is larger than {self.max_bytes} bytes")
                    response.truncated = True
                    return response
                response.rows.append(row)
                count += 1
