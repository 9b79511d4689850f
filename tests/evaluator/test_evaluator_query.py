"""Evaluator.Query over real gRPC: read-only for real, capped, interruptible, serving after refusals."""

from __future__ import annotations

import grpc
import pytest
from evaluator_support import check_completed, plain_rows, query, wait_for_value
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc

GOOD = "SELECT count(*) FROM sandbox_checks"
SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"


async def assert_refused(stub, sql: str, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await query(stub, sql)
    assert failed.value.code() == code, (sql, failed.value.details())
    details = failed.value.details()
    assert details.startswith("sql: "), details
    assert "Traceback" not in details
    return details


async def test_refusals_name_the_field_and_the_service_keeps_answering(stub, bus, tmp_path):
    await bus.publish(check_completed("c1"))
    await wait_for_value(stub, GOOD, 1)
    outside = tmp_path / "outside"
    refused = [
        "",
        "   ",
        ";",
        "selec 1",
        "select 1; select 2",
        "select * from no_such_table",
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "select * from glob('/etc/*')",
        f"select * from '{outside}.csv'",
        "insert into sandbox_checks (event_id) values ('x')",
        "update sandbox_checks set status = 'OK'",
        "delete from sandbox_checks",
        "drop table sandbox_checks",
        "create table stolen (a int)",
        "create temp table scratch (a int)",
        f"copy sandbox_checks to '{outside}.csv'",
        f"attach '{outside}.duckdb' as outside",
        f"export database '{outside}'",
        "install json",
        "load json",
        "set threads = 1",
        "pragma database_list",
        "call pragma_version()",
        "checkpoint",
        "begin transaction",
        "explain analyze insert into sandbox_checks (event_id) values ('x')",
        "explain analyze delete from sandbox_checks",
    ]
    for sql in refused:
        await assert_refused(stub, sql)
        assert plain_rows(await query(stub, GOOD)) == [(1,)], sql
    assert not list(tmp_path.glob("outside*"))


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("", "empty"),
        ("select 1; select 2", "exactly one statement"),
        ("selec 1", "does not parse"),
        ("load json", "got LOAD"),
        ("select * from read_csv('/etc/passwd')", "Permission"),
        ("explain analyze delete from sandbox_checks", "read-only"),
        ("select * from no_such_table", "no_such_table"),
    ],
)
async def test_refusal_messages_say_why(stub, sql, fragment):
    assert fragment in await assert_refused(stub, sql)


async def test_values_columns_and_types(stub):
    response = await query(
        stub,
        "SELECT 1::BIGINT AS i, 1.5::DOUBLE AS d, 2.25 AS n, 'x' AS s, true AS b, NULL AS z, "
        "['E0382', 'E0308'] AS codes, TIMESTAMP '2026-01-02 03:04:05' AS ts, "
        "170141183460469231731687303715884105727::HUGEINT AS big",
    )
    assert list(response.columns) == ["i", "d", "n", "s", "b", "z", "codes", "ts", "big"]
    assert list(response.column_types) == [
        "BIGINT",
        "DOUBLE",
        "DECIMAL(3,2)",
        "VARCHAR",
        "BOOLEAN",
        '"NULL"',
        "VARCHAR[]",
        "TIMESTAMP",
        "HUGEINT",
    ]
    assert plain_rows(response) == [
        (
            1,
            1.5,
            2.25,
            "x",
            True,
            None,
            '["E0382", "E0308"]',
            "2026-01-02 03:04:05",
            "170141183460469231731687303715884105727",
        )
    ]
    assert not response.truncated


async def test_explain_and_schema_queries_are_answered(stub):
    explain = await query(stub, "EXPLAIN SELECT * FROM sandbox_checks")
    assert list(explain.columns) == ["explain_key", "explain_value"]
    described = plain_rows(await query(stub, "DESCRIBE sandbox_check_diagnostics"))
    assert [r[0] for r in described] == [
        "event_id",
        "position",
        "code",
        "level",
        "message",
        "line",
        "column",
        "rendered",
    ]


@pytest.mark.parametrize(
    ("sql", "max_rows", "rows", "truncated"),
    [
        ("SELECT * FROM range(50)", 10, 10, True),
        ("SELECT * FROM range(50)", 0, 20, True),
        ("SELECT * FROM range(50)", 100, 20, True),
        ("SELECT * FROM range(20)", 0, 20, False),
        ("SELECT * FROM range(5)", 5, 5, False),
        ("SELECT * FROM range(1000000000000)", 3, 3, True),
        ("SELECT * FROM range(0)", 0, 0, False),
    ],
)
async def test_rows_are_capped(start_evaluator, sql, max_rows, rows, truncated):
    running = await start_evaluator(query_max_rows=20)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        response = await query(evaluator_pb2_grpc.EvaluatorStub(channel), sql, max_rows=max_rows)
    assert len(response.rows) == rows
    assert response.truncated is truncated
    assert plain_rows(response) == [(i,) for i in range(rows)]


async def test_responses_are_capped_in_bytes(start_evaluator):
    running = await start_evaluator(query_max_bytes=4096)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        response = await query(stub, "SELECT repeat('x', 100) FROM range(1000)")
        assert response.truncated
        assert 0 < len(response.rows) < 1000
        assert response.ByteSize() <= 4096
        details = await assert_refused(stub, "SELECT repeat('x', 10000)", grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "larger than 4096 bytes" in details
        assert plain_rows(await query(stub, GOOD)) == [(0,)]


async def test_a_long_query_is_interrupted_and_the_service_keeps_answering(start_evaluator):
    running = await start_evaluator(query_timeout_seconds=0.3)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        details = await assert_refused(stub, SLOW, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert "interrupted" in details
        assert plain_rows(await query(stub, GOOD)) == [(0,)]


async def test_a_client_deadline_interrupts_the_query(stub):
    # More abandoned queries than query threads: if one kept running, the last query would wait.
    for _ in range(6):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Query(evaluator_pb2.QueryRequest(sql=SLOW), timeout=0.2)
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    response = await stub.Query(evaluator_pb2.QueryRequest(sql=GOOD), timeout=10)
    assert plain_rows(response) == [(0,)]


async def test_unknown_cycles_are_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.GetCycle(evaluator_pb2.GetCycleRequest(cycle_id="c"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert failed.value.details().startswith("cycle_id:")
