"""Batched projection: many events per transaction and per ack, with every guarantee of one at a time.

A batch with malformed events and duplicates projects the good ones exactly once and dead-letters the
bad ones; a batch the store refuses is rolled back whole and written again one message at a time; a
projector stopped in the middle of a batch resumes from the stored position without loss or duplicate;
batched and one-at-a-time projection of the same stream give identical tables. Real nats-server, real
DuckDB files.
"""

from __future__ import annotations

import asyncio

import duckdb
import nats
import pytest
from evaluator_support import check_completed, delivery, dump_tables
from event_builders import attempt, event_mix, publish, stream_ends, verdict
from google.protobuf import message as pb_message
from nightshift import events
from nightshift.bus import Delivery, EventBus, Undecodable
from nightshift.v1 import events_pb2, sandbox_pb2
from nightshift_evaluator import projection
from nightshift_evaluator.projection import RowInsert
from nightshift_evaluator.projector import PROJECTION_CONSUMER, Projector
from nightshift_evaluator.store import EventWrite, ProjectionStore

CHECKS = events.SUBJECTS["CheckCompleted"]
NOT_AN_ENVELOPE = b"\xff\xff not an envelope"
# Columns that record when a row was written, not what happened.
WALL_CLOCK = {"schema_migrations": "applied_at", "dead_letters": "recorded_at"}


class _NoBus:
    """Projector.handle_batch never touches the bus."""


class CountingStore(ProjectionStore):
    """The real store, counting the transactions of each kind it was asked for."""

    batches: list[list[int]]
    singles: list[int]

    async def apply_batch(self, *, consumer, stream, items):
        self.batches.append([item.sequence for item in items])
        return await super().apply_batch(consumer=consumer, stream=stream, items=items)

    async def apply(self, *, consumer, stream, sequence, event_id, event_type, rows):
        self.singles.append(sequence)
        return await super().apply(
            consumer=consumer,
            stream=stream,
            sequence=sequence,
            event_id=event_id,
            event_type=event_type,
            rows=rows,
        )


@pytest.fixture
async def store(db_path):
    opened = await CountingStore.open(db_path)
    opened.batches, opened.singles = [], []
    yield opened
    await opened.close()


def check(check_id: str, sequence: int, event_id: str) -> Delivery:
    return delivery(check_completed(check_id), sequence=sequence, event_id=event_id)


def undecodable(data: bytes, sequence: int) -> Undecodable:
    return Undecodable(data, CHECKS, sequence, pb_message.DecodeError("Error parsing message"))


def unknown_type(sequence: int) -> Delivery:
    envelope = events_pb2.EventEnvelope(event_id="evt-unknown", type="nightshift.v1.NoSuchEvent")
    return Delivery(envelope, events_pb2.CheckCompleted(), CHECKS, sequence)


def without_id(sequence: int) -> Delivery:
    d = check("no-id", sequence, "placeholder")
    d.envelope.event_id = ""
    return d


def mixed_batch() -> list[Delivery | Undecodable]:
    """Three good checks, each delivered twice, and three messages that can only be dead letters."""
    return [
        check("c1", 1, "e1"),
        undecodable(NOT_AN_ENVELOPE, 2),
        check("c1", 3, "e1"),
        unknown_type(4),
        check("c2", 5, "e2"),
        without_id(6),
        check("c2", 7, "e2"),
        check("c3", 8, "e3"),
    ]


def rows(store: ProjectionStore, sql: str) -> list[tuple]:
    return store.read_cursor().execute(sql).fetchall()


def checks_and_letters(store: ProjectionStore) -> tuple[list[tuple], list[tuple]]:
    checks = rows(store, "SELECT event_id, check_id, stream_sequence FROM sandbox_checks ORDER BY 3")
    letters = rows(store, "SELECT stream_sequence, event_id, type, reason FROM dead_letters ORDER BY 1")
    return checks, letters


EXPECTED_LETTERS = [
    (2, None, None, "not an EventEnvelope: Error parsing message"),
    (4, "evt-unknown", "nightshift.v1.NoSuchEvent", "unknown event type 'nightshift.v1.NoSuchEvent'"),
    (6, None, "nightshift.v1.CheckCompleted", "envelope has no event_id"),
]


