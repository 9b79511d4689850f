"""Fixtures with real parts: a nats-server with JetStream on a free port and a temp store dir."""

from __future__ import annotations

import subprocess

import pytest
from nightshift.natsserver import NatsServer
from nightshift_sandbox.config import SandboxConfig


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sysroot() -> str:
    return subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def sandbox_config(sysroot, tmp_path_factory) -> SandboxConfig:
    return SandboxConfig(sysroot=sysroot, work_root=tmp_path_factory.mktemp("sandbox-work"))
