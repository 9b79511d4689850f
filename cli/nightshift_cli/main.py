"""The `nightshift` command: a thin gRPC client of the services, plus `up` for the embedded stack."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from nightshift.config import data_dir, nats_url, service_addr
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc, sandbox_pb2, sandbox_pb2_grpc
from rich.console import Console
from rich.table import Table

from nightshift_cli import agent, archive, cycle, evaluation, export, koans, models, trainer
from nightshift_cli.rpc import CliError, channel, explain, health, read_rust_file
from nightshift_cli.stack import SERVICES, installed_services, run_stack

MODES = {"build": sandbox_pb2.MODE_BUILD, "test": sandbox_pb2.MODE_TEST, "clippy": sandbox_pb2.MODE_CLIPPY}
console = Console()


def cmd_up(args: argparse.Namespace) -> int:
    return run_stack(
        Path(args.data_dir).expanduser() if args.data_dir else data_dir(),
        console,
        restore=[Path(p).expanduser() for p in args.restore or []],
    )


def cmd_status(args: argparse.Namespace) -> int:
    installed = set(installed_services())
    rows = []
    for name in SERVICES:
        addr = service_addr(name)
        state = health(addr) if name in installed else "NOT_INSTALLED"
        rows.append({"service": name, "addr": addr, "health": state})
    if args.json:
        print(json.dumps({"nats_url": nats_url(), "services": rows}, indent=2))
    else:
        table = Table(title=f"nightshift services (nats: {nats_url()})")
        for column in ("service", "addr", "health"):
            table.add_column(column)
        for row in rows:
            color = "green" if row["health"] == "SERVING" else "red"
            table.add_row(row["service"], row["addr"], f"[{color}]{row['health']}[/]")
        console.print(table)
    serving = [r for r in rows if r["service"] in installed]
    return 0 if serving and all(r["health"] == "SERVING" for r in serving) else 1


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    text, program, tests = read_rust_file(path)
    request = sandbox_pb2.CheckRequest(
        source=program if tests else text,
        tests=tests,
        edition=args.edition,
        mode=MODES[args.mode],
        backend=args.backend or "",
    )
    with channel("sandbox") as ch:
        try:
            verdict = sandbox_pb2_grpc.SandboxStub(ch).Check(request, timeout=args.timeout).verdict
        except grpc.RpcError as exc:
            raise explain(exc, "sandbox") from None
    if args.json:
        print(json_format.MessageToJson(verdict, always_print_fields_with_no_presence=True))
    else:
        _print_verdict(verdict, path)
    return 0 if verdict.status == sandbox_pb2.OK else 1


def _print_verdict(verdict: sandbox_pb2.Verdict, path: Path) -> None:
    status = sandbox_pb2.CheckStatus.Name(verdict.status)
    color = "green" if verdict.status == sandbox_pb2.OK else "red"
    console.print(
        f"[bold {color}]{status}[/] {path} ({verdict.backend}, compile {verdict.compile_seconds:.2f}s, "
        f"run {verdict.run_seconds:.2f}s)"
    )
    if verdict.detail:
        console.print(verdict.detail)
    for diagnostic in verdict.diagnostics:
        console.print(diagnostic.rendered, markup=False, highlight=False)
    if verdict.tests:
        passed = sum(t.passed for t in verdict.tests)
        console.print(f"tests: {passed}/{len(verdict.tests)} passed")
        for test in verdict.tests:
            mark = "[green]ok[/]" if test.passed else "[red]FAILED[/]"
            console.print(f"  {test.name} {mark}")
    if verdict.tests_replaced:
        console.print("the program's own #[cfg(test)] items were replaced by the task's tests")


def _cell(value: evaluator_pb2.QueryValue):
    kind = value.WhichOneof("kind")
    return None if kind in (None, "is_null") else getattr(value, kind)


def cmd_query(args: argparse.Namespace) -> int:
    with channel("evaluator") as ch:
        try:
            reply = evaluator_pb2_grpc.EvaluatorStub(ch).Query(
                evaluator_pb2.QueryRequest(sql=args.sql, max_rows=args.max_rows), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
    rows = [[_cell(v) for v in row.values] for row in reply.rows]
    if args.format == "json":
        print(json.dumps([dict(zip(reply.columns, row, strict=True)) for row in rows], indent=2, default=str))
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(reply.columns)
        writer.writerows(rows)
        sys.stdout.write(out.getvalue())
    else:
        table = Table()
        for column, kind in zip(reply.columns, reply.column_types, strict=True):
            table.add_column(f"{column}\n[dim]{kind}[/]")
        for row in rows:
            table.add_row(*["NULL" if v is None else str(v) for v in row])
        console.print(table)
    if reply.truncated:
        print(f"(truncated to {len(rows)} rows)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightshift",
        description="nightshift: a coding agent that improves while it sleeps, without forgetting.",
        epilog="Addresses come from NIGHTSHIFT_<SERVICE>_ADDR and NIGHTSHIFT_NATS_URL; "
        "data lives in NIGHTSHIFT_DATA_DIR (default ~/.local/share/nightshift).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start nats-server and every service; Ctrl-C stops them")
    up.add_argument("--data-dir", help="where the stack keeps its data (default: NIGHTSHIFT_DATA_DIR)")
    up.add_argument(
        "--restore",
        action="append",
        metavar="FILE",
        help="publish this event archive (`nightshift archive save`) into JetStream and write its adapter "
        "files and unfinished training jobs (examples, latest checkpoint) into the data dir before the "
        "services start, so the jobs resume from their checkpoints; what is already there is skipped "
        "(repeatable)",
    )
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="health of every service")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    check = sub.add_parser(
        "check",
        help="compile and test a Rust file in the sandbox",
        description="Send FILE to the sandbox. Its own #[cfg(test)] items are sent as its tests. "
        "Exit status 0 when the verdict is OK, 1 otherwise.",
    )
    check.add_argument("file", metavar="FILE.rs")
    check.add_argument("--mode", choices=sorted(MODES), default="test", help="default: test")
    check.add_argument("--backend", choices=["bwrap", "docker"], help="default: the service's")
    check.add_argument("--edition", choices=["2021", "2024"], default="2021")
    check.add_argument("--json", action="store_true", help="print the verdict as protobuf JSON")
    check.add_argument("--timeout", type=float, default=300.0, help="RPC deadline in seconds")
    check.set_defaults(func=cmd_check)

    query = sub.add_parser(
        "query", help="run one read-only SQL statement on the evaluator's DuckDB projections"
    )
    query.add_argument("sql")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument("--max-rows", type=int, default=0, help="row cap (default: the service's)")
    query.add_argument("--timeout", type=float, default=60.0, help="RPC deadline in seconds")
    query.set_defaults(func=cmd_query)

    koans.add_parser(sub)
    models.add_parser(sub)
    agent.add_parsers(sub)
    trainer.add_parsers(sub)
    evaluation.add_parsers(sub)
    cycle.add_parsers(sub)
    export.add_parsers(sub)
    archive.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