async def test_a_batch_with_bad_messages_and_duplicates_projects_each_good_event_once(store):
    projector = Projector(store, _NoBus(), batch_size=8)
    await projector.handle_batch("SANDBOX", mixed_batch())

    checks, letters = checks_and_letters(store)
    assert checks == [("e1", "c1", 1), ("e2", "c2", 5), ("e3", "c3", 8)]
    assert letters == EXPECTED_LETTERS
    assert rows(store, "SELECT event_id, stream_sequence FROM projected_events ORDER BY 2") == [
        ("e1", 1),
        ("e2", 5),
        ("e3", 8),
    ]
    assert await store.position(PROJECTION_CONSUMER, "SANDBOX") == 8
    assert store.batches == [[1, 2, 3, 4, 5, 6, 7, 8]] and store.singles == []  # one transaction

    # The same batch delivered again (an ack lost) changes nothing.
    before = (checks_and_letters(store), rows(store, "SELECT * FROM projected_events ORDER BY 1"))
    await projector.handle_batch("SANDBOX", mixed_batch())
    assert (checks_and_letters(store), rows(store, "SELECT * FROM projected_events ORDER BY 1")) == before


async def test_a_batch_the_store_refuses_is_written_one_message_at_a_time(store):
    def null_status_for_c2(d: Delivery) -> list[RowInsert]:
        made = projection.check_completed_rows(d)
        if d.event.check_id != "c2":
            return made
        return [RowInsert("sandbox_checks", {**made[0].row, "status": None}), *made[1:]]

    projector = Projector(
        store, _NoBus(), rules={"nightshift.v1.CheckCompleted": null_status_for_c2}, batch_size=8
    )
    await projector.handle_batch("SANDBOX", mixed_batch())

    checks, letters = checks_and_letters(store)
    assert checks == [("e1", "c1", 1), ("e3", "c3", 8)]
    # c2's rows are refused at both of its deliveries (5, and 7: it was never projected).
    refused = [letter for letter in letters if letter[0] in (5, 7)]
    assert [letter[:3] for letter in refused] == [(n, "e2", "nightshift.v1.CheckCompleted") for n in (5, 7)]
    assert all(letter[3].startswith("rows refused by the store: Constraint Error") for letter in refused)
    assert [letter for letter in letters if letter[0] not in (5, 7)] == EXPECTED_LETTERS
    assert await store.position(PROJECTION_CONSUMER, "SANDBOX") == 8
    assert store.batches == [[1, 2, 3, 4, 5, 6, 7, 8]]  # tried whole, rolled back
    assert store.singles == [1, 3, 5, 7, 8]  # then the events one at a time


async def test_an_event_projected_by_an_earlier_batch_is_skipped_by_a_later_one(store):
    projector = Projector(store, _NoBus(), batch_size=8)
    await projector.handle_batch("SANDBOX", [check("c1", 1, "e1")])
    # The same event stored again (published past the duplicate window), with a new one after it.
    await projector.handle_batch("SANDBOX", [check("c1", 2, "e1"), check("c4", 3, "e4")])
    checks, letters = checks_and_letters(store)
    assert checks == [("e1", "c1", 1), ("e4", "c4", 3)]
    assert letters == []
    assert await store.position(PROJECTION_CONSUMER, "SANDBOX") == 3
    assert store.singles == []


async def test_a_failed_batch_leaves_no_rows_and_no_position(store):
    good = projection.check_completed_rows(check("c1", 1, "e1"))
    bad = projection.check_completed_rows(check("c2", 2, "e2"))
    bad = [RowInsert("sandbox_checks", {**bad[0].row, "mode": None})]
    items = [
        EventWrite(1, "e1", "nightshift.v1.CheckCompleted", good),
        EventWrite(2, "e2", "nightshift.v1.CheckCompleted", bad),
    ]
    with pytest.raises(duckdb.ConstraintException):
        await store.apply_batch(consumer=PROJECTION_CONSUMER, stream="SANDBOX", items=items)
    assert rows(store, "SELECT count(*) FROM sandbox_checks") == [(0,)]
    assert rows(store, "SELECT count(*) FROM projected_events") == [(0,)]
    assert await store.position(PROJECTION_CONSUMER, "SANDBOX") == 0


