"""The evaluator projecting real CheckCompleted events from a real nats-server into a real DuckDB file."""

from __future__ import annotations

import asyncio
import logging

import grpc
import nats
from evaluator_support import dump_tables, plain_rows, query, sample_checks, wait_for_value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nightshift import events
from nightshift.v1 import evaluator_pb2_grpc
from nightshift_evaluator import projection
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.store import ProjectionStore

COUNT_CHECKS = "SELECT count(*) FROM sandbox_checks"
POSITION = (
    "SELECT last_sequence FROM projection_positions WHERE consumer = 'projection' AND stream = 'SANDBOX'"
)


async def publish_all(bus, checks, correlation_id="cycle-1"):
    return [
        await bus.publish(c, correlation_id=correlation_id, causation_id=f"req-{c.check_id}") for c in checks
    ]


async def test_published_checks_are_projected_with_their_diagnostics(bus, stub):
    envelopes = await publish_all(bus, sample_checks())
    await wait_for_value(stub, COUNT_CHECKS, len(envelopes))

    rows = plain_rows(
        await query(
            stub,
            "SELECT check_id, status, mode, tests_passed, tests_failed, error_codes "
            "FROM sandbox_checks ORDER BY check_id",
        )
    )
    assert rows == [
        ("c1", "OK", "test", 2, 0, "[]"),
        ("c2", "COMPILE_ERROR", "build", 0, 0, '["E0382", "E0308"]'),
        ("c3", "TEST_FAILED", "test", 1, 1, "[]"),
        ("c4", "LINT_FAILED", "clippy", 0, 0, "[]"),
        ("c5", "TIMEOUT", "test", 0, 0, "[]"),
        ("c6", "MEMORY_LIMIT", "test", 0, 0, "[]"),
        ("c7", "OUTPUT_LIMIT", "test", 0, 0, "[]"),
        ("c8", "SANDBOX_ERROR", "test", 0, 0, "[]"),
    ]
    diagnostics = plain_rows(
        await query(
            stub,
            'SELECT c.check_id, d.position, d.code, d.level, d.line, d."column" '
            "FROM sandbox_check_diagnostics d JOIN sandbox_checks c USING (event_id) "
            "ORDER BY c.check_id, d.position",
        )
    )
    assert diagnostics == [
        ("c2", 1, "E0382", "error", 3, 9),
        ("c2", 2, "", "warning", 1, 5),
        ("c2", 3, "E0308", "error", 7, 13),
        ("c2", 4, "", "error", 0, 0),
        ("c4", 1, "clippy::needless_return", "warning", 1, 1),
    ]
    first = plain_rows(
        await query(
            stub,
            "SELECT event_id, correlation_id, causation_id, task_id, stream_sequence, "
            "occurred_at IS NOT NULL FROM sandbox_checks WHERE check_id = 'c1'",
        )
    )
    assert first == [(envelopes[0].event_id, "cycle-1", "req-c1", "task-1", 1, True)]
    await wait_for_value(stub, POSITION, len(envelopes))


async def test_deleting_the_file_and_replaying_rebuilds_identical_tables(bus, start_evaluator, db_path):
    checks = sample_checks()
    await publish_all(bus, checks)

    async def project_everything():
        running = await start_evaluator()
        async with grpc.aio.insecure_channel(running.addr) as channel:
            await wait_for_value(evaluator_pb2_grpc.EvaluatorStub(channel), POSITION, len(checks))
        await running.stop()
        return dump_tables(db_path)

    before = await project_everything()
    assert len(before["sandbox_checks"]) == len(checks)
    assert len(before["sandbox_check_diagnostics"]) == 5
    for path in db_path.parent.iterdir():
        path.unlink()
    after = await project_everything()
    assert after == before


async def test_restart_resumes_after_the_stored_position_without_duplicates(bus, start_evaluator, caplog):
    caplog.set_level(logging.INFO, logger="nightshift.evaluator.projector")
    checks = sample_checks()
    await publish_all(bus, checks[:3])
    running = await start_evaluator()
    async with grpc.aio.insecure_channel(running.addr) as channel:
        await wait_for_value(evaluator_pb2_grpc.EvaluatorStub(channel), POSITION, 3)
    await running.stop()

    await publish_all(bus, checks[3:5])  # while the evaluator is down
    running = await start_evaluator()
    await publish_all(bus, checks[5:])  # after it is back
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        await wait_for_value(stub, POSITION, len(checks))
        counts = plain_rows(
            await query(
                stub,
                "SELECT count(*), count(DISTINCT event_id), count(DISTINCT check_id) FROM sandbox_checks",
            )
        )
        assert counts == [(len(checks), len(checks), len(checks))]
        sequences = plain_rows(await query(stub, "SELECT stream_sequence FROM sandbox_checks ORDER BY 1"))
        assert sequences == [(i,) for i in range(1, len(checks) + 1)]
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("projecting SANDBOX")]
    assert starts == ["projecting SANDBOX from sequence 1", "projecting SANDBOX from sequence 4"]


async def test_an_event_republished_past_the_duplicate_window_is_projected_once(bus, stub, nats_server):
    envelope = (await publish_all(bus, sample_checks()[:1]))[0]
    await wait_for_value(stub, POSITION, 1)
    # Without Nats-Msg-Id the broker stores it again, as it would after the duplicate window.
    nc = await nats.connect(nats_server.url)
    try:
        ack = await nc.jetstream().publish(events.SUBJECTS["CheckCompleted"], envelope.SerializeToString())
    finally:
        await nc.close()
    assert ack.seq == 2
    await wait_for_value(stub, POSITION, 2)
    rows = plain_rows(await query(stub, "SELECT event_id, stream_sequence FROM sandbox_checks"))
    assert rows == [(envelope.event_id, 1)]


async def test_a_failing_write_is_retried_in_stream_order(bus, db_path):
    checks = sample_checks()[:4]
    failures = {"c2": 1}

    def flaky(delivery):
        if failures.get(delivery.event.check_id, 0) > 0:
            failures[delivery.event.check_id] -= 1
            raise RuntimeError("disk hiccup")
        return projection.check_completed_rows(delivery)

    store = await ProjectionStore.open(db_path)
    projector = Projector(
        store, bus, rules={"nightshift.v1.CheckCompleted": flaky}, restart_delay_seconds=0.1
    )
    projector.start()
    try:
        await publish_all(bus, checks)
        for _ in range(400):
            if await store.position("projection", "SANDBOX") == len(checks):
                break
            await asyncio.sleep(0.05)
    finally:
        await projector.stop()
        await store.close()
    tables = dump_tables(db_path)
    assert sorted((r[1], r[-1]) for r in tables["sandbox_checks"]) == [
        ("c1", 1),
        ("c2", 2),
        ("c3", 3),
        ("c4", 4),
    ]
    assert failures == {"c2": 0}


async def test_health_reports_serving(evaluator):
    async with grpc.aio.insecure_channel(evaluator.addr) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
