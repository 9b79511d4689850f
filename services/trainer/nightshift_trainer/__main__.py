"""`nightshift-trainer`: run the trainer service until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from nightshift.config import ConfigError
from nightshift.grpcserver import run_service
from nightshift.log import configure_logging

from nightshift_trainer.config import TrainerConfig, env_help
from nightshift_trainer.server import serve


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="nightshift-trainer",
        description=(
            "Builds replay mixes from episode events, trains LoRA / QLoRA / DPO adapters, exports and "
            "verifies them as GGUF, and keeps the adapter registry (gRPC nightshift.v1.Trainer)."
        ),
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    configure_logging("trainer")
    try:
        config = TrainerConfig.from_env()
    except ConfigError as exc:
        print(f"nightshift-trainer: {exc}", file=sys.stderr)
        return 2
    return run_service("trainer", lambda: serve(config))


if __name__ == "__main__":
    sys.exit(main())
