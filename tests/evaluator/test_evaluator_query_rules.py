"""The pure parts of Query: which statements pass the gate, and how values are carried."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
from evaluator_support import plain
from nightshift_evaluator import query


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "SELECT * FROM sandbox_checks WHERE status = 'OK'",
        "with t as (select 1 as a) select a from t",
        "from sandbox_checks",
        "values (1), (2)",
        "describe sandbox_checks",
        "show tables",
        "summarize sandbox_checks",
        "explain select 1",
        "select 1;",
        "  select 1 ;  ",
    ],
)
def test_one_select_or_explain_passes(sql):
    assert query.single_read_statement(sql).type in query.ALLOWED_STATEMENTS


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "is empty"),
        ("   \n\t", "is empty"),
        (";", "holds no statement"),
        ("select 1; select 2", "exactly one statement, got 2"),
        ("selec 1", "does not parse"),
        ("select (", "does not parse"),
        ("insert into t values (1)", "got INSERT"),
        ("update t set a = 1", "got UPDATE"),
        ("delete from t", "got DELETE"),
        ("create table t (a int)", "got CREATE"),
        ("create temp table t (a int)", "got CREATE"),
        ("drop table t", "got DROP"),
        ("alter table t add column b int", "got ALTER"),
        ("copy t to 'out.csv'", "got COPY"),
        ("attach 'other.duckdb' as other", "got ATTACH"),
        ("detach other", "got DETACH"),
        ("install json", "got LOAD"),
        ("load json", "got LOAD"),
        ("set threads = 1", "got SET"),
        ("reset threads", "got SET"),
        ("use memory", "got SET"),
        ("pragma table_info('t')", "got PRAGMA"),
        ("call pragma_version()", "got CALL"),
        ("checkpoint", "got CALL"),
        ("vacuum", "got VACUUM"),
        ("begin transaction", "got TRANSACTION"),
        ("export database 'dir'", "got EXPORT"),
        ("select 1; insert into t values (1)", "exactly one statement"),
    ],
)
def test_everything_else_is_refused_with_a_reason(sql, reason):
    with pytest.raises(query.QueryRefusedError) as refused:
        query.single_read_statement(sql)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (2**63, str(2**63)),
        (-(2**63) - 1, str(-(2**63) - 1)),
        (1.5, 1.5),
        (decimal.Decimal("1.25"), 1.25),
        ("text", "text"),
        ("", ""),
        (b"ab\x00\\", "ab\\x00\\x5C"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, 6), "2026-01-02 03:04:05.000006"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02 03:04:05+00:00"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.time(10, 30), "10:30:00"),
        (dt.timedelta(days=1, seconds=2), "1 day, 0:00:02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (["E0382", "E0308"], '["E0382", "E0308"]'),
        ([], "[]"),
        ({"a": 1, "b": [dt.date(2026, 1, 2)]}, '{"a": 1, "b": ["2026-01-02"]}'),
        ([decimal.Decimal("0.5"), None, b"x"], '[0.5, null, "x"]'),
    ],
)
def test_query_value(value, expected):
    assert plain(query.query_value(value)) == expected


def test_null_and_false_are_different_kinds():
    assert query.query_value(None).WhichOneof("kind") == "is_null"
    assert query.query_value(False).WhichOneof("kind") == "bool_value"
    assert query.query_value(0).WhichOneof("kind") == "int_value"
