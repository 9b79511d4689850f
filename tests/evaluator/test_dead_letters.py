"""Malformed and unknown messages become dead letters and never block a consumer (real nats-server)."""

from __future__ import annotations

import asyncio

import duckdb
import grpc
import nats
import pytest
from evaluator_support import check_completed, delivery, dump_tables, plain_rows, query
from event_builders import attempt, publish, stream_ends, verdict, wait_until_projected
from google.protobuf import message as pb_message
from nightshift import events
from nightshift.bus import Delivery
from nightshift.v1 import evaluator_pb2_grpc, events_pb2, sandbox_pb2
from nightshift_evaluator import projection
from nightshift_evaluator.projection import RowInsert
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.store import ProjectionStore

CHECKS = events.SUBJECTS["CheckCompleted"]
ATTEMPTS = events.SUBJECTS["AttemptRecorded"]
NOT_AN_ENVELOPE = b"\xff\xff not an envelope"
DEAD_LETTERS = (
    "SELECT stream, stream_sequence, subject, event_id, type, reason FROM dead_letters "
    "ORDER BY stream, stream_sequence"
)


class _NoBus:
    """Projector.handle never touches the bus."""


def envelope_bytes(event_type: str, payload: bytes, event_id: str) -> bytes:
    return events_pb2.EventEnvelope(
        event_id=event_id, type=event_type, schema_version=1, payload=payload
    ).SerializeToString()


