"""Fixtures of the evaluator tests: evaluators started on a real nats-server and a real DuckDB file."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from nightshift.bus import EventBus
from nightshift.v1 import evaluator_pb2_grpc
from nightshift_evaluator.config import EvaluatorConfig
from nightshift_evaluator.server import RunningEvaluator, start


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "evaluator" / "nightshift.duckdb"


@pytest.fixture
def evaluator_config(nats_server, db_path) -> EvaluatorConfig:
    return EvaluatorConfig(addr="127.0.0.1:0", nats_url=nats_server.url, db_path=db_path)


@pytest.fixture
async def start_evaluator(evaluator_config):
    """Start evaluators (config fields may be overridden); every one still running is stopped at the end."""
    started: list[RunningEvaluator] = []

    async def _start(**overrides) -> RunningEvaluator:
        running = await start(dataclasses.replace(evaluator_config, **overrides))
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.stop(grace_seconds=1.0)


@pytest.fixture
async def bus(nats_server):
    connected = await EventBus.connect(nats_server.url, "evaluator-tests")
    yield connected
    await connected.close()


@pytest.fixture
async def evaluator(start_evaluator):
    return await start_evaluator()


@pytest.fixture
async def stub(evaluator):
    async with grpc.aio.insecure_channel(evaluator.addr) as channel:
        yield evaluator_pb2_grpc.EvaluatorStub(channel)
