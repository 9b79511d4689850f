"""What every isolation backend provides: run one command inside a sandbox session."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Inside every sandbox: the work dir, the host toolchain (read-only) and a clean PATH.
SANDBOX_WORKDIR = "/sandbox"
SANDBOX_RUST = "/opt/rust"
SANDBOX_PATH = f"{SANDBOX_RUST}/bin:/usr/bin:/bin"
# Untrusted code runs as this uid + the worker slot, so a process-count limit binds per check.
SANDBOX_BASE_UID = 61000


@dataclass(frozen=True)
class ProcessLimits:
    cpu_seconds: float
    wall_seconds: float
    memory_bytes: int
    max_processes: int
    output_bytes: int  # stdout + stderr together


@dataclass
class ProcessResult:
    exit_code: int | None  # None when the process was killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    wall_seconds: float
    timed_out: bool = False  # wall or CPU limit reached
    output_truncated: bool = False  # output limit reached, process killed
    memory_exceeded: bool = False  # killed by the memory limit (cgroup OOM)


class SandboxSession(Protocol):
    def run(self, argv: list[str], limits: ProcessLimits, env: dict[str, str] | None = None) -> ProcessResult:
        """Run argv in the sandbox (cwd = SANDBOX_WORKDIR) as the unprivileged slot user."""


class Backend(Protocol):
    name: str

    def session(self, workdir: Path, slot: int) -> contextlib.AbstractContextManager[SandboxSession]:
        """Open a sandbox over `workdir` (mounted read-write at SANDBOX_WORKDIR) for one check."""

    def available(self) -> str | None:
        """None when the backend can run here, else a one-line reason."""
