"""The stack of `nightshift up` for the end-to-end tests: every service on free ports, one data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from nightshift.natsserver import free_port
from stackrun import NIGHTSHIFT, ROOT


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
    with open(tmp_path / "up.log", "w") as log:
        up = subprocess.Popen(
            [*NIGHTSHIFT, "up", "--data-dir", str(tmp_path / "data")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 120
    while "nightshift is up" not in (tmp_path / "up.log").read_text():
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        assert time.monotonic() < deadline, "stack did not come up: " + (tmp_path / "up.log").read_text()
        time.sleep(0.3)
    yield env, up, tmp_path
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
