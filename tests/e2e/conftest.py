"""The stack of `nightshift up` for the end-to-end tests: every service on free ports, one data dir."""

from __future__ import annotations

import os
import signal

import pytest
from nightshift.natsserver import free_port
from stackrun import start_up


@pytest.fixture
def stack(tmp_path):
    env = {
        **os.environ,
        "NIGHTSHIFT_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "NIGHTSHIFT_SANDBOX_ADDR": f"127.0.0.1:{free_port()}",
        "NIGHTSHIFT_EVALUATOR_ADDR": f"127.0.0.1:{free_port()}",
        "NIGHTSHIFT_AGENT_ADDR": f"127.0.0.1:{free_port()}",
        "NIGHTSHIFT_TRAINER_ADDR": f"127.0.0.1:{free_port()}",
    }
    up = start_up(env, tmp_path / "data", tmp_path / "up.log")
    yield env, up, tmp_path
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
