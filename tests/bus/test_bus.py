"""The event bus against a real nats-server: streams, idempotent publish, durable consumers, restarts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nightshift import events
from nightshift.bus import Delivery, EventBus
from nightshift.v1 import events_pb2, sandbox_pb2


def check_event(n: int) -> events_pb2.CheckCompleted:
    return events_pb2.CheckCompleted(
        check_id=f"check-{n}", verdict=sandbox_pb2.Verdict(status=sandbox_pb2.OK), source_bytes=n
    )


class Store:
    """A minimal idempotent projection: rows keyed by event id, plus the last stream position."""

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.last_sequence = 0
        self.calls = 0
        self.changed = asyncio.Event()

    async def handle(self, delivery: Delivery) -> None:
        self.calls += 1
        if delivery.envelope.event_id not in self.rows:
            self.rows[delivery.envelope.event_id] = delivery.event.source_bytes
        self.last_sequence = max(self.last_sequence, delivery.stream_sequence)
        self.changed.set()

    async def wait_for(self, n: int, timeout: float = 30.0) -> None:
        async def _wait():
            while len(self.rows) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)


@pytest.fixture
async def bus(nats_server):
    bus = await EventBus.connect(nats_server.url, "test")
    yield bus
    await bus.close()


async def test_streams_of_the_design_exist(bus):
    for stream in events.STREAMS:
        assert await bus.stream_last_sequence(stream) == 0


def test_every_event_message_has_a_subject():
    names = {
        m.name for m in events_pb2.DESCRIPTOR.message_types_by_name.values() if m.name != "EventEnvelope"
    }
    assert names == set(events.SUBJECTS)
    for subject in events.SUBJECTS.values():
        stream = events.stream_for(subject)
        assert subject.split(".")[0] == events.STREAMS[stream][0].split(".")[0]


async def test_publish_sets_envelope_and_deduplicates_by_event_id(bus):
    envelope = await bus.publish(check_event(1), correlation_id="cycle-1", causation_id="req-1")
    assert envelope.type == "nightshift.v1.CheckCompleted"
    uuid.UUID(envelope.event_id)
    assert envelope.occurred_at.seconds > 0
    await bus.publish(check_event(1), event_id=envelope.event_id)  # a retry of the same event
    assert await bus.stream_last_sequence("SANDBOX") == 1


async def test_consumer_delivers_in_order_and_acks_after_the_handler(bus):
    published = [await bus.publish(check_event(n)) for n in range(5)]
    store, stop = Store(), asyncio.Event()
    task = asyncio.create_task(bus.consume("SANDBOX", "projection", store.handle, stop=stop))
    await store.wait_for(5)
    stop.set()
    await task
    assert list(store.rows) == [e.event_id for e in published]
    assert store.last_sequence == 5


async def test_failing_handler_gets_the_event_again(bus):
    await bus.publish(check_event(7))
    attempts, done, stop = [], asyncio.Event(), asyncio.Event()

    async def flaky(delivery: Delivery) -> None:
        attempts.append(delivery.envelope.event_id)
        if len(attempts) == 1:
            raise RuntimeError("database busy")
        done.set()

    task = asyncio.create_task(bus.consume("SANDBOX", "flaky", flaky, stop=stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await task
    assert len(attempts) == 2 and attempts[0] == attempts[1]


async def test_consumer_resumes_from_the_stored_position(bus):
    for n in range(6):
        await bus.publish(check_event(n))
    seen, stop = [], asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.stream_sequence)
        if len(seen) == 2:
            stop.set()

    await bus.consume("SANDBOX", "resumer", handler, start_sequence=4, stop=stop)
    assert seen[:2] == [4, 5]


async def test_broker_restart_loses_and_duplicates_nothing(bus, nats_server):
    store, stop = Store(), asyncio.Event()
    consumer = asyncio.create_task(bus.consume("SANDBOX", "projection", store.handle, stop=stop))
    first = [await bus.publish(check_event(n)) for n in range(5)]
    await store.wait_for(5)

    # Restart the broker (same port, same store) while a publisher keeps going.
    restart = asyncio.create_task(asyncio.to_thread(nats_server.restart))
    second = [await bus.publish(check_event(n), deadline_seconds=60) for n in range(5, 10)]
    await restart
    await store.wait_for(10)
    stop.set()
    await consumer

    ids = [e.event_id for e in first + second]
    assert sorted(store.rows) == sorted(ids)
    assert await bus.stream_last_sequence("SANDBOX") == 10  # nothing published twice


async def test_connect_without_a_broker_fails_clearly():
    from nightshift.bus import BusUnavailableError
    from nightshift.natsserver import free_port

    with pytest.raises(BusUnavailableError, match="no NATS server answers"):
        await EventBus.connect(f"nats://127.0.0.1:{free_port()}", "test", connect_timeout=2)


async def test_a_failed_event_is_redelivered_before_the_ones_after_it(bus):
    for n in range(4):
        await bus.publish(check_event(n))
    order, failed, stop = [], [], asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        if delivery.stream_sequence == 2 and not failed:
            failed.append(2)
            raise RuntimeError("transient")
        order.append(delivery.stream_sequence)
        if len(order) == 4:
            stop.set()

    await asyncio.wait_for(bus.consume("SANDBOX", "ordered", handler, stop=stop), 30)
    assert order == [1, 2, 3, 4]


async def test_read_all_returns_the_stream_so_far_in_order(bus):
    assert await bus.read_all("SANDBOX") == []
    published = [await bus.publish(check_event(n)) for n in range(5)]
    got = await bus.read_all("SANDBOX")
    assert [d.envelope.event_id for d in got] == [e.event_id for e in published]
    assert [d.stream_sequence for d in got] == [1, 2, 3, 4, 5]
    assert await bus.read_all("SANDBOX", subject="sandbox.nothing.here") == []
