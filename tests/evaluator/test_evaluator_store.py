"""The DuckDB store on a real file: migrations, idempotent writes, positions in the same transaction."""

from __future__ import annotations

import duckdb
import pytest
from evaluator_support import check_completed, delivery, diagnostic, dump_tables
from nightshift.v1 import events_pb2, sandbox_pb2
from nightshift_evaluator import projection
from nightshift_evaluator.projection import RowInsert
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.store import MIGRATIONS, ProjectionStore, StoreError

CHECK_COLUMNS = [
    ("event_id", "VARCHAR"),
    ("check_id", "VARCHAR"),
    ("occurred_at", "TIMESTAMP"),
    ("correlation_id", "VARCHAR"),
    ("causation_id", "VARCHAR"),
    ("task_id", "VARCHAR"),
    ("status", "VARCHAR"),
    ("mode", "VARCHAR"),
    ("edition", "VARCHAR"),
    ("backend", "VARCHAR"),
    ("source_sha256", "VARCHAR"),
    ("source_bytes", "BIGINT"),
    ("has_tests", "BOOLEAN"),
    ("tests_replaced", "BOOLEAN"),
    ("tests_passed", "INTEGER"),
    ("tests_failed", "INTEGER"),
    ("error_codes", "VARCHAR[]"),
    ("compile_seconds", "DOUBLE"),
    ("run_seconds", "DOUBLE"),
    ("total_seconds", "DOUBLE"),
    ("output_truncated", "BOOLEAN"),
    ("detail", "VARCHAR"),
    ("stream_sequence", "BIGINT"),
]


@pytest.fixture
async def store(db_path):
    opened = await ProjectionStore.open(db_path)
    yield opened
    await opened.close()


class _NoBus:
    """Projector.handle never touches the bus."""


async def project(store: ProjectionStore, d) -> bool:
    return await Projector(store, _NoBus()).handle("SANDBOX", d)


def columns_of(db_path, table):
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        return conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    finally:
        conn.close()


async def test_migrations_create_the_schema_once(db_path):
    store = await ProjectionStore.open(db_path)
    assert await store.schema_version() == max(m.version for m in MIGRATIONS)
    await store.close()
    reopened = await ProjectionStore.open(db_path)
    assert await reopened.schema_version() == max(m.version for m in MIGRATIONS)
    await reopened.close()
    conn = duckdb.connect(str(db_path), read_only=True)
    versions = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    conn.close()
    assert versions == [(m.version, m.name) for m in MIGRATIONS]
    assert columns_of(db_path, "sandbox_checks") == CHECK_COLUMNS
    assert [c for c, _ in columns_of(db_path, "sandbox_check_diagnostics")] == [
        "event_id",
        "position",
        "code",
        "level",
        "message",
        "line",
        "column",
        "rendered",
    ]


async def test_a_newer_schema_is_refused(db_path):
    store = await ProjectionStore.open(db_path)
    await store.close()
    conn = duckdb.connect(str(db_path))
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', now()::TIMESTAMP)")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await ProjectionStore.open(db_path)


async def test_the_same_delivery_twice_gives_one_row(store, db_path):
    event = check_completed(
        "c1", sandbox_pb2.COMPILE_ERROR, diagnostics=(diagnostic("E0382"), diagnostic("E0499"))
    )
    d = delivery(event, sequence=1, event_id="evt-1")
    assert await project(store, d) is True
    assert await project(store, d) is False
    assert await store.position("projection", "SANDBOX") == 1
    await store.close()
    tables = dump_tables(db_path)
    assert [r[0] for r in tables["sandbox_checks"]] == ["evt-1"]
    assert [r[:2] for r in tables["sandbox_check_diagnostics"]] == [("evt-1", 1), ("evt-1", 2)]
    assert tables["projected_events"] == [("evt-1", "nightshift.v1.CheckCompleted", "SANDBOX", 1)]


async def test_a_republished_event_id_at_a_later_sequence_gives_one_row(store, db_path):
    event = check_completed("c1")
    first = delivery(event, sequence=1, event_id="evt-1")
    again = delivery(event, sequence=2, event_id="evt-1")
    assert await project(store, first) is True
    assert await project(store, again) is False
    assert await store.position("projection", "SANDBOX") == 2
    await store.close()
    tables = dump_tables(db_path)
    assert [(r[0], r[-1]) for r in tables["sandbox_checks"]] == [("evt-1", 1)]


async def test_an_event_without_a_rule_only_moves_the_position(store, db_path):
    other = events_pb2.EpisodeCompleted(task_id="t")
    sandbox_only = {"nightshift.v1.CheckCompleted": projection.check_completed_rows}
    assert (
        await Projector(store, _NoBus(), rules=sandbox_only).handle("SANDBOX", delivery(other, sequence=5))
        is False
    )
    assert await store.position("projection", "SANDBOX") == 5
    await store.close()
    tables = dump_tables(db_path)
    assert tables["sandbox_checks"] == [] and tables["projected_events"] == []


async def test_a_failed_write_leaves_neither_rows_nor_position(store, db_path):
    good = projection.check_completed_rows(delivery(check_completed("c1"), sequence=1, event_id="evt-1"))
    broken = [*good, RowInsert("no_such_table", {"event_id": "evt-1"})]
    with pytest.raises(duckdb.CatalogException):
        await store.apply(
            consumer="projection",
            stream="SANDBOX",
            sequence=1,
            event_id="evt-1",
            event_type="nightshift.v1.CheckCompleted",
            rows=broken,
        )
    assert await store.position("projection", "SANDBOX") == 0
    # The writer keeps working after the failure.
    assert await store.apply(
        consumer="projection",
        stream="SANDBOX",
        sequence=1,
        event_id="evt-1",
        event_type="nightshift.v1.CheckCompleted",
        rows=good,
    )
    await store.close()
    tables = dump_tables(db_path)
    assert [r[0] for r in tables["sandbox_checks"]] == ["evt-1"]
    assert tables["projection_positions"] == [("projection", "SANDBOX", 1)]


async def test_positions_are_kept_per_consumer_and_stream(store):
    for consumer, stream, sequence in [
        ("projection", "SANDBOX", 3),
        ("projection", "EPISODES", 9),
        ("other", "SANDBOX", 4),
    ]:
        await store.apply(
            consumer=consumer,
            stream=stream,
            sequence=sequence,
            event_id=f"e{sequence}",
            event_type="x",
            rows=None,
        )
    assert await store.position("projection", "SANDBOX") == 3
    assert await store.position("projection", "EPISODES") == 9
    assert await store.position("other", "SANDBOX") == 4
    assert await store.position("other", "EPISODES") == 0
