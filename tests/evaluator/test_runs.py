"""Evaluation runs through the Evaluator's gRPC API: a real nats-server, the real evaluator, and an
agent double that "fixes" koans at once by publishing TaskSubmitted / EpisodeCompleted on the bus."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest
from nightshift.bus import EventBus
from nightshift.corpus import Corpus
from nightshift.grpcserver import create_server
from nightshift.v1 import agent_pb2, agent_pb2_grpc, evaluator_pb2, evaluator_pb2_grpc, events_pb2
from nightshift_cli.main import main as cli_main
from nightshift_evaluator.metrics import wilson_interval
from nightshift_evaluator.runs import koan_event_id

A = agent_pb2
E = evaluator_pb2
SMOKE = sorted(k.id for k in Corpus.load().koans("smoke"))


@dataclass(frozen=True)
class Ending:
    """How the agent double ends a task on a koan."""

    passed: bool = True
    steps: int = 1
    error_codes: tuple[str, ...] = ()


@dataclass
class AgentDouble(agent_pb2_grpc.AgentServicer):
    """Accepts tasks like the agent (TaskSubmitted first, EpisodeCompleted when done) without a model."""

    bus: EventBus
    addr: str = ""
    endings: dict[str, Ending] = field(default_factory=dict)
    champion: str = ""
    adapters: tuple[str, ...] = ()
    busy_answers: int = 0  # answer this many SubmitTask calls with RESOURCE_EXHAUSTED first
    cancel_first_of: set[str] = field(default_factory=set)  # koans whose first task is cancelled
    unknown_koans: set[str] = field(default_factory=set)  # koans answered with NOT_FOUND
    holding: bool = False  # keep new tasks running until `release`
    calls: Counter = field(default_factory=Counter)  # (koan_id, seed) -> accepted submissions
    requests: list = field(default_factory=list)
    refused: int = 0
    running: int = 0
    most_running: int = 0
    held: list = field(default_factory=list)
    _tasks: set = field(default_factory=set)
    _corpus: Corpus = field(default_factory=Corpus.load)

    async def SubmitTask(self, request, context):
        if self.busy_answers > 0:
            self.busy_answers -= 1
            self.refused += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "agent busy: 33 tasks waiting")
        if request.koan_id in self.unknown_koans:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"koan_id: no koan {request.koan_id!r}")
        task_id = str(uuid.uuid4())
        # Shielded: a caller that goes away mid-call must not leave a half-accepted task behind.
        await asyncio.shield(self._accept(task_id, request))
        return A.SubmitTaskResponse(task_id=task_id)

    async def _accept(self, task_id: str, request: A.SubmitTaskRequest) -> None:
        koan = self._corpus.get(request.koan_id)
        resolved = A.SubmitTaskRequest()
        resolved.CopyFrom(request)
        resolved.adapter_id = request.adapter_id or self.champion or "none"
        resolved.model = request.model or "double-model"
        await self.bus.publish(
            events_pb2.TaskSubmitted(
                task_id=task_id, request=resolved, koan_set=koan.split, family=koan.family
            ),
            correlation_id=request.correlation_id or request.run_id,
        )
        self.calls[(request.koan_id, request.seed)] += 1
        self.requests.append(resolved)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.holding:
            self.held.append((task_id, resolved, koan.family))
        else:
            self._finish_soon(task_id, resolved, koan.family)

    def _finish_soon(self, task_id: str, request: A.SubmitTaskRequest, family: str) -> None:
        task = asyncio.create_task(self._finish(task_id, request, family))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, task_id: str, request: A.SubmitTaskRequest, family: str) -> None:
        ending = self.endings.get(request.koan_id, Ending())
        state = A.TASK_PASSED if ending.passed else A.TASK_FAILED
        steps = ending.steps
        if request.koan_id in self.cancel_first_of:
            self.cancel_first_of.discard(request.koan_id)
            state, steps = A.TASK_CANCELLED, 0
        await self.bus.publish(
            events_pb2.EpisodeCompleted(
                task_id=task_id,
                koan_id=request.koan_id,
                passed=state == A.TASK_PASSED,
                steps=steps,
                error_codes=list(ending.error_codes) if state != A.TASK_CANCELLED else [],
                adapter_id=request.adapter_id,
                model=request.model,
                run_id=request.run_id,
                state=state,
                koan_set="train",
                family=family,
                correlation_id=request.correlation_id,
            ),
            correlation_id=request.correlation_id,
            causation_id=task_id,
        )
        self.running -= 1

    def release(self, count: int | None = None) -> None:
        """Finish `count` held tasks (all by default), oldest first."""
        count = len(self.held) if count is None else count
        for task_id, request, family in self.held[:count]:
            self._finish_soon(task_id, request, family)
        del self.held[:count]

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def ListModels(self, request, context):
        return A.ListModelsResponse(models=[A.ModelInfo(name="double-model", available=True)])

    async def ListAdapters(self, request, context):
        return A.ListServedAdaptersResponse(
            adapters=[A.ServedAdapter(adapter_id=a, champion=a == self.champion) for a in self.adapters],
            champion_adapter_id=self.champion,
        )


@pytest.fixture
async def agent(bus):
    double = AgentDouble(bus)
    server = create_server(
        "127.0.0.1:0",
        [(agent_pb2_grpc.add_AgentServicer_to_server, double, "nightshift.v1.Agent")],
    )
    await server.start()
    double.addr = f"127.0.0.1:{server.port}"
    yield double
    await server.stop(0.5)
    await double.drain()


@pytest.fixture
async def evaluations(start_evaluator, agent):
    """An evaluator submitting to the agent double, and a stub to it."""
    running = await start_evaluator(agent_addr=agent.addr)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        yield evaluator_pb2_grpc.EvaluatorStub(channel)


async def follow(stub, run_id: str, within_seconds: float = 60.0) -> list[E.WatchEvaluationResponse]:
    async def collect():
        return [u async for u in stub.WatchEvaluation(E.WatchEvaluationRequest(run_id=run_id))]

    return await asyncio.wait_for(collect(), within_seconds)


async def wait_until(predicate, what: str, within_seconds: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def evaluation_events(bus: EventBus, run_id: str) -> list:
    out = []
    for d in await bus.read_all("EVALUATION"):
        event = d.event
        run = event.summary.run_id if isinstance(event, events_pb2.EvaluationCompleted) else event.run_id
        if run == run_id:
            out.append((d.envelope, event))
    return out


ENDINGS = {
    "borrow-009": Ending(False, 3, ("E0502", "E0502", "E0499")),
    "move-009": Ending(False, 3, ("E0382", "E0382", "E0382")),
    "conv-009": Ending(True, 2, ("E0308",)),
    "opt-010": Ending(True, 3, ("E0599", "E0308")),
}


async def test_a_run_submits_every_koan_and_publishes_its_summary(evaluations, agent, bus):
    agent.endings = ENDINGS
    agent.holding = True
    run_id = (await evaluations.StartEvaluation(E.StartEvaluationRequest(koan_set="smoke"))).run_id
    updates: list[E.WatchEvaluationResponse] = []

    async def watch() -> None:
        async for update in evaluations.WatchEvaluation(E.WatchEvaluationRequest(run_id=run_id)):
            updates.append(update)

    watching = asyncio.create_task(watch())
    await wait_until(lambda: updates, "the watcher's first update")
    agent.holding = False
    agent.release()
    await asyncio.wait_for(watching, 60)

    final = updates[-1].summary
    assert final.finished and [u.summary.finished for u in updates].count(True) == 1
    assert (final.total, final.passed, final.evaluated, final.expected) == (8, 6, 8, 8)
    assert final.pass_rate == 0.75 and final.pass_at_1 == 0.5
    assert (final.pass_rate_low, final.pass_rate_high) == pytest.approx(wilson_interval(6, 8))
    assert final.median_attempts == 1.0 and final.mean_attempts == pytest.approx(9 / 6)
    # Consecutive failed-attempt pairs: borrow (=, ≠), move (=, =), opt (≠): 3 of 5 repeat.
    assert final.repeat_error_rate == pytest.approx(0.6)
    assert dict(final.error_codes) == {"E0382": 3, "E0502": 2, "E0308": 2, "E0499": 1, "E0599": 1}
    families = {f.family: (f.passed, f.total) for f in final.families}
    assert families["borrow-conflicts"] == (0, 1) and families["use-after-move"] == (0, 1)
    assert families["mutability"] == (1, 1) and len(families) == 8
    assert (final.koan_set, final.repeats, final.max_attempts, final.seed) == ("smoke", 1, 3, 0)
    assert (final.adapter_id, final.requested_adapter, final.model) == ("none", "champion", "double-model")
    assert final.correlation_id == run_id

    # Every koan went to the agent once, tagged with the run, never more than 2 at a time.
    assert sorted(k for k, _ in agent.calls) == SMOKE and set(agent.calls.values()) == {1}
    assert agent.most_running <= 2
    assert {(r.run_id, r.correlation_id, r.max_attempts, r.seed, r.adapter_id) for r in agent.requests} == {
        (run_id, run_id, 3, 0, "none")
    }
    # The watcher saw each KoanEvaluated: progress grows one koan at a time.
    assert [u.summary.evaluated for u in updates][:9] == list(range(9)) and len(updates) in (9, 10)
    assert not updates[0].last_koan_id and updates[0].summary.expected == 8
    assert {u.last_koan_id: u.last_passed for u in updates if u.last_koan_id} == {
        k: k not in ("borrow-009", "move-009") for k in SMOKE
    }

    events = await evaluation_events(bus, run_id)
    kinds = Counter(type(e).__name__ for _, e in events)
    assert kinds == {"EvaluationStarted": 1, "KoanEvaluated": 8, "EvaluationCompleted": 1}
    started = events[0][1]
    assert isinstance(started, events_pb2.EvaluationStarted) and list(started.koan_ids) == SMOKE
    evaluated = {e.koan_id: e for _, e in events if isinstance(e, events_pb2.KoanEvaluated)}
    move = evaluated["move-009"]
    assert (move.passed, move.attempts, list(move.error_codes), move.repeat) == (
        False,
        3,
        ["E0382"] * 3,
        0,
    )
    assert evaluated["mut-009"].passed_first_attempt and not evaluated["conv-009"].passed_first_attempt
    assert events[-1][1].summary == final
    got = (await evaluations.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))).summary
    assert got == final


async def test_repeats_use_consecutive_seeds_and_the_champion_is_pinned(evaluations, agent):
    agent.champion, agent.adapters = "cand-1", ("cand-1", "old-2")
    agent.endings = {"mut-009": Ending(False, 2, ("E0596", "E0596"))}
    request = E.StartEvaluationRequest(
        koan_set="smoke", family="mutability", repeats=3, seed=41, max_attempts=2, correlation_id="cycle-7"
    )
    run_id = (await evaluations.StartEvaluation(request)).run_id
    final = (await follow(evaluations, run_id))[-1].summary
    assert agent.calls == {("mut-009", 41): 1, ("mut-009", 42): 1, ("mut-009", 43): 1}
    assert {(r.adapter_id, r.max_attempts, r.correlation_id) for r in agent.requests} == {
        ("cand-1", 2, "cycle-7")
    }
    assert (final.adapter_id, final.requested_adapter, final.family) == ("cand-1", "champion", "mutability")
    assert (final.total, final.evaluated, final.repeats, final.passed) == (1, 3, 3, 0)
    assert final.repeat_error_rate == 1.0 and final.correlation_id == "cycle-7"

    explicit = E.StartEvaluationRequest(
        koan_set="smoke", family="mutability", adapter_id="old-2", model="double-model"
    )
    final = (await follow(evaluations, (await evaluations.StartEvaluation(explicit)).run_id))[-1].summary
    assert (final.adapter_id, final.requested_adapter) == ("old-2", "old-2")
    assert agent.requests[-1].adapter_id == "old-2"


async def test_a_busy_agent_and_a_cancelled_task_are_retried(evaluations, agent, bus):
    """Busy answers and cancelled tasks are retried; a koan the agent does not know counts as failed."""
    agent.busy_answers = 3
    agent.cancel_first_of = {"vis-010"}
    agent.unknown_koans = {"bound-016"}
    run_id = (await evaluations.StartEvaluation(E.StartEvaluationRequest(koan_set="smoke"))).run_id
    final = (await follow(evaluations, run_id))[-1].summary
    assert final.finished and final.passed == 7 and dict(final.error_codes) == {"SUBMIT_NOT_FOUND": 1}
    assert agent.refused == 3
    assert agent.calls[("vis-010", 0)] == 2  # the cancelled task is not an outcome: submitted again
    assert all(n == 1 for (k, _), n in agent.calls.items() if k != "vis-010")
    kinds = Counter(type(e).__name__ for _, e in await evaluation_events(bus, run_id))
    assert kinds["KoanEvaluated"] == 8


@pytest.mark.parametrize(
    ("fields", "code", "field_name", "mentions"),
    [
        ({"koan_set": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "koan_set", "frozen"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "koan_set", "required"),
        ({"koan_set": "smoke", "family": "closures"}, grpc.StatusCode.INVALID_ARGUMENT, "family", "closures"),
        ({"koan_set": "smoke", "repeats": 11}, grpc.StatusCode.INVALID_ARGUMENT, "repeats", "10"),
        ({"koan_set": "smoke", "max_attempts": 11}, grpc.StatusCode.INVALID_ARGUMENT, "max_attempts", "10"),
        ({"koan_set": "smoke", "adapter_id": "ghost"}, grpc.StatusCode.NOT_FOUND, "adapter_id", "ghost"),
        ({"koan_set": "smoke", "model": "gpt-9"}, grpc.StatusCode.INVALID_ARGUMENT, "model", "double-model"),
    ],
)
async def test_bad_requests_name_the_field(evaluations, agent, fields, code, field_name, mentions):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluations.StartEvaluation(E.StartEvaluationRequest(**fields))
    assert info.value.code() == code
    assert info.value.details().startswith(f"{field_name}:") and mentions in info.value.details()
    assert not agent.calls


async def test_unknown_runs_are_not_found(evaluations):
    for run_id in ("no-such-run", "latest"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await evaluations.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().startswith("run_id:")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await follow(evaluations, run_id)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().startswith("run_id:")


async def test_an_empty_set_and_an_unreachable_agent_are_refused(start_evaluator, agent, tmp_path):
    source = Corpus.load().get("mut-009").path
    corpus = tmp_path / "corpus"
    (corpus / "koans" / "mutability").mkdir(parents=True)
    (corpus / "koans" / "mutability" / source.name).write_text(source.read_text())
    running = await start_evaluator(agent_addr=agent.addr, corpus_dir=corpus)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.StartEvaluation(E.StartEvaluationRequest(koan_set="frozen"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "koan_set: set 'frozen' has no koans"

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    running = await start_evaluator(agent_addr=f"127.0.0.1:{closed_port}")
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.StartEvaluation(E.StartEvaluationRequest(koan_set="smoke"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"127.0.0.1:{closed_port}" in info.value.details()


async def test_a_run_survives_an_evaluator_restart(start_evaluator, agent, bus):
    """Stopped after its first KoanEvaluated, the run goes on in a new evaluator without re-running koans."""
    agent.endings = {"thread-009": Ending(False, 1, ("E0277",))}
    agent.holding = True
    first = await start_evaluator(agent_addr=agent.addr)
    async with grpc.aio.insecure_channel(first.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        request = E.StartEvaluationRequest(koan_set="smoke", repeats=2, seed=5)
        run_id = (await stub.StartEvaluation(request)).run_id
        await wait_until(lambda: len(agent.held) == 2, "two running tasks")
        agent.release(1)  # the first ends; its KoanEvaluated frees a place for a third task
        await wait_until(lambda: sum(agent.calls.values()) == 3 and len(agent.held) == 2, "a third task")
        summary = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))).summary
        assert (summary.evaluated, summary.expected, summary.finished) == (1, 16, False)
    await first.stop(grace_seconds=1.0)

    agent.release(1)  # one task ends while no evaluator runs; the other is still running
    await agent.drain()
    second = await start_evaluator(agent_addr=agent.addr)
    async with grpc.aio.insecure_channel(second.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        await wait_until(lambda: sum(agent.calls.values()) == 4 and len(agent.held) == 2, "a fourth task")
        summary = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))).summary
        assert summary.evaluated == 2  # the episode that ended meanwhile was evaluated on start
        updates: list[E.WatchEvaluationResponse] = []

        async def watch_latest() -> None:
            async for update in stub.WatchEvaluation(E.WatchEvaluationRequest(run_id="latest")):
                updates.append(update)

        watching = asyncio.create_task(watch_latest())
        await wait_until(lambda: updates, "the watcher's first update")
        agent.holding = False
        agent.release()
        await asyncio.wait_for(watching, 60)
    final = updates[-1].summary
    assert final.run_id == run_id and final.finished
    assert (final.total, final.evaluated, final.passed, final.repeats) == (8, 16, 7, 2)

    expected_calls = {(k, seed): 1 for k in SMOKE for seed in (5, 6)}
    assert dict(agent.calls) == expected_calls
    events = await evaluation_events(bus, run_id)
    evaluated = Counter((e.koan_id, e.repeat) for _, e in events if isinstance(e, events_pb2.KoanEvaluated))
    assert evaluated == {(k, r): 1 for k in SMOKE for r in (0, 1)}
    assert [type(e).__name__ for _, e in events].count("EvaluationCompleted") == 1
    ids = {env.event_id for env, e in events if isinstance(e, events_pb2.KoanEvaluated)}
    assert koan_event_id(run_id, "thread-009", 1) in ids


async def test_the_cli_runs_an_evaluation_and_prints_json(start_evaluator, agent, monkeypatch, capsys):
    agent.endings = {"mut-009": Ending(True, 2, ("E0596",))}
    running = await start_evaluator(agent_addr=agent.addr)
    monkeypatch.setenv("NIGHTSHIFT_EVALUATOR_ADDR", running.addr)
    argv = ["eval", "--set", "smoke", "--family", "mutability", "--adapter", "none", "--repeats", "2"]
    status = await asyncio.to_thread(cli_main, [*argv, "--seed", "3", "--max-attempts", "2", "--json"])
    out = capsys.readouterr().out
    assert status == 0, out
    result = json.loads(out)
    assert result["run_id"] and result["finished"] is True
    assert (result["pass_rate"], result["pass_at_1"], result["evaluated"]) == (1.0, 0.0, 2)
    assert result["families"] == [{"family": "mutability", "passed": 1, "total": 1, "pass_rate": 1.0}]
    assert (result["adapter_id"], result["requested_adapter"], result["max_attempts"]) == ("none", "none", 2)
    assert agent.calls == {("mut-009", 3): 1, ("mut-009", 4): 1}

    status = await asyncio.to_thread(cli_main, ["watch", result["run_id"]])
    assert status == 0
    assert result["run_id"] in capsys.readouterr().out


async def test_history_on_the_stream_is_resumed_only_where_it_can_be(start_evaluator, agent, bus):
    """A run whose koans were all evaluated gets its EvaluationCompleted at start; a run naming koans
    that are not in the corpus is only followed, never submitted."""
    request = E.StartEvaluationRequest(
        koan_set="smoke",
        family="mutability",
        adapter_id="none",
        repeats=1,
        max_attempts=3,
        correlation_id="c",
    )
    await bus.publish(events_pb2.EvaluationStarted(run_id="done", request=request, koan_ids=["mut-009"]))
    await bus.publish(
        events_pb2.KoanEvaluated(
            run_id="done",
            koan_id="mut-009",
            family="mutability",
            passed=True,
            attempts=1,
            passed_first_attempt=True,
        ),
        event_id=koan_event_id("done", "mut-009", 0),
    )
    await bus.publish(events_pb2.EvaluationStarted(run_id="foreign", request=request, koan_ids=["k-unknown"]))
    running = await start_evaluator(agent_addr=agent.addr)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        done = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id="done"))).summary
        assert done.finished and (done.total, done.passed, done.pass_at_1) == (1, 1, 1.0)
        foreign = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id="foreign"))).summary
        assert not foreign.finished and (foreign.evaluated, foreign.expected) == (0, 1)
        latest = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id="latest"))).summary
        assert latest.run_id == "foreign"
    await running.stop(grace_seconds=1.0)
    assert not agent.calls
    kinds = [type(e).__name__ for _, e in await evaluation_events(bus, "done")]
    assert kinds == ["EvaluationStarted", "KoanEvaluated", "EvaluationCompleted"]
    assert [type(e).__name__ for _, e in await evaluation_events(bus, "foreign")] == ["EvaluationStarted"]
