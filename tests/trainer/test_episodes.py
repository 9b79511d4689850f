"""The trainer's episode store: idempotent writes, the read API, and its consumer on a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import nats
import pytest
from nightshift import events
from nightshift.bus import Delivery, EventBus
from nightshift.v1 import agent_pb2, events_pb2, sandbox_pb2
from nightshift_trainer.episodes import (
    SCHEMA_VERSION,
    AttemptRecord,
    EpisodeConsumer,
    EpisodeRecord,
    EpisodeStore,
    EpisodeStoreError,
)

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
BIG_SEED = 2**64 - 1  # uint64 in the proto, wider than SQLite's integers


def verdict(status: int, *codes: str) -> sandbox_pb2.Verdict:
    diagnostics = [sandbox_pb2.Diagnostic(code=c, level="error", message=f"error {c}") for c in codes]
    # A warning's code and a repeated error are not new error codes.
    diagnostics.append(sandbox_pb2.Diagnostic(code="unused_variables", level="warning"))
    diagnostics += [sandbox_pb2.Diagnostic(code=c, level="error") for c in codes[:1]]
    return sandbox_pb2.Verdict(status=status, diagnostics=diagnostics)


def task_events(
    task_id: str,
    koan_id: str = "borrow-010",
    outcomes: str = "FP",
    *,
    adapter_id: str = "none",
    koan_set: str = "train",
    source: str = "",
    completed: bool = True,
) -> list:
    """The events the agent publishes for one task; `outcomes` has F (failed) or P (passed) per attempt."""
    run_id = f"run-{task_id}"
    out: list = [
        events_pb2.TaskSubmitted(
            task_id=task_id,
            request=agent_pb2.SubmitTaskRequest(
                koan_id=koan_id,
                source=source,
                adapter_id=adapter_id,
                model=MODEL,
                run_id=run_id,
                seed=BIG_SEED,
                max_attempts=5,
            ),
            koan_set=koan_set,
            family="borrow-conflicts" if koan_id else "",
        )
    ]
    for number, outcome in enumerate(outcomes, start=1):
        passed = outcome == "P"
        out.append(
            events_pb2.AttemptRecorded(
                task_id=task_id,
                koan_id=koan_id,
                adapter_id=adapter_id,
                model=MODEL,
                run_id=run_id,
                attempt=agent_pb2.Attempt(
                    number=number,
                    prompt=f"prompt {number} of {task_id}",
                    completion=f"```rust\ncode {number}\n```",
                    code=f"code {number} of {task_id}",
                    verdict=verdict(sandbox_pb2.OK)
                    if passed
                    else verdict(sandbox_pb2.COMPILE_ERROR, "E0499", "E0502"),
                    temperature=0.0 if number == 1 else 0.7,
                    seed=BIG_SEED - number,
                ),
            )
        )
    if completed:
        passed = outcomes.endswith("P")
        out.append(
            events_pb2.EpisodeCompleted(
                task_id=task_id,
                koan_id=koan_id,
                passed=passed,
                steps=len(outcomes),
                error_codes=["E0499"] * outcomes.count("F"),
                adapter_id=adapter_id,
                model=MODEL,
                run_id=run_id,
                state=agent_pb2.TASK_PASSED if passed else agent_pb2.TASK_FAILED,
                final_code=f"code {len(outcomes)} of {task_id}",
                koan_set=koan_set,
                family="borrow-conflicts" if koan_id else "",
                correlation_id=f"cycle-{task_id}",
            )
        )
    return out


def deliveries(messages: list, first_sequence: int = 1) -> list[Delivery]:
    out = []
    for sequence, event in enumerate(messages, start=first_sequence):
        envelope = events.wrap(event, correlation_id="cycle-1", causation_id="cause")
        out.append(Delivery(envelope, event, events.subject_for(event), sequence))
    return out


@pytest.fixture
def store(tmp_path):
    with EpisodeStore.open(tmp_path / "trainer" / "episodes.sqlite") as opened:
        yield opened


@pytest.fixture
async def bus(nats_server):
    connected = await EventBus.connect(nats_server.url, "trainer-tests")
    yield connected
    await connected.close()


# --- the store -----------------------------------------------------------------------------------


def test_each_event_is_written_once_and_the_position_moves_with_it(store):
    batch = deliveries(task_events("t1", outcomes="FFP"))
    assert [store.apply(d) for d in batch] == [True] * 5
    assert store.position("EPISODES") == 5
    counts = store.counts()
    assert (counts.events, counts.tasks, counts.attempts, counts.episodes, counts.passed) == (5, 1, 3, 1, 1)
    before = store.dump()

    # A redelivery (at or behind the stored position) changes nothing.
    assert [store.apply(d) for d in batch] == [False] * 5
    assert store.dump() == before

    # The same event stored again at a later sequence: only the position moves.
    again = Delivery(batch[2].envelope, batch[2].event, batch[2].subject, 6)
    assert store.apply(again) is False
    assert store.position("EPISODES") == 6
    after = store.dump()
    assert after["stream_positions"] == [("EPISODES", 6)]
    assert {k: v for k, v in after.items() if k != "stream_positions"} == {
        k: v for k, v in before.items() if k != "stream_positions"
    }
    # A late redelivery of an old sequence never moves the position back.
    assert store.apply(batch[0]) is False
    assert store.position("EPISODES") == 6


def test_the_first_record_of_an_attempt_number_is_kept(store):
    first, second = task_events("t1", outcomes="F")[1], task_events("t1", outcomes="P")[1]
    assert first.attempt.number == second.attempt.number == 1
    assert [store.apply(d) for d in deliveries([first, second])] == [True, True]
    (attempt,) = store.episode("t1").attempts
    assert attempt.status == "COMPILE_ERROR"
    assert store.counts().attempts == 1


def test_events_the_store_does_not_keep_move_only_their_streams_position(store):
    started = events_pb2.TrainingJobStarted(job_id="j1", device="cpu")
    envelope = events.wrap(started)
    assert store.apply(Delivery(envelope, started, "training.job.started", 4)) is False
    assert store.position("TRAINING") == 4
    assert store.position("EPISODES") == 0
    assert store.counts().events == 0


def test_episodes_are_assembled_from_their_events(store):
    messages = (
        task_events("t1", outcomes="FP", adapter_id="none")
        + task_events("t2", "bound-009", outcomes="P", adapter_id="cand-1")
        + task_events("t3", "", outcomes="FF", koan_set="user", source="fn main() {}", adapter_id="")
        + task_events("t4", "borrow-011", outcomes="F", completed=False)
    )
    for d in deliveries(messages):
        store.apply(d)

    t1 = store.episode("t1")
    assert t1 == EpisodeRecord(
        task_id="t1",
        koan_id="borrow-010",
        koan_set="train",
        family="borrow-conflicts",
        run_id="run-t1",
        correlation_id="cycle-t1",
        adapter_id="none",
        model=MODEL,
        passed=True,
        steps=2,
        attempts=[
            AttemptRecord(
                number=1,
                prompt="prompt 1 of t1",
                completion="```rust\ncode 1\n```",
                code="code 1 of t1",
                status="COMPILE_ERROR",
                error_codes=["E0499", "E0502"],
                temperature=0.0,
                seed=BIG_SEED - 1,
            ),
            AttemptRecord(
                number=2,
                prompt="prompt 2 of t1",
                completion="```rust\ncode 2\n```",
                code="code 2 of t1",
                status="OK",
                error_codes=[],
                temperature=0.7,
                seed=BIG_SEED - 2,
            ),
        ],
        completed=True,
        state="TASK_PASSED",
        source="",
    )
    assert store.episode("nope") is None

    assert [e.task_id for e in store.episodes()] == ["t1", "t2", "t3"]  # in stream order
    assert [e.task_id for e in store.episodes(completed_only=False)] == ["t1", "t2", "t3", "t4"]
    running = store.episode("t4")
    assert (running.completed, running.passed, running.steps, running.state) == (False, False, 1, "")
    # The base model is "none" or "" in events; either spelling finds both.
    assert [e.task_id for e in store.episodes(adapter_id="")] == ["t1", "t3"]
    assert [e.task_id for e in store.episodes(adapter_id="none")] == ["t1", "t3"]
    assert [e.task_id for e in store.episodes(adapter_id="cand-1")] == ["t2"]
    assert [e.task_id for e in store.episodes(koan_set="user")] == ["t3"]
    user = store.episode("t3")
    assert (user.koan_id, user.source, user.passed) == ("", "fn main() {}", False)
    assert [e.task_id for e in store.episodes(koan_set="train", completed_only=False)] == ["t1", "t2", "t4"]


def test_a_reopened_store_keeps_its_content_and_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "episodes.sqlite"
    with EpisodeStore.open(path) as first:
        for d in deliveries(task_events("t1")):
            first.apply(d)
        content = first.dump()
    with EpisodeStore.open(path) as second:
        assert second.dump() == content
        assert second.position("EPISODES") == 4
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(EpisodeStoreError, match="newer than this trainer"):
        EpisodeStore.open(path)


# --- the consumer on a real broker ---------------------------------------------------------------


async def publish_all(bus: EventBus, messages: list) -> None:
    for event in messages:
        await bus.publish(event, correlation_id="cycle-1")


async def consume_until_caught_up(store: EpisodeStore, bus: EventBus, **kwargs) -> None:
    consumer = EpisodeConsumer(store, bus, **kwargs)
    consumer.start()
    try:
        await consumer.catch_up(timeout_seconds=30)
    finally:
        await consumer.stop()


def sequences(store: EpisodeStore) -> list[int]:
    return sorted(row[3] for row in store.dump()["applied_events"])


async def test_the_consumer_resumes_after_its_stored_position(bus, store, caplog):
    caplog.set_level(logging.INFO, logger="nightshift.trainer.episodes")
    await publish_all(bus, task_events("t1", outcomes="FFP"))
    await consume_until_caught_up(store, bus)
    assert [e.task_id for e in store.episodes()] == ["t1"]
    assert store.position("EPISODES") == 5

    await publish_all(bus, task_events("t2", outcomes="P"))  # while the consumer is down
    consumer = EpisodeConsumer(store, bus)
    consumer.start()
    try:
        await publish_all(bus, task_events("t3", outcomes="FF"))  # after it is back
        await consumer.catch_up(timeout_seconds=30)
    finally:
        await consumer.stop()
    assert "consuming EPISODES from sequence 6" in caplog.text
    assert [(e.task_id, e.passed, e.steps) for e in store.episodes()] == [
        ("t1", True, 3),
        ("t2", True, 1),
        ("t3", False, 2),
    ]
    assert sequences(store) == list(range(1, 13))
    assert store.position("EPISODES") == 12


async def test_an_event_stored_twice_by_the_broker_is_written_once(bus, store, nats_server):
    await publish_all(bus, task_events("t1", outcomes="FP"))
    # The same envelope stored again without its Nats-Msg-Id, as after the duplicate window.
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        replayed = events.wrap(task_events("t1", outcomes="FP")[1], event_id="fixed-id")
        for _ in range(2):
            await js.publish("episodes.attempt.recorded", replayed.SerializeToString())
    finally:
        await nc.close()
    await consume_until_caught_up(store, bus)
    assert store.position("EPISODES") == 6
    assert store.counts().events == 5
    assert [len(e.attempts) for e in store.episodes()] == [2]


async def test_deleting_the_file_and_replaying_rebuilds_the_same_content(bus, tmp_path):
    messages = (
        task_events("t1", outcomes="FFP")
        + task_events("t2", "", outcomes="FP", koan_set="user", source="fn main() {}")
        + task_events("t3", outcomes="F", completed=False)
    )
    await publish_all(bus, messages)
    path = tmp_path / "trainer" / "episodes.sqlite"
    with EpisodeStore.open(path) as store:
        await consume_until_caught_up(store, bus)
        before = store.dump()
        records = store.episodes(completed_only=False)
    assert len(before["applied_events"]) == len(messages)
    for leftover in path.parent.iterdir():
        leftover.unlink()
    with EpisodeStore.open(path) as store:
        assert store.counts().events == 0
        await consume_until_caught_up(store, bus)
        assert store.dump() == before
        assert store.episodes(completed_only=False) == records


class FailingOnce(EpisodeStore):
    """A real store whose write of one sequence fails the first time, as a full disk would."""

    fail_at = 3
    failures = 0

    def apply(self, delivery: Delivery) -> bool:
        if delivery.stream_sequence == self.fail_at and not self.failures:
            self.failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().apply(delivery)


async def test_a_failed_write_restarts_the_consumer_from_the_stored_position(bus, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nightshift.trainer.episodes")
    messages = task_events("t1", outcomes="FFP") + task_events("t2", outcomes="P")
    await publish_all(bus, messages)
    with FailingOnce.open(tmp_path / "flaky.sqlite") as flaky:
        assert isinstance(flaky, FailingOnce)
        await consume_until_caught_up(flaky, bus, restart_delay_seconds=0.05)
        assert flaky.failures == 1
        assert "consuming EPISODES from sequence 3" in caplog.text
        assert sequences(flaky) == list(range(1, len(messages) + 1))
        content = flaky.dump()
    with EpisodeStore.open(tmp_path / "clean.sqlite") as clean:
        await consume_until_caught_up(clean, bus, durable="trainer-episodes-clean")
        assert clean.dump() == content


async def test_the_consumer_rides_out_a_broker_restart(bus, store, nats_server):
    await publish_all(bus, task_events("t1"))
    consumer = EpisodeConsumer(store, bus, restart_delay_seconds=0.1)
    consumer.start()
    try:
        await consumer.catch_up(timeout_seconds=30)
        await asyncio.to_thread(nats_server.restart)
        await publish_all(bus, task_events("t2"))
        await consumer.catch_up(timeout_seconds=60)
    finally:
        await consumer.stop()
    assert [e.task_id for e in store.episodes()] == ["t1", "t2"]
    assert sequences(store) == list(range(1, 9))
