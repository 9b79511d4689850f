"""Builders of sandbox events and small helpers shared by the evaluator tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import grpc
from nightshift import events
from nightshift.bus import Delivery
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc, events_pb2, sandbox_pb2

PROJECTION_TABLES = {
    "sandbox_checks": "event_id",
    "sandbox_check_diagnostics": "event_id, position",
    "projected_events": "event_id",
    "projection_positions": "consumer, stream",
}


def diagnostic(code: str, level: str = "error", line: int = 1, column: int = 1) -> sandbox_pb2.Diagnostic:
    return sandbox_pb2.Diagnostic(
        code=code,
        level=level,
        message=f"{level} {code or 'without code'}",
        line=line,
        column=column,
        rendered=f"{level}[{code}]: at src/main.rs:{line}:{column}",
    )


def check_completed(
    check_id: str,
    status: int = sandbox_pb2.OK,
    *,
    mode: int = sandbox_pb2.MODE_TEST,
    diagnostics: tuple[sandbox_pb2.Diagnostic, ...] = (),
    tests: tuple[tuple[str, bool], ...] = (),
    task_id: str = "",
    detail: str = "",
) -> events_pb2.CheckCompleted:
    return events_pb2.CheckCompleted(
        check_id=check_id,
        mode=mode,
        edition="2021",
        backend="bwrap",
        source_sha256=f"sha-{check_id}",
        source_bytes=100 + len(check_id),
        has_tests=bool(tests),
        task_id=task_id,
        verdict=sandbox_pb2.Verdict(
            status=status,
            diagnostics=list(diagnostics),
            tests=[sandbox_pb2.TestResult(name=n, passed=p) for n, p in tests],
            tests_replaced=bool(tests) and status == sandbox_pb2.TEST_FAILED,
            compile_seconds=0.25,
            run_seconds=0.5 if tests else 0.0,
            total_seconds=0.75,
            output_truncated=status == sandbox_pb2.OUTPUT_LIMIT,
            backend="bwrap",
            detail=detail,
        ),
    )


def sample_checks(prefix: str = "c") -> list[events_pb2.CheckCompleted]:
    """Checks covering every status, every mode and diagnostics of several levels."""
    return [
        check_completed(
            f"{prefix}1", sandbox_pb2.OK, tests=(("t::a", True), ("t::b", True)), task_id="task-1"
        ),
        check_completed(
            f"{prefix}2",
            sandbox_pb2.COMPILE_ERROR,
            mode=sandbox_pb2.MODE_BUILD,
            diagnostics=(
                diagnostic("E0382", line=3, column=9),
                diagnostic("", level="warning", line=1, column=5),
                diagnostic("E0308", line=7, column=13),
                diagnostic("", level="error", line=0, column=0),
            ),
        ),
        check_completed(f"{prefix}3", sandbox_pb2.TEST_FAILED, tests=(("t::a", True), ("t::b", False))),
        check_completed(
            f"{prefix}4",
            sandbox_pb2.LINT_FAILED,
            mode=sandbox_pb2.MODE_CLIPPY,
            diagnostics=(diagnostic("clippy::needless_return", level="warning"),),
        ),
        check_completed(f"{prefix}5", sandbox_pb2.TIMEOUT, detail="cpu time limit of 10s reached"),
        check_completed(f"{prefix}6", sandbox_pb2.MEMORY_LIMIT, detail="memory limit reached"),
        check_completed(f"{prefix}7", sandbox_pb2.OUTPUT_LIMIT),
        check_completed(f"{prefix}8", sandbox_pb2.SANDBOX_ERROR, detail="bwrap failed"),
    ]


def delivery(event, *, sequence: int = 1, event_id: str | None = None, correlation_id: str = "") -> Delivery:
    envelope = events.wrap(event, correlation_id=correlation_id, causation_id="cause", event_id=event_id)
    return Delivery(
        envelope=envelope, event=event, subject=events.subject_for(event), stream_sequence=sequence
    )


def plain(value: evaluator_pb2.QueryValue) -> object:
    """A QueryValue as the Python value it carries."""
    kind = value.WhichOneof("kind")
    return None if kind == "is_null" else getattr(value, kind)


def plain_rows(response: evaluator_pb2.QueryResponse) -> list[tuple]:
    return [tuple(plain(v) for v in row.values) for row in response.rows]


async def query(
    stub: evaluator_pb2_grpc.EvaluatorStub, sql: str, max_rows: int = 0
) -> evaluator_pb2.QueryResponse:
    return await stub.Query(evaluator_pb2.QueryRequest(sql=sql, max_rows=max_rows), timeout=30)


async def wait_for_value(
    stub: evaluator_pb2_grpc.EvaluatorStub, sql: str, expected: object, within_seconds: float = 20.0
) -> None:
    """Poll a one-value query until it returns `expected` (the projection runs asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    last = None
    while loop.time() < deadline:
        try:
            rows = plain_rows(await query(stub, sql))
            last = rows[0][0] if rows else None
        except grpc.aio.AioRpcError as exc:
            last = exc
        if last == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sql!r} gave {last!r}, expected {expected!r}")


def dump_tables(db_path: Path) -> dict[str, list[tuple]]:
    """Every projection table of a closed DuckDB file, in a stable order."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            for table, order in PROJECTION_TABLES.items()
        }
    finally:
        conn.close()
