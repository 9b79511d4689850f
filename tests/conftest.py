"""Fixtures with real parts: a nats-server with JetStream on a free port and a temp store dir."""

from __future__ import annotations

import pytest

from nightshift.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path):
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    yield server
    server.stop()
