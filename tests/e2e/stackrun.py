"""Running the `nightshift` command against the end-to-end stack."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NIGHTSHIFT = [sys.executable, "-m", "nightshift_cli"]


def run(env, *args, check=False):
    return subprocess.run(
        [*NIGHTSHIFT, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300, check=check
    )


def start_up(env, data_dir: Path, log_path: Path, *extra: str, timeout: float = 120.0) -> subprocess.Popen:
    """`nightshift up --data-dir DATA_DIR [EXTRA...]`, returned once it printed that it is up."""
    with open(log_path, "w") as log:
        up = subprocess.Popen(
            [*NIGHTSHIFT, "up", "--data-dir", str(data_dir), *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout
    while "nightshift is up" not in log_path.read_text():
        assert up.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "stack did not come up: " + log_path.read_text()
        time.sleep(0.3)
    return up
