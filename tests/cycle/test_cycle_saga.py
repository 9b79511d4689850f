"""The cycle saga through the real evaluator and the real trainer service on a real nats-server.

The agent is a double whose skill depends on the adapter it serves (so the gate has something to
decide), and the trainer's torch pipeline is replaced by one that writes an adapter file at once: the
saga, the job flow, the registry acting on GateDecided, and resuming after an evaluator restart are
what these tests check. The real pipeline runs in the end-to-end quick cycle (tests/e2e).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import threading
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest
from nightshift.bus import EventBus
from nightshift.corpus import Corpus
from nightshift.grpcserver import create_server
from nightshift.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    events_pb2,
    sandbox_pb2,
    trainer_pb2,
    trainer_pb2_grpc,
)
from nightshift_evaluator import cycle as saga_module
from nightshift_evaluator.config import EvaluatorConfig
from nightshift_evaluator.server import start as start_evaluator
from nightshift_trainer import pipeline
from nightshift_trainer.config import TrainerConfig
from nightshift_trainer.server import start as start_trainer
from nightshift_trainer.training import TrainResult

A = agent_pb2
E = evaluator_pb2
S = sandbox_pb2
CORPUS = Corpus.load()
MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
# The base model fails these at attempt 1; it fixes the train ones at attempt 2, never the others.
BASE_FAILS = {"mut-002", "mut-006", "borrow-009", "move-009", "conv-009"}


class LearningAgent(agent_pb2_grpc.AgentServicer):
    """Publishes TaskSubmitted, AttemptRecorded and EpisodeCompleted like the agent, without a model.

    The base model fails BASE_FAILS at the first attempt; any adapter fixes everything at once. The
    champion follows ADAPTERS events, the served adapters are the files in the adapter directory.
    """

    def __init__(self, bus: EventBus, adapters_dir: Path):
        self.bus = bus
        self.adapters_dir = adapters_dir
        self.champion = ""
        self.submissions: Counter = Counter()
        self._tasks: set[asyncio.Task] = set()
        self.hold: asyncio.Event | None = None  # when set by a test, tasks wait for it

    async def follow_champion(self, stop: asyncio.Event) -> None:
        async def apply(delivery):
            if isinstance(delivery.event, events_pb2.AdapterPromoted):
                self.champion = delivery.event.adapter_id
            elif isinstance(delivery.event, events_pb2.AdapterRolledBack):
                self.champion = delivery.event.to_adapter_id

        await self.bus.consume("ADAPTERS", f"double-{uuid.uuid4().hex[:8]}", apply, stop=stop)

    async def SubmitTask(self, request, context):
        task_id = str(uuid.uuid4())
        koan = CORPUS.get(request.koan_id)
        adapter = request.adapter_id or self.champion or "none"
        self.submissions[(request.correlation_id, request.koan_id, request.seed)] += 1
        resolved = A.SubmitTaskRequest()
        resolved.CopyFrom(request)
        resolved.adapter_id = adapter
        await self.bus.publish(
            events_pb2.TaskSubmitted(
                task_id=task_id, request=resolved, koan_set=koan.split, family=koan.family
            ),
            correlation_id=request.correlation_id,
        )
        task = asyncio.create_task(self._work(task_id, resolved, koan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return A.SubmitTaskResponse(task_id=task_id)

    async def _work(self, task_id, request, koan) -> None:
        if self.hold is not None:
            await self.hold.wait()
        prompt = f"Fix the Rust program below.\n\n```rust\n{koan.broken}\n```"
        fails_first = request.adapter_id == "none" and koan.id in BASE_FAILS
        attempts = []
        if fails_first:
            attempts.append(
                (
                    koan.broken,
                    S.Verdict(
                        status=S.COMPILE_ERROR, diagnostics=[S.Diagnostic(code="E0384", level="error")]
                    ),
                )
            )
        if not fails_first or (request.max_attempts > 1 and koan.split == "train"):
            attempts.append((koan.fix, S.Verdict(status=S.OK)))
        for number, (code, verdict) in enumerate(attempts, start=1):
            await self.bus.publish(
                events_pb2.AttemptRecorded(
                    task_id=task_id,
                    koan_id=koan.id,
                    attempt=A.Attempt(
                        number=number,
                        prompt=prompt,
                        completion=f"```rust\n{code}\n```",
                        code=code,
                        verdict=verdict,
                    ),
                    adapter_id=request.adapter_id,
                    model=MODEL,
                    run_id=request.run_id,
                )
            )
        passed = attempts[-1][1].status == S.OK
        await self.bus.publish(
            events_pb2.EpisodeCompleted(
                task_id=task_id,
                koan_id=koan.id,
                passed=passed,
                steps=len(attempts),
                error_codes=["E0384"] if fails_first else [],
                adapter_id=request.adapter_id,
                model=MODEL,
                run_id=request.run_id,
                state=A.TASK_PASSED if passed else A.TASK_FAILED,
                final_code=attempts[-1][0],
                koan_set=koan.split,
                family=koan.family,
                correlation_id=request.correlation_id,
            ),
            correlation_id=request.correlation_id,
        )

    async def ListModels(self, request, context):
        return A.ListModelsResponse(models=[A.ModelInfo(name=MODEL, available=True)])

    async def ListAdapters(self, request, context):
        ids = sorted(p.name for p in self.adapters_dir.iterdir()) if self.adapters_dir.exists() else []
        return A.ListServedAdaptersResponse(
            adapters=[A.ServedAdapter(adapter_id=a, champion=a == self.champion) for a in ids],
            champion_adapter_id=self.champion,
        )


def instant_pipeline(**kwargs) -> pipeline.Outcome:
    """Stands in for torch training: writes the adapter file and reports a verified adapter."""
    path: Path = kwargs["adapter_path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + uuid.uuid4().bytes)
    kwargs["on_progress"](
        pipeline.Progress(step=1, total_steps=1, loss=0.5, tokens_per_second=100.0, eta_seconds=0)
    )
    train = TrainResult(
        peft_dir=kwargs["work_dir"],
        steps=1,
        final_loss=0.5,
        train_seconds=0.1,
        train_tokens=100,
        device="cpu",
        resumed_from_step=0,
    )
    verification = trainer_pb2.AdapterVerification(
        passed=True, tolerance=0.1, max_abs_diff=0.01, adapter_effect=1.0
    )
    return pipeline.Outcome(train, path, verification)


@pytest.fixture
async def world(nats_server, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "train_export_verify", instant_pipeline)
    monkeypatch.setattr(pipeline, "device_name", lambda: "cpu")
    bus = await EventBus.connect(nats_server.url, "saga-test")
    await bus.ensure_streams()
    adapters_dir = tmp_path / "adapters"
    agent = LearningAgent(bus, adapters_dir)
    agent_server = create_server(
        "127.0.0.1:0", [(agent_pb2_grpc.add_AgentServicer_to_server, agent, "nightshift.v1.Agent")]
    )
    await agent_server.start()
    stop = asyncio.Event()
    follower = asyncio.create_task(agent.follow_champion(stop))
    trainer_config = TrainerConfig(
        addr="127.0.0.1:0",
        nats_url=nats_server.url,
        store_dir=tmp_path / "trainer",
        adapters_dir=adapters_dir,
        model=MODEL,
        threads=1,
    )
    trainer = await start_trainer(trainer_config)
    # a restarted trainer comes back on the same port
    trainer_config = dataclasses.replace(trainer_config, addr=f"127.0.0.1:{trainer.port}")
    config = EvaluatorConfig(
        addr="127.0.0.1:0",
        nats_url=nats_server.url,
        db_path=tmp_path / "evaluator" / "db.duckdb",
        agent_addr=f"127.0.0.1:{agent_server.port}",
        trainer_addr=trainer_config.addr,
    )
    world = World(bus, agent, config, trainer_config, [trainer])
    yield world
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(follower, 5)
    for running in world.trainers:
        with contextlib.suppress(Exception):
            await running.stop()
    await agent_server.stop(0.5)
    await bus.close()


@dataclasses.dataclass
class World:
    """The services around the evaluator under test; unpacks as (bus, agent, evaluator config)."""

    bus: EventBus
    agent: LearningAgent
    config: EvaluatorConfig
    trainer_config: TrainerConfig
    trainers: list

    def __iter__(self):
        return iter((self.bus, self.agent, self.config))

    async def stop_trainer(self) -> None:
        await self.trainers.pop().stop()

    async def start_trainer(self) -> None:
        self.trainers.append(await start_trainer(self.trainer_config))


REQUEST = E.StartCycleRequest(
    cycles=2, recipe="replay", day_set="smoke", eval_family="mutability", max_attempts=2, model=MODEL
)


async def wait_for_cycle(stub, cycle_id: str, timeout: float = 90.0) -> E.CycleStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await stub.GetCycle(E.GetCycleRequest(cycle_id=cycle_id))).status
        if status.state != "running":
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"cycle still running: round {status.cycle} {status.phase}")
        await asyncio.sleep(0.2)


async def test_two_rounds_promote_a_gain_and_reject_a_tie(world):
    bus, agent, config = world
    evaluator = await start_evaluator(config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            cycle_id = (await stub.StartCycle(REQUEST)).cycle_id
            status = await wait_for_cycle(stub, cycle_id)
            assert status.state == "done", status.error
            first, second = status.rounds
            # Round 1: the adapter fixes mut-002 (frozen) and mut-006 (held-out) -> promoted.
            assert first.decision.promote, first.decision.reasons
            assert first.decision.gains == 1 and first.decision.regressions == 0
            assert first.champion_adapter_id == ""
            # Round 2: gated against round 1's adapter, whose runs are reused; a tie is rejected.
            assert second.champion_adapter_id == first.adapter_id
            assert second.champion_frozen_run_id == first.candidate_frozen_run_id
            assert not second.decision.promote
            assert any("no gain" in r for r in second.decision.reasons)
            assert set(status.rounds[0].phase_seconds) == {"day", "night", "dawn"}

            report = await stub.GetReport(
                E.GetReportRequest(run_id=second.candidate_frozen_run_id, cycle_id=cycle_id)
            )
            names = {f.name for f in report.files}
            assert {"report.md", "summary.json", "learning_curve.png"} <= names
            assert first.candidate_frozen_run_id in report.markdown
            # The curve shows every round's candidate beside the champion, with the gate's decision.
            summary = json.loads(next(f.content for f in report.files if f.name == "summary.json"))
            curve = summary["learning_curve"]
            assert [p["cycle"] for p in curve] == [0, 1, 2]
            assert curve[0]["candidate"] is None
            assert (curve[1]["candidate"]["run_id"], curve[1]["candidate"]["promoted"]) == (
                first.candidate_frozen_run_id,
                True,
            )
            assert curve[1]["candidate"]["gains"] == 1 and curve[1]["run_id"] == first.candidate_frozen_run_id
            assert curve[2]["candidate"]["adapter_id"] == second.adapter_id
            assert curve[2]["candidate"]["promoted"] is False
            assert curve[2]["run_id"] == first.candidate_frozen_run_id  # the champion stayed
            assert "| rejected |" in report.markdown and "| promoted |" in report.markdown
            created = next(line for line in report.markdown.splitlines() if line.startswith("| created |"))
            assert re.search(r"\| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 \|", created), created
    finally:
        await evaluator.stop()
    assert agent.champion == first.adapter_id
    adapters = [d.event for d in await bus.read_all("ADAPTERS")]
    kinds = Counter(type(e).__name__ for e in adapters)
    assert kinds == {"AdapterTrained": 2, "AdapterPromoted": 1, "AdapterRejected": 1}


# In `make test-slow`: once in about six runs on this machine the resumed saga did not finish its dawn
# within the test's 90 s; until that is understood it stays out of the fast suite.
@pytest.mark.slow
async def test_an_evaluator_restart_mid_cycle_resumes_without_redoing_work(world):
    bus, agent, config = world
    evaluator = await start_evaluator(config)
    async with grpc.aio.insecure_channel(evaluator.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        cycle_id = (await stub.StartCycle(REQUEST)).cycle_id
        # Stop the evaluator as soon as round 1's night has been recorded.
        while True:
            completed = [
                d.event
                for d in await bus.read_all("EVALUATION", "evaluation.cycle.phase_completed")
                if d.event.cycle_id == cycle_id
            ]
            if any(e.phase == "night" for e in completed):
                break
            await asyncio.sleep(0.05)
    await evaluator.stop()

    evaluator = await start_evaluator(config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            status = await wait_for_cycle(stub, cycle_id)
    finally:
        await evaluator.stop()
    assert status.state == "done", status.error
    assert len(status.rounds) == 2

    evaluation = [d for d in await bus.read_all("EVALUATION")]
    phases = Counter(
        (d.event.cycle, d.event.phase, type(d.event).__name__)
        for d in evaluation
        if isinstance(d.event, (events_pb2.CyclePhaseStarted, events_pb2.CyclePhaseCompleted))
    )
    assert all(n == 1 for n in phases.values()), phases
    gates = [d.event for d in evaluation if isinstance(d.event, events_pb2.GateDecided)]
    assert len(gates) == 2
    started = Counter(
        d.event.request.correlation_id
        for d in evaluation
        if isinstance(d.event, events_pb2.EvaluationStarted)
    )
    assert all(n == 1 for n in started.values()), started
    jobs = [d for d in await bus.read_all("TRAINING") if isinstance(d.event, events_pb2.TrainingJobRequested)]
    assert len(jobs) == 2
    assert all(n == 1 for n in agent.submissions.values()), agent.submissions


async def test_bad_cycle_requests_name_the_field(world):
    _, _, config = world
    evaluator = await start_evaluator(config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            for request, field in (
                (E.StartCycleRequest(recipe="magic"), "recipe"),
                (E.StartCycleRequest(cycles=99), "cycles"),
                (E.StartCycleRequest(day_set="frozen"), "day_set"),
                (E.StartCycleRequest(policy={"frozen_measure": "greedy"}), "policy"),
                (E.StartCycleRequest(policy={"max_regresions": "1"}), "policy"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.StartCycle(request)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details().startswith(f"{field}:")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetCycle(E.GetCycleRequest(cycle_id="ghost"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await evaluator.stop()


@pytest.fixture
def impatient(monkeypatch):
    """The saga gives up on an unreachable service after 2 calls of 2 s; `patient()` restores the default."""
    monkeypatch.setattr(saga_module, "CALL_ATTEMPTS", 2)
    monkeypatch.setattr(saga_module, "CALL_SECONDS", 2.0)
    # once the service is back, a loaded machine may answer slowly
    return lambda: monkeypatch.setattr(saga_module, "CALL_SECONDS", 30.0)


def one_round() -> E.StartCycleRequest:
    one = E.StartCycleRequest()
    one.CopyFrom(REQUEST)
    one.cycles = 1
    return one


async def test_a_trainer_down_during_the_night_is_waited_for(world, monkeypatch, impatient):
    """The night's job goes on in the trainer: an unreachable trainer delays the cycle, never fails it."""
    release, started = threading.Event(), threading.Event()

    def slow_pipeline(**kwargs):
        started.set()
        release.wait(60)
        return instant_pipeline(**kwargs)

    monkeypatch.setattr(pipeline, "train_export_verify", slow_pipeline)
    evaluator = await start_evaluator(world.config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            cycle_id = (await stub.StartCycle(one_round())).cycle_id
            assert await asyncio.to_thread(started.wait, 60)
            # The trainer goes away mid-job; the saga keeps asking well past its 2 attempts.
            stopping = asyncio.create_task(world.stop_trainer())
            release.set()
            await stopping
            await asyncio.sleep(12.0)  # well past 2 attempts of 2 s and the pause between
            status = (await stub.GetCycle(E.GetCycleRequest(cycle_id=cycle_id))).status
            assert (status.state, status.phase) == ("running", "night"), status.error
            # Back on the same store, the trainer runs the job again and the cycle goes on.
            await world.start_trainer()
            impatient()
            status = await wait_for_cycle(stub, cycle_id)
            assert status.state == "done", status.error
            assert status.rounds[0].decision.promote
    finally:
        await evaluator.stop()


async def test_a_failed_cycle_is_retried_from_the_phase_that_failed(world, impatient):
    bus = world.bus
    evaluator = await start_evaluator(world.config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RetryCycle(E.RetryCycleRequest(cycle_id="ghost"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert info.value.details().startswith("cycle_id:")
            # The trainer goes away while the day is worked: the night cannot ask for a job and fails.
            world.agent.hold = asyncio.Event()
            cycle_id = (await stub.StartCycle(one_round())).cycle_id
            while not world.agent.submissions:
                await asyncio.sleep(0.05)
            await world.stop_trainer()
            world.agent.hold.set()
            status = await wait_for_cycle(stub, cycle_id)
            assert status.state == "failed" and "trainer is not reachable" in status.error, status
            day_run = status.rounds[0].day_run_id
            # Retried while the trainer is still down, it fails again at the night, with its own event.
            again = (await stub.RetryCycle(E.RetryCycleRequest(cycle_id=cycle_id))).status
            assert (again.state, again.phase, again.retries) == ("running", "night", 1)
            again = await wait_for_cycle(stub, cycle_id)
            assert again.state == "failed" and again.retries == 1, again
            await world.start_trainer()
            impatient()
            # Two retries at once: one drives the cycle run, the other is told it is running.
            answers = await asyncio.gather(
                stub.RetryCycle(E.RetryCycleRequest(cycle_id=cycle_id)),
                stub.RetryCycle(E.RetryCycleRequest(cycle_id=cycle_id)),
                return_exceptions=True,
            )
            refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
            (retried,) = [a.status for a in answers if not isinstance(a, Exception)]
            assert (retried.state, retried.phase, retried.retries) == ("running", "night", 2)
            assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "is running; only a failed one can be retried" in refused[0].details()
            status = await wait_for_cycle(stub, cycle_id)
            assert status.state == "done", status.error
            assert status.retries == 2 and status.error == ""
            assert status.rounds[0].day_run_id == day_run  # the day was not worked again
            # the night's time holds its two failed passes, each at least 2 calls of 2 s
            assert status.rounds[0].phase_seconds["night"] >= 8.0, dict(status.rounds[0].phase_seconds)
            assert status.rounds[0].decision.promote
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RetryCycle(E.RetryCycleRequest(cycle_id=cycle_id))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "is done; only a failed one can be retried" in info.value.details()
    finally:
        await evaluator.stop()
    # Every event of the cycle run is there once: two failures, two retries, one day, one night.
    phases = [
        d.event
        for d in await bus.read_all("EVALUATION")
        if isinstance(d.event, events_pb2.CyclePhaseCompleted | events_pb2.CyclePhaseStarted)
        and d.event.cycle_id == cycle_id
    ]
    failed = [e for e in phases if isinstance(e, events_pb2.CyclePhaseCompleted) and e.phase == "failed"]
    retries = [e.retry for e in phases if isinstance(e, events_pb2.CyclePhaseStarted) and e.retry]
    assert len(failed) == 2 and retries == [1, 2]
    days = [e for e in phases if isinstance(e, events_pb2.CyclePhaseStarted) and e.phase == "day"]
    assert len(days) == 1
    assert (
        sum(isinstance(d.event, events_pb2.TrainingJobRequested) for d in await bus.read_all("TRAINING")) == 1
    )


async def test_the_gate_policy_of_a_cycle_reaches_its_decision(world):
    request = one_round()
    request.policy["frozen_measure"] = "first_attempt"
    evaluator = await start_evaluator(world.config)
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            status = await wait_for_cycle(stub, (await stub.StartCycle(request)).cycle_id)
    finally:
        await evaluator.stop()
    assert status.state == "done", status.error
    decision = status.rounds[0].decision
    # mut-002: the base model fails its first attempt, the adapter passes it
    assert decision.promote and decision.policy["frozen_measure"] == "first_attempt"
    assert any("1 frozen gain at the first attempt (mut-002)" in r for r in decision.reasons), (
        decision.reasons
    )


async def wait_for_run(stub, run_id: str, timeout: float = 60.0) -> E.EvaluationSummary:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        summary = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))).summary
        if summary.finished:
            return summary
        assert asyncio.get_running_loop().time() < deadline, f"run {run_id} still running"
        await asyncio.sleep(0.2)


async def test_finished_runs_that_measured_the_same_thing_are_reused_unless_fresh(world):
    bus, agent, config = world
    evaluator = await start_evaluator(config)
    one = one_round()
    try:
        async with grpc.aio.insecure_channel(evaluator.addr) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            # The base model's baselines, measured before any cycle with the dawn's settings; the
            # held-out one asks for the agent's default model, which is the model the cycle names.
            baseline = {}
            for koan_set, model in (("frozen", MODEL), ("heldout", "")):
                run_id = (
                    await stub.StartEvaluation(
                        E.StartEvaluationRequest(
                            koan_set=koan_set,
                            family="mutability",
                            adapter_id="none",
                            max_attempts=2,
                            model=model,
                        )
                    )
                ).run_id
                baseline[koan_set] = (await wait_for_run(stub, run_id)).run_id

            first = await wait_for_cycle(stub, (await stub.StartCycle(one)).cycle_id)
            assert first.state == "done", first.error
            (r1,) = first.rounds
            assert (r1.champion_frozen_run_id, r1.champion_heldout_run_id) == (
                baseline["frozen"],
                baseline["heldout"],
            )
            assert r1.candidate_frozen_run_id not in baseline.values()
            assert r1.decision.promote, r1.decision.reasons

            # Base is no longer champion, so a second cycle from base would differ: roll back first.
            async with grpc.aio.insecure_channel(config.trainer_addr) as trainer_channel:
                await trainer_pb2_grpc.TrainerStub(trainer_channel).RollbackAdapter(
                    trainer_pb2.RollbackAdapterRequest(model=MODEL, reason="test")
                )
            deadline = asyncio.get_running_loop().time() + 30
            while agent.champion:
                assert asyncio.get_running_loop().time() < deadline, "rollback not followed"
                await asyncio.sleep(0.1)

            # Same settings: the day's run is the first cycle's, the champion's runs are the baselines.
            fewer = E.StartCycleRequest()
            fewer.CopyFrom(one)
            fewer.day_max_attempts = 1
            again = E.StartCycleRequest()
            again.CopyFrom(one)
            second = await wait_for_cycle(stub, (await stub.StartCycle(again)).cycle_id)
            (r2,) = second.rounds
            assert r2.day_run_id == r1.day_run_id
            assert r2.champion_frozen_run_id == baseline["frozen"]
            assert r2.candidate_frozen_run_id != r1.candidate_frozen_run_id

            # One attempt by day is another measurement; --fresh measures everything again.
            third = await wait_for_cycle(stub, (await stub.StartCycle(fewer)).cycle_id)
            (r3,) = third.rounds
            assert r3.day_run_id not in (r1.day_run_id, "")
            day = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id=r3.day_run_id))).summary
            assert day.max_attempts == 1
            fresh = E.StartCycleRequest()
            fresh.CopyFrom(one)
            fresh.fresh = True
            fourth = await wait_for_cycle(stub, (await stub.StartCycle(fresh)).cycle_id)
            (r4,) = fourth.rounds
            assert r4.day_run_id != r1.day_run_id
            assert r4.champion_frozen_run_id not in (baseline["frozen"], "")

            # A report can draw several cycle runs' curves together (recipes compared).
            report = await stub.GetReport(
                E.GetReportRequest(
                    run_id=r1.candidate_frozen_run_id,
                    cycle_id=first.cycle_id,
                    compare_cycle_ids=[second.cycle_id],
                )
            )
            assert "recipes.png" in {f.name for f in report.files}
            summary = json.loads(next(f.content for f in report.files if f.name == "summary.json"))
            runs = summary["cycle_runs"]
            assert [(c["cycle_id"], c["label"]) for c in runs] == [
                (first.cycle_id, "replay"),
                (second.cycle_id, "replay"),
            ]
            assert runs[1]["curve"][1]["candidate"]["run_id"] == r2.candidate_frozen_run_id
            assert f"--cycle {first.cycle_id} --cycle {second.cycle_id}" in summary["command"]
            for request, code, field in (
                (
                    E.GetReportRequest(
                        run_id=r1.candidate_frozen_run_id,
                        cycle_id=first.cycle_id,
                        compare_cycle_ids=["ghost"],
                    ),
                    grpc.StatusCode.NOT_FOUND,
                    "compare_cycle_ids",
                ),
                (
                    E.GetReportRequest(run_id=r1.candidate_frozen_run_id, compare_cycle_ids=[first.cycle_id]),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "compare_cycle_ids",
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetReport(request)
                assert info.value.code() == code
                assert info.value.details().startswith(f"{field}:"), info.value.details()
    finally:
        await evaluator.stop()
