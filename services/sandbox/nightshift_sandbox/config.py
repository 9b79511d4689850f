"""Sandbox configuration: one dataclass, read from NIGHTSHIFT_SANDBOX_* environment variables."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nightshift.config import ConfigError, env_float, env_int, env_str, nats_url, service_addr

from nightshift_sandbox.backends import BACKEND_NAMES
from nightshift_sandbox.backends.base import ProcessLimits

MIB = 1024 * 1024


def _default_sysroot() -> str:
    try:
        out = subprocess.run(
            ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot find the Rust toolchain (rustc --print sysroot): {exc}") from exc
    return out.stdout.strip()


@dataclass(frozen=True)
class SandboxConfig:
    addr: str = field(default_factory=lambda: service_addr("sandbox"))
    nats_url: str = field(default_factory=nats_url)
    backend: str = "bwrap"
    workers: int = 2
    queue_size: int = 16
    work_root: Path = Path("/tmp/nightshift-sandbox")
    sysroot: str = ""
    max_source_bytes: int = 256 * 1024
    # Compiling is the service's own business; the request's limits apply to the program it runs.
    compile_limits: ProcessLimits = ProcessLimits(
        cpu_seconds=60, wall_seconds=180, memory_bytes=3 * 1024 * MIB, max_processes=128, output_bytes=4 * MIB
    )
    run_limits: ProcessLimits = ProcessLimits(
        cpu_seconds=10, wall_seconds=30, memory_bytes=512 * MIB, max_processes=64, output_bytes=1 * MIB
    )
    max_run_limits: ProcessLimits = ProcessLimits(
        cpu_seconds=120, wall_seconds=300, memory_bytes=4096 * MIB, max_processes=512, output_bytes=64 * MIB
    )

    @classmethod
    def from_env(cls) -> SandboxConfig:
        backend = env_str("NIGHTSHIFT_SANDBOX_BACKEND", "bwrap")
        if backend not in BACKEND_NAMES:
            raise ConfigError(f"NIGHTSHIFT_SANDBOX_BACKEND must be one of {BACKEND_NAMES}, got {backend!r}")
        defaults = cls.run_limits
        return cls(
            backend=backend,
            workers=max(1, env_int("NIGHTSHIFT_SANDBOX_WORKERS", os.cpu_count() or 2)),
            queue_size=max(0, env_int("NIGHTSHIFT_SANDBOX_QUEUE", 16)),
            work_root=Path(env_str("NIGHTSHIFT_SANDBOX_WORK_DIR", "/tmp/nightshift-sandbox")),
            sysroot=env_str("NIGHTSHIFT_RUST_SYSROOT", "") or _default_sysroot(),
            run_limits=ProcessLimits(
                cpu_seconds=env_float("NIGHTSHIFT_SANDBOX_CPU_SECONDS", defaults.cpu_seconds),
                wall_seconds=env_float("NIGHTSHIFT_SANDBOX_WALL_SECONDS", defaults.wall_seconds),
                memory_bytes=env_int("NIGHTSHIFT_SANDBOX_MEMORY_MB", defaults.memory_bytes // MIB) * MIB,
                max_processes=env_int("NIGHTSHIFT_SANDBOX_MAX_PROCESSES", defaults.max_processes),
                output_bytes=env_int("NIGHTSHIFT_SANDBOX_OUTPUT_KB", defaults.output_bytes // 1024) * 1024,
            ),
        )
