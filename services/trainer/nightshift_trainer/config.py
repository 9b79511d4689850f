"""The trainer's configuration: one dataclass read from environment variables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from nightshift import config as common
from nightshift.models import DEFAULT_MODEL


def default_store_dir() -> Path:
    return common.data_dir() / "trainer"


def default_adapters_dir() -> Path:
    return common.data_dir() / "adapters"


@dataclass(frozen=True)
class TrainerConfig:
    """Everything the trainer needs; every field has an environment variable and a laptop default."""

    addr: str = field(
        default=common.DEFAULT_ADDRS["trainer"],
        metadata={"env": "NIGHTSHIFT_TRAINER_ADDR", "help": "gRPC listen address (host:port)"},
    )
    nats_url: str = field(
        default=common.DEFAULT_NATS_URL,
        metadata={"env": "NIGHTSHIFT_NATS_URL", "help": "NATS JetStream server of the events"},
    )
    store_dir: Path = field(
        default_factory=default_store_dir,
        metadata={
            "env": "NIGHTSHIFT_TRAINER_DIR",
            "help": "the trainer's own store: episodes, jobs, checkpoints (default <data dir>/trainer)",
        },
    )
    adapters_dir: Path = field(
        default_factory=default_adapters_dir,
        metadata={
            "env": "NIGHTSHIFT_ADAPTERS_DIR",
            "help": "where verified adapters go, <dir>/<id>/adapter.gguf (the agent loads them from there)",
        },
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"env": "NIGHTSHIFT_MODEL", "help": "base model a job trains on unless it names one"},
    )
    threads: int = field(
        default_factory=lambda: os.cpu_count() or 2,
        metadata={"env": "NIGHTSHIFT_TRAINER_THREADS", "help": "torch CPU threads (default: number of CPUs)"},
    )
    verify: bool = field(
        default=True,
        metadata={
            "env": "NIGHTSHIFT_TRAINER_VERIFY",
            "help": "check every exported adapter against transformers+PEFT before registering it (1/0)",
        },
    )

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise common.ConfigError("NIGHTSHIFT_TRAINER_THREADS must be at least 1")

    @property
    def episodes_path(self) -> Path:
        return self.store_dir / "episodes.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.store_dir / "jobs"

    @classmethod
    def from_env(cls) -> TrainerConfig:
        store = common.env_str("NIGHTSHIFT_TRAINER_DIR", "")
        adapters = common.env_str("NIGHTSHIFT_ADAPTERS_DIR", "")
        verify = common.env_str("NIGHTSHIFT_TRAINER_VERIFY", "1")
        if verify not in ("0", "1"):
            raise common.ConfigError(f"NIGHTSHIFT_TRAINER_VERIFY must be 0 or 1, got {verify!r}")
        return cls(
            addr=common.service_addr("trainer"),
            nats_url=common.nats_url(),
            store_dir=Path(store).expanduser() if store else default_store_dir(),
            adapters_dir=Path(adapters).expanduser() if adapters else default_adapters_dir(),
            model=common.env_str("NIGHTSHIFT_MODEL", DEFAULT_MODEL),
            threads=common.env_int("NIGHTSHIFT_TRAINER_THREADS", os.cpu_count() or 2),
            verify=verify == "1",
        )


def env_help() -> str:
    """One line per environment variable, for --help."""
    lines = ["environment variables:"]
    for f in dataclasses.fields(TrainerConfig):
        lines.append(f"  {f.metadata['env']:<30} {f.metadata['help']}")
    lines.append(
        f"  {'NIGHTSHIFT_DATA_DIR':<30} root of the service stores (default ~/.local/share/nightshift)"
    )
    lines.append(f"  {'NIGHTSHIFT_CORPUS_DIR':<30} the koan corpus (default: the checkout's corpus/)")
    lines.append(
        f"  {'NIGHTSHIFT_MODEL_PATH':<30} explicit GGUF file for the model (checked against its sha256)"
    )
    return "\n".join(lines)