async def publish_raw(nats_url: str, messages: list[tuple[str, bytes]]) -> list[int]:
    """Publish bytes as they are (no envelope check, no Nats-Msg-Id); their stream sequences."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        return [(await js.publish(subject, data)).seq for subject, data in messages]
    finally:
        await nc.close()


async def test_bad_messages_become_dead_letters_and_good_ones_after_them_are_projected(
    bus, stub, nats_server
):
    good_attempt = attempt("t1", "k1", 1, verdict(sandbox_pb2.OK))
    bad = [
        (CHECKS, NOT_AN_ENVELOPE),
        (CHECKS, envelope_bytes("nightshift.v1.NoSuchEvent", b"", "evt-unknown")),
        (CHECKS, envelope_bytes("nightshift.v1.CheckCompleted", b"\xff\xff\xff", "evt-payload")),
        (CHECKS, envelope_bytes("nightshift.v1.QueryRequest", b"", "evt-not-an-event")),
        (CHECKS, envelope_bytes("nightshift.v1.CheckCompleted", b"", "")),
        (ATTEMPTS, envelope_bytes("nightshift.v1.AttemptRecorded", b"", "evt-no-task")),
    ]
    sequences = await publish_raw(nats_server.url, bad)
    assert sequences == [1, 2, 3, 4, 5, 1]
    good = await publish(bus, [check_completed("good-check"), good_attempt])
    await wait_until_projected(stub, await stream_ends(bus))

    assert plain_rows(
        await query(stub, "SELECT event_id, check_id, stream_sequence FROM sandbox_checks")
    ) == [(good[0].event_id, "good-check", 6)]
    assert plain_rows(await query(stub, "SELECT event_id, task_id, stream_sequence FROM attempts")) == [
        (good[1].event_id, "t1", 2)
    ]
    letters = plain_rows(await query(stub, DEAD_LETTERS))
    assert [row[:5] for row in letters] == [
        ("EPISODES", 1, ATTEMPTS, "evt-no-task", "nightshift.v1.AttemptRecorded"),
        ("SANDBOX", 1, CHECKS, None, None),
        ("SANDBOX", 2, CHECKS, "evt-unknown", "nightshift.v1.NoSuchEvent"),
        ("SANDBOX", 3, CHECKS, "evt-payload", "nightshift.v1.CheckCompleted"),
        ("SANDBOX", 4, CHECKS, "evt-not-an-event", "nightshift.v1.QueryRequest"),
        ("SANDBOX", 5, CHECKS, None, "nightshift.v1.CheckCompleted"),
    ]
    reasons = [row[5] for row in letters]
    assert reasons[0] == "rejected by its rule: AttemptRecorded.task_id is empty"
    assert reasons[1].startswith("not an EventEnvelope: Error parsing message")
    assert reasons[2] == "unknown event type 'nightshift.v1.NoSuchEvent'"
    assert reasons[3].startswith("payload of nightshift.v1.CheckCompleted does not parse: DecodeError(")
    assert reasons[4] == "unknown event type 'nightshift.v1.QueryRequest'"
    assert reasons[5] == "envelope has no event_id"


async def test_dead_letters_keep_the_raw_bytes(bus, start_evaluator, db_path, nats_server):
    payload_broken = envelope_bytes("nightshift.v1.CheckCompleted", b"\xff\xff\xff", "evt-payload")
    await publish_raw(nats_server.url, [(CHECKS, NOT_AN_ENVELOPE), (CHECKS, payload_broken)])
    await publish(bus, [check_completed("after")])
    running = await start_evaluator()
    async with grpc.aio.insecure_channel(running.addr) as channel:
        await wait_until_projected(evaluator_pb2_grpc.EvaluatorStub(channel), {"SANDBOX": 3})
    await running.stop()
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = conn.execute(
            "SELECT stream_sequence, raw, recorded_at IS NOT NULL FROM dead_letters ORDER BY 1"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [(1, NOT_AN_ENVELOPE, True), (2, payload_broken, True)]
    assert [r[1] for r in dump_tables(db_path)["sandbox_checks"]] == ["after"]


async def test_a_rule_that_keeps_failing_becomes_a_dead_letter_after_max_failures(bus, db_path):
    calls = {"c2": 0}

    def buggy(d: Delivery):
        if d.event.check_id == "c2":
            calls["c2"] += 1
            raise RuntimeError("bug in the rule")
        return projection.check_completed_rows(d)

    store = await ProjectionStore.open(db_path)
    projector = Projector(
        store,
        bus,
        rules={"nightshift.v1.CheckCompleted": buggy},
        restart_delay_seconds=0.05,
        max_failures=3,
    )
    projector.start()
    try:
        await publish(bus, [check_completed("c1"), check_completed("c2"), check_completed("c3")])
        for _ in range(600):
            if await store.position("projection", "SANDBOX") == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await projector.stop()
        await store.close()
    tables = dump_tables(db_path)
    assert sorted((r[-1], r[1]) for r in tables["sandbox_checks"]) == [(1, "c1"), (3, "c3")]
    assert calls == {"c2": 3}
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        letters = conn.execute("SELECT stream_sequence, type, reason FROM dead_letters").fetchall()
    finally:
        conn.close()
    assert letters == [
        (2, "nightshift.v1.CheckCompleted", "failed 3 times, last: RuntimeError('bug in the rule')")
    ]


@pytest.fixture
async def store(db_path):
    opened = await ProjectionStore.open(db_path)
    yield opened
    await opened.close()


async def test_rows_the_store_refuses_become_a_dead_letter_and_leave_no_rows(store, db_path):
    def null_in_a_not_null_column(d: Delivery) -> list[RowInsert]:
        rows = projection.check_completed_rows(d)
        return [*rows, RowInsert("sandbox_checks", {**rows[0].row, "event_id": "other", "status": None})]

    projector = Projector(store, _NoBus(), rules={"nightshift.v1.CheckCompleted": null_in_a_not_null_column})
    assert (
        await projector.handle("SANDBOX", delivery(check_completed("c1"), sequence=1, event_id="e1")) is False
    )
    assert await store.position("projection", "SANDBOX") == 1
    await store.close()
    tables = dump_tables(db_path)
    assert tables["sandbox_checks"] == [] and tables["projected_events"] == []
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        (reason,) = conn.execute("SELECT reason FROM dead_letters").fetchone()
    finally:
        conn.close()
    assert reason.startswith("rows refused by the store: Constraint Error")


async def test_a_dead_letter_delivered_twice_is_recorded_once(store):
    projector = Projector(store, _NoBus())
    error = pb_message.DecodeError("corrupt")
    for _ in range(2):
        await projector.handle_undecodable("SANDBOX", NOT_AN_ENVELOPE, CHECKS, 7, error)
    rows = store.read_cursor().execute("SELECT stream_sequence, reason FROM dead_letters").fetchall()
    assert rows == [(7, "not an EventEnvelope: corrupt")]
    assert await store.position("projection", "SANDBOX") == 7


async def test_an_event_type_without_a_rule_here_is_not_a_dead_letter(store):
    sandbox_only = {"nightshift.v1.CheckCompleted": projection.check_completed_rows}
    projector = Projector(store, _NoBus(), rules=sandbox_only)
    event = events_pb2.EpisodeCompleted(task_id="t")
    assert await projector.handle("EPISODES", delivery(event, sequence=1)) is False
    assert store.read_cursor().execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    assert await store.position("projection", "EPISODES") == 1


# --- the bus hook the projector uses ------------------------------------------------------


async def consume_until(bus, handled: list, n: int, **kwargs) -> None:
    stop = asyncio.Event()

    async def handler(d: Delivery) -> None:
        handled.append(("event", d.stream_sequence, d.event.check_id))
        if len(handled) >= n:
            stop.set()

    task = asyncio.create_task(bus.consume("SANDBOX", "hook-test", handler, stop=stop, **kwargs))
    await asyncio.wait_for(stop.wait(), 30)
    await task


async def test_the_bus_hands_undecodable_messages_to_the_hook_before_acking_in_order(bus, nats_server):
    await publish_raw(nats_server.url, [(CHECKS, NOT_AN_ENVELOPE)])
    await publish(bus, [check_completed("good")])
    handled: list = []
    failures = {"left": 1}

    async def on_undecodable(data: bytes, subject: str, sequence: int, error: Exception) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("store busy")
        handled.append(("undecodable", sequence, data, subject, type(error).__name__))

    await consume_until(bus, handled, 2, on_undecodable=on_undecodable)
    # Retried in place: the good event after it waited until the hook succeeded.
    assert handled == [
        ("undecodable", 1, NOT_AN_ENVELOPE, CHECKS, "DecodeError"),
        ("event", 2, "good"),
    ]


async def test_without_the_hook_the_bus_skips_undecodable_messages(bus, nats_server):
    await publish_raw(nats_server.url, [(CHECKS, NOT_AN_ENVELOPE)])
    await publish(bus, [check_completed("good")])
    handled: list = []
    await consume_until(bus, handled, 1)
    assert handled == [("event", 2, "good")]
