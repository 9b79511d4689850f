"""Running the `nightshift` command against the end-to-end stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NIGHTSHIFT = [sys.executable, "-m", "nightshift_cli"]


def run(env, *args, check=False):
    return subprocess.run(
        [*NIGHTSHIFT, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300, check=check
    )
