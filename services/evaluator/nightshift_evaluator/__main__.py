"""`nightshift-evaluator`: run the evaluator service until SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nightshift.config import ConfigError
from nightshift.grpcserver import run_service
from nightshift.log import configure_logging

from nightshift_evaluator.config import EvaluatorConfig, env_help
from nightshift_evaluator.server import serve

# Field annotations are strings (postponed evaluation); the parsers of the ones the config uses.
_PARSERS = {"str": str, "Path": Path, "int": int, "float": float}


def build_parser() -> argparse.ArgumentParser:
    """One optional flag per config field; a flag given overrides the field's environment variable."""
    parser = argparse.ArgumentParser(
        prog="nightshift-evaluator",
        description=(
            "Projects nightshift events into DuckDB and answers read-only SQL (Evaluator.Query). "
            "A flag overrides its environment variable."
        ),
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in dataclasses.fields(EvaluatorConfig):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_PARSERS[f.type],
            default=None,
            help=" ".join(f.metadata["help"].split()),
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("evaluator")
    overrides = {name: value for name, value in vars(args).items() if value is not None}
    try:
        config = dataclasses.replace(EvaluatorConfig.from_env(), **overrides)
    except ConfigError as exc:
        print(f"nightshift-evaluator: {exc}", file=sys.stderr)
        return 2
    return run_service("evaluator", lambda: serve(config))


if __name__ == "__main__":
    sys.exit(main())
