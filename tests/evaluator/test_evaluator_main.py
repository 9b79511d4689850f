"""The `nightshift-evaluator` command: configuration from the environment, serving, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from evaluator_support import plain_rows, query
from nightshift.config import ConfigError
from nightshift.v1 import evaluator_pb2_grpc
from nightshift_evaluator.__main__ import build_parser, main
from nightshift_evaluator.config import EvaluatorConfig

ENV_VARS = [
    "NIGHTSHIFT_EVALUATOR_ADDR",
    "NIGHTSHIFT_NATS_URL",
    "NIGHTSHIFT_DATA_DIR",
    "NIGHTSHIFT_EVALUATOR_DB",
    "NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS",
    "NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS",
    "NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES",
]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIGHTSHIFT_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_defaults_run_on_a_laptop(clean_env, tmp_path):
    config = EvaluatorConfig.from_env()
    assert config.addr == "127.0.0.1:50064"
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.db_path == tmp_path / "data" / "evaluator" / "nightshift.duckdb"
    assert (config.query_max_rows, config.query_timeout_seconds) == (10_000, 30.0)


def test_every_field_comes_from_its_env_var(clean_env, tmp_path):
    clean_env.setenv("NIGHTSHIFT_EVALUATOR_ADDR", "0.0.0.0:7000")
    clean_env.setenv("NIGHTSHIFT_NATS_URL", "nats://broker:4222")
    clean_env.setenv("NIGHTSHIFT_EVALUATOR_DB", str(tmp_path / "x.duckdb"))
    clean_env.setenv("NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS", "5")
    clean_env.setenv("NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS", "2.5")
    clean_env.setenv("NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES", "4096")
    assert EvaluatorConfig.from_env() == EvaluatorConfig(
        addr="0.0.0.0:7000",
        nats_url="nats://broker:4222",
        db_path=tmp_path / "x.duckdb",
        query_max_rows=5,
        query_timeout_seconds=2.5,
        query_max_bytes=4096,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS", "many"),
        ("NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS", "0"),
        ("NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS", "-1"),
        ("NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS", "soon"),
        ("NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES", "10"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        EvaluatorConfig.from_env()
    assert main([]) == 2


def test_help_lists_the_environment_variables(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in ENV_VARS:
        assert name in out


async def test_the_command_serves_until_sigterm(nats_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        NIGHTSHIFT_EVALUATOR_ADDR="127.0.0.1:0",
        NIGHTSHIFT_NATS_URL=nats_server.url,
        NIGHTSHIFT_DATA_DIR=str(tmp_path / "data"),
    )
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("nightshift-evaluator")),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        addr = None
        while addr is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "the evaluator exited before listening"
            found = re.search(r"evaluator listening on (\S+)", line)
            addr = found and found.group(1)
        async with grpc.aio.insecure_channel(addr) as channel:
            response = await query(
                evaluator_pb2_grpc.EvaluatorStub(channel), "SELECT count(*) FROM sandbox_checks"
            )
        assert plain_rows(response) == [(0,)]
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, rest
        assert "Traceback" not in rest
        assert (tmp_path / "data" / "evaluator" / "nightshift.duckdb").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
