"""The evaluator's configuration: one dataclass read from environment variables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from nightshift import config as common
from nightshift.corpus import default_corpus_dir


def default_db_path() -> Path:
    return common.data_dir() / "evaluator" / "nightshift.duckdb"


@dataclass(frozen=True)
class EvaluatorConfig:
    """Everything the evaluator needs to run; every field has an env var and a laptop default."""

    addr: str = field(
        default=common.DEFAULT_ADDRS["evaluator"],
        metadata={"env": "NIGHTSHIFT_EVALUATOR_ADDR", "help": "gRPC listen address (host:port)"},
    )
    nats_url: str = field(
        default=common.DEFAULT_NATS_URL,
        metadata={"env": "NIGHTSHIFT_NATS_URL", "help": "NATS JetStream server the events come from"},
    )
    db_path: Path = field(
        default_factory=default_db_path,
        metadata={
            "env": "NIGHTSHIFT_EVALUATOR_DB",
            "help": "DuckDB file of the projections (default <data dir>/evaluator/nightshift.duckdb)",
        },
    )
    query_max_rows: int = field(
        default=10_000,
        metadata={
            "env": "NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS",
            "help": "most rows one Query returns; a request's max_rows may only lower it",
        },
    )
    query_timeout_seconds: float = field(
        default=30.0,
        metadata={
            "env": "NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS",
            "help": "a Query running longer is interrupted (DEADLINE_EXCEEDED)",
        },
    )
    query_max_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata={
            "env": "NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES",
            "help": "most bytes of rows one Query returns before it is truncated",
        },
    )
    agent_addr: str = field(
        default=common.DEFAULT_ADDRS["agent"],
        metadata={"env": "NIGHTSHIFT_AGENT_ADDR", "help": "the Agent service evaluations submit koans to"},
    )
    trainer_addr: str = field(
        default=common.DEFAULT_ADDRS["trainer"],
        metadata={
            "env": "NIGHTSHIFT_TRAINER_ADDR",
            "help": "the Trainer service the cycle saga asks for jobs",
        },
    )
    corpus_dir: Path = field(
        default_factory=default_corpus_dir,
        metadata={
            "env": "NIGHTSHIFT_CORPUS_DIR",
            "help": "koan corpus of the evaluation sets (imported packs: <data dir>/packs)",
        },
    )
    submit_window: int = field(
        default=2,
        metadata={
            "env": "NIGHTSHIFT_EVALUATOR_SUBMIT_WINDOW",
            "help": "tasks one evaluation keeps running on the agent at once",
        },
    )

    def __post_init__(self) -> None:
        if self.query_max_rows < 1:
            raise common.ConfigError("NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS must be at least 1")
        if self.query_timeout_seconds <= 0:
            raise common.ConfigError("NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS must be positive")
        if self.query_max_bytes < 1024:
            raise common.ConfigError("NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES must be at least 1024")
        if self.submit_window < 1:
            raise common.ConfigError("NIGHTSHIFT_EVALUATOR_SUBMIT_WINDOW must be at least 1")

    @classmethod
    def from_env(cls) -> EvaluatorConfig:
        """Read every field from its environment variable, falling back to the defaults."""
        db = common.env_str("NIGHTSHIFT_EVALUATOR_DB", "")
        return cls(
            addr=common.service_addr("evaluator"),
            nats_url=common.nats_url(),
            db_path=Path(db).expanduser() if db else default_db_path(),
            query_max_rows=common.env_int("NIGHTSHIFT_EVALUATOR_QUERY_MAX_ROWS", 10_000),
            query_timeout_seconds=common.env_float("NIGHTSHIFT_EVALUATOR_QUERY_TIMEOUT_SECONDS", 30.0),
            query_max_bytes=common.env_int("NIGHTSHIFT_EVALUATOR_QUERY_MAX_BYTES", 8 * 1024 * 1024),
            agent_addr=common.service_addr("agent"),
            trainer_addr=common.service_addr("trainer"),
            corpus_dir=default_corpus_dir(),
            submit_window=common.env_int("NIGHTSHIFT_EVALUATOR_SUBMIT_WINDOW", 2),
        )


def env_help() -> str:
    """One line per environment variable, for --help."""
    lines = ["environment variables:"]
    for f in dataclasses.fields(EvaluatorConfig):
        lines.append(f"  {f.metadata['env']:<44} {f.metadata['help']}")
    lines.append(
        f"  {'NIGHTSHIFT_DATA_DIR':<44} root of the service stores (default ~/.local/share/nightshift)"
    )
    lines.append(f"  {'NIGHTSHIFT_LOG_LEVEL':<44} DEBUG, INFO (default), WARNING, ERROR")
    return "\n".join(lines)
