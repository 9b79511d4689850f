"""Sandbox fixtures: every backend that can run here, and a helper to run one check through it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nightshift.v1 import sandbox_pb2
from nightshift_sandbox.backends import make_backend
from nightshift_sandbox.checker import CheckInput, run_check

MODES = {"build": sandbox_pb2.MODE_BUILD, "test": sandbox_pb2.MODE_TEST, "clippy": sandbox_pb2.MODE_CLIPPY}


@pytest.fixture(params=["bwrap", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request, sysroot):
    backend = make_backend(request.param, sysroot)
    reason = backend.available()
    if reason:
        pytest.skip(f"{request.param} backend unavailable: {reason}")
    return backend


@pytest.fixture
def check(backend, sandbox_config):
    """check(source, tests="", mode="test", **limits) -> Verdict, through the chosen backend."""

    def _check(source: str, tests: str = "", mode: str = "test", edition: str = "2021", **limits):
        run_limits = replace(sandbox_config.run_limits, **limits)
        request = CheckInput(
            source=source, tests=tests, edition=edition, mode=MODES[mode], run_limits=run_limits
        )
        return run_check(backend, sandbox_config.work_root, 0, request, sandbox_config.compile_limits)

    return _check
