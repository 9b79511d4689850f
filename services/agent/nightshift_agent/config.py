"""Agent configuration: one dataclass, read from NIGHTSHIFT_AGENT_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nightshift.config import data_dir, env_int, env_str, nats_url, service_addr
from nightshift.models import DEFAULT_MODEL

MAX_ATTEMPTS_LIMIT = 10


@dataclass(frozen=True)
class AgentConfig:
    addr: str = field(default_factory=lambda: service_addr("agent"))
    nats_url: str = field(default_factory=nats_url)
    sandbox_addr: str = field(default_factory=lambda: service_addr("sandbox"))
    model: str = DEFAULT_MODEL
    adapters_dir: Path = field(default_factory=lambda: data_dir() / "adapters")
    n_ctx: int = 4096
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    max_attempts: int = 5
    # A retry that repeats a program known to fail is sampled again, hotter, at most this many times
    # (off by default: see nightshift_agent.loop).
    max_resamples: int = 0
    # Tasks allowed to wait for the model beyond the one generating; more get RESOURCE_EXHAUSTED.
    queue_size: int = 32
    # Model instances kept loaded, keyed by (model, adapter).
    max_loaded: int = 2
    max_source_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> AgentConfig:
        return cls(
            model=env_str("NIGHTSHIFT_MODEL", DEFAULT_MODEL),
            adapters_dir=Path(env_str("NIGHTSHIFT_ADAPTERS_DIR", str(data_dir() / "adapters"))),
            n_ctx=env_int("NIGHTSHIFT_AGENT_N_CTX", 4096),
            n_threads=env_int("NIGHTSHIFT_AGENT_THREADS", os.cpu_count() or 2),
            max_attempts=env_int("NIGHTSHIFT_AGENT_MAX_ATTEMPTS", 5),
            max_resamples=env_int("NIGHTSHIFT_AGENT_MAX_RESAMPLES", 0),
            queue_size=env_int("NIGHTSHIFT_AGENT_QUEUE", 32),
            max_loaded=env_int("NIGHTSHIFT_AGENT_MAX_LOADED", 2),
        )
