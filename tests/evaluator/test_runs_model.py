"""An evaluation run on the real stack: sandbox, agent with the 0.5B model, evaluator, nats-server."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from nightshift.corpus import Corpus
from nightshift.models import DEFAULT_MODEL, ModelStore
from nightshift.v1 import agent_pb2, evaluator_pb2, evaluator_pb2_grpc, events_pb2
from nightshift_agent.config import AgentConfig
from nightshift_agent.server import start as start_agent
from nightshift_sandbox.server import start as start_sandbox

pytestmark = pytest.mark.model
E = evaluator_pb2
# A smoke family with a single koan (mut-009), which keeps the run to one model call.
FAMILY = "mutability"


@pytest.fixture(scope="module")
def model_available():
    if ModelStore().locate(DEFAULT_MODEL).source == "missing":
        pytest.skip(f"{DEFAULT_MODEL} is not fetched: run `make models`")


@pytest.fixture
async def agent_addr(nats_server, sandbox_config, tmp_path, model_available):
    sandbox = await start_sandbox(replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url))
    agent = await start_agent(
        AgentConfig(
            addr="127.0.0.1:0",
            nats_url=nats_server.url,
            sandbox_addr=f"127.0.0.1:{sandbox.port}",
            adapters_dir=tmp_path / "adapters",
            n_ctx=2048,
        )
    )
    yield f"127.0.0.1:{agent.port}"
    await agent.stop(grace=5)
    await sandbox.stop(grace=5)


async def test_a_smoke_family_is_evaluated_on_the_real_agent(start_evaluator, agent_addr, bus):
    koans = [k.id for k in Corpus.load().koans("smoke", FAMILY)]
    assert len(koans) == 1
    evaluator = await start_evaluator(agent_addr=agent_addr)
    async with grpc.aio.insecure_channel(evaluator.addr) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        request = E.StartEvaluationRequest(koan_set="smoke", family=FAMILY, adapter_id="none", max_attempts=1)
        run_id = (await stub.StartEvaluation(request)).run_id

        async def watch():
            return [u async for u in stub.WatchEvaluation(E.WatchEvaluationRequest(run_id=run_id))]

        updates = await asyncio.wait_for(watch(), 240)
        got = (await stub.GetEvaluation(E.GetEvaluationRequest(run_id=run_id))).summary

    final = updates[-1].summary
    assert final.finished and got == final
    assert (final.total, final.evaluated, final.expected, final.max_attempts) == (1, 1, 1, 1)
    assert (final.adapter_id, final.model) == ("none", DEFAULT_MODEL)

    episodes = [d.event for d in await bus.read_all("EPISODES")]
    submitted = [e for e in episodes if isinstance(e, events_pb2.TaskSubmitted)]
    completed = [e for e in episodes if isinstance(e, events_pb2.EpisodeCompleted)]
    assert [(e.request.koan_id, e.request.run_id, e.request.seed) for e in submitted] == [
        (koans[0], run_id, 0)
    ]
    assert submitted[0].request.correlation_id == run_id and submitted[0].request.max_attempts == 1
    assert len(completed) == 1
    episode = completed[0]
    assert episode.run_id == run_id and episode.state in (agent_pb2.TASK_PASSED, agent_pb2.TASK_FAILED)
    assert episode.steps == 1
    assert final.passed == int(episode.passed) and final.pass_rate == float(episode.passed)
    assert final.pass_at_1 == float(episode.passed)
    assert dict(final.error_codes) == ({} if episode.passed else {episode.error_codes[0]: 1})
    assert [(f.family, f.passed, f.total) for f in final.families] == [(FAMILY, int(episode.passed), 1)]
    assert updates[-1].last_koan_id == koans[0] and updates[-1].last_passed == episode.passed

    evaluated = [
        d.event
        for d in await bus.read_all("EVALUATION")
        if isinstance(d.event, events_pb2.KoanEvaluated) and d.event.run_id == run_id
    ]
    assert [(e.koan_id, e.task_id, e.passed, e.attempts) for e in evaluated] == [
        (koans[0], episode.task_id, episode.passed, 1)
    ]