async def test_a_rule_that_fails_mid_batch_keeps_the_events_before_it(store):
    calls = {"c2": 0}

    def buggy(d: Delivery) -> list[RowInsert]:
        if d.event.check_id == "c2":
            calls["c2"] += 1
            raise RuntimeError("bug in the rule")
        return projection.check_completed_rows(d)

    projector = Projector(store, _NoBus(), rules={"nightshift.v1.CheckCompleted": buggy}, max_failures=2)
    batch = [check("c1", 1, "e1"), check("c2", 2, "e2"), check("c3", 3, "e3")]
    for _ in range(2):
        with pytest.raises(RuntimeError, match="bug in the rule"):
            await projector.handle_batch("SANDBOX", batch)
        assert await store.position(PROJECTION_CONSUMER, "SANDBOX") == 1
    # The third delivery of the failing event makes it a dead letter without calling the rule again.
    await projector.handle_batch("SANDBOX", batch[1:])
    checks, letters = checks_and_letters(store)
    assert checks == [("e1", "c1", 1), ("e3", "c3", 3)]
    assert letters == [
        (2, "e2", "nightshift.v1.CheckCompleted", "failed 2 times, last: RuntimeError('bug in the rule')")
    ]
    assert calls == {"c2": 2}


# --- through a real nats-server ---------------------------------------------------------------


async def publish_raw(nats_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish bytes as they are: no envelope check, no Nats-Msg-Id (so a copy gets a new sequence)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for subject, data in messages:
            await js.publish(subject, data)
    finally:
        await nc.close()


async def project_until(store: ProjectionStore, projector: Projector, ends: dict[str, int]) -> None:
    """Run `projector` until every stream with events is projected up to `ends`, then stop it."""
    wanted = {s: n for s, n in ends.items() if n > 0}
    projector.start()
    try:
        for _ in range(1200):
            positions = {s: await store.position(PROJECTION_CONSUMER, s) for s in wanted}
            if all(positions[s] >= n for s, n in wanted.items()):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"positions {positions}, expected {wanted}")
    finally:
        await projector.stop()


def table_contents(db_path) -> dict[str, list[str]]:
    """Every table of a closed DuckDB file, wall-clock columns left out, rows sorted."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
            ).fetchall()
        ]
        out = {}
        for name in names:
            exclude = f" EXCLUDE ({WALL_CLOCK[name]})" if name in WALL_CLOCK else ""
            out[name] = sorted(
                repr(row) for row in conn.execute(f'SELECT *{exclude} FROM "{name}"').fetchall()
            )
        return out
    finally:
        conn.close()


async def test_batched_and_one_at_a_time_projection_give_identical_tables(bus, nats_server, tmp_path):
    envelopes = await publish(bus, [*event_mix(), attempt("t9", "k9", 1, verdict(sandbox_pb2.OK))])
    # Messages that can only be dead letters, and an event stored a second time.
    await publish_raw(
        nats_server.url,
        [
            (CHECKS, NOT_AN_ENVELOPE),
            (
                events.SUBJECTS["AttemptRecorded"],
                events_pb2.EventEnvelope(
                    event_id="evt-no-task", type="nightshift.v1.AttemptRecorded"
                ).SerializeToString(),
            ),
            (events.SUBJECTS["AttemptRecorded"], envelopes[-1].SerializeToString()),
        ],
    )
    await publish(bus, [check_completed("after-the-bad-ones")])
    ends = await stream_ends(bus)

    contents = {}
    for batch_size in (1, 3, 512):
        path = tmp_path / f"batch-{batch_size}" / "nightshift.duckdb"
        store = await CountingStore.open(path)
        store.batches, store.singles = [], []
        try:
            await project_until(store, Projector(store, bus, batch_size=batch_size), ends)
        finally:
            await store.close()
        contents[batch_size] = table_contents(path)
        if batch_size == 1:
            assert store.batches == [] and store.singles
        else:
            assert store.batches and store.singles == []

    assert contents[3] == contents[1]
    assert contents[512] == contents[1]
    one = contents[1]
    assert len(one["projected_events"]) == len(envelopes) + 1
    assert len(one["dead_letters"]) == 2
    assert len(one["attempts"]) == 8  # the mix's seven and t9's, stored twice but projected once


class GatedStore(ProjectionStore):
    """Holds the first batch that reaches `gate_sequence` after it committed, until `release` is set."""

    gate_sequence: int
    reached: asyncio.Event
    release: asyncio.Event

    async def apply_batch(self, *, consumer, stream, items):
        recorded = await super().apply_batch(consumer=consumer, stream=stream, items=items)
        if not self.reached.is_set() and items[-1].sequence >= self.gate_sequence:
            self.reached.set()
            await self.release.wait()
        return recorded


async def test_stopped_mid_batch_a_projector_resumes_without_loss_or_duplicates(bus, nats_server, db_path):
    first = await publish(bus, [check_completed(f"c{n}") for n in range(1, 41)])
    store = await GatedStore.open(db_path)
    store.gate_sequence, store.reached, store.release = 10, asyncio.Event(), asyncio.Event()
    # Its own connection, closed while the gated batch is held: that batch's ack is lost.
    doomed_bus = await EventBus.connect(nats_server.url, "doomed")
    projector = Projector(store, doomed_bus, batch_size=8, restart_delay_seconds=0.05)
    projector.start()
    await asyncio.wait_for(store.reached.wait(), 30)
    stopping = asyncio.create_task(projector.stop())
    await doomed_bus.close()
    await asyncio.sleep(0.1)
    assert not stopping.done()  # stop waits for the batch in flight
    store.release.set()
    await asyncio.wait_for(stopping, 30)
    stopped_at = await store.position(PROJECTION_CONSUMER, "SANDBOX")
    assert 10 <= stopped_at < 40

    later = await publish(bus, [check_completed(f"c{n}") for n in range(41, 46)])
    try:
        await project_until(store, Projector(store, bus, batch_size=8), {"SANDBOX": 45})
    finally:
        await store.close()

    tables = dump_tables(db_path)
    assert [(r[0], r[-1]) for r in tables["sandbox_checks"]] == sorted(
        (e.event_id, n) for n, e in enumerate(first + later, start=1)
    )
    assert sorted(r[-1] for r in tables["sandbox_checks"]) == list(range(1, 46))
    assert len(tables["projected_events"]) == 45
    assert tables["projection_positions"] == [(PROJECTION_CONSUMER, "SANDBOX", 45)]


# --- the bus's batched consumer ---------------------------------------------------------------


async def test_consume_batches_hands_over_every_message_in_order_retrying_a_failed_batch(bus, nats_server):
    await publish(bus, [check_completed(f"a{n}") for n in range(3)])
    await publish_raw(nats_server.url, [(CHECKS, NOT_AN_ENVELOPE)])
    await publish(bus, [check_completed(f"b{n}") for n in range(3)])
    handed: list[list[int]] = []
    undecodable_seen: list[tuple[int, bytes]] = []
    stop = asyncio.Event()

    async def handler(items: list[Delivery | Undecodable]) -> None:
        handed.append([item.stream_sequence for item in items])
        if len(handed) == 1:
            raise RuntimeError("store busy")
        undecodable_seen.extend((i.stream_sequence, i.data) for i in items if isinstance(i, Undecodable))
        if items[-1].stream_sequence == 7:
            stop.set()

    await asyncio.wait_for(bus.consume_batches("SANDBOX", "batches", handler, stop=stop, batch=4), 60)
    assert handed[1] == handed[0]  # the failed batch came again, before anything after it
    delivered = [sequence for batch in handed[1:] for sequence in batch]
    assert delivered == list(range(1, 8))
    assert all(len(batch) <= 4 for batch in handed)
    assert undecodable_seen == [(4, NOT_AN_ENVELOPE)]


async def test_consume_batches_survives_a_broker_restart(bus, nats_server):
    seen: dict[str, int] = {}
    changed, stop = asyncio.Event(), asyncio.Event()

    async def handler(items: list[Delivery | Undecodable]) -> None:
        for item in items:
            seen.setdefault(item.envelope.event_id, item.stream_sequence)
        changed.set()

    async def wait_for(n: int) -> None:
        while len(seen) < n:
            changed.clear()
            await changed.wait()

    consumer = asyncio.create_task(
        bus.consume_batches("SANDBOX", "restarts", handler, stop=stop, batch=16, ack_wait_seconds=2.0)
    )
    first = await publish(bus, [check_completed(f"c{n}") for n in range(5)])
    await asyncio.wait_for(wait_for(5), 30)
    restart = asyncio.create_task(asyncio.to_thread(nats_server.restart))
    second = [await bus.publish(check_completed(f"c{n}"), deadline_seconds=60) for n in range(5, 10)]
    await restart
    await asyncio.wait_for(wait_for(10), 60)
    stop.set()
    await asyncio.wait_for(consumer, 30)
    assert sorted(seen) == sorted(e.event_id for e in first + second)
    assert sorted(seen.values()) == list(range(1, 11))
