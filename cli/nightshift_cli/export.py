"""`nightshift export --format parquet|duckdb DIR`: a consistent snapshot of the evaluator's tables.

The evaluator takes the snapshot between two projection writes and streams its files; this
command writes them into DIR and prints each table and view with its row count (from the
export's manifest.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import grpc
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc
from rich.console import Console
from rich.table import Table

from nightshift_cli.rpc import CliError, channel, explain

FORMATS = ("parquet", "duckdb")
MANIFEST_FILE = "manifest.json"


def safe_name(name: str) -> str:
    """A file name sent by the evaluator, refused unless it is one plain name inside DIR."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise CliError(f"the evaluator sent a file name that is not a plain name: {name!r}")
    return name


def check_directory(directory: Path, force: bool) -> None:
    """DIR may be missing or empty; a non-empty one only with --force (same-named files are replaced)."""
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise CliError(f"{directory} is not empty; pass --force to write into it anyway")


def write_chunks(chunks, directory: Path) -> dict[str, int]:
    """Write streamed ExportChunks as files in `directory`; name -> bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    open_files: dict[str, BinaryIO] = {}
    try:
        for chunk in chunks:
            name = safe_name(chunk.name)
            f = open_files.get(name)
            if f is None:
                if name in written:
                    raise CliError(f"the evaluator sent {name} twice")
                f = open_files[name] = (directory / name).open("wb")
                written[name] = 0
            f.write(chunk.data)
            written[name] += len(chunk.data)
            if chunk.end_of_file:
                open_files.pop(name).close()
        if open_files:
            raise CliError(f"the export ended before {', '.join(sorted(open_files))} was complete")
    finally:
        for f in open_files.values():
            f.close()
    return written


def cmd_export(args) -> int:
    directory = Path(args.dir).expanduser()
    check_directory(directory, args.force)
    console = Console()
    with channel("evaluator") as ch:
        stub = evaluator_pb2_grpc.EvaluatorStub(ch)
        try:
            chunks = stub.Export(evaluator_pb2.ExportRequest(format=args.format), timeout=args.timeout)
            written = write_chunks(chunks, directory)
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
    total = sum(written.values())
    console.print(f"wrote {len(written)} files ({total:,} bytes) to {directory}", highlight=False)
    manifest_path = directory / MANIFEST_FILE
    if MANIFEST_FILE in written:
        manifest = json.loads(manifest_path.read_text())
        table = Table(title=f"{args.format} export, schema version {manifest['schema_version']}")
        for column in ("relation", "kind", "rows", "file"):
            table.add_column(column, justify="right" if column == "rows" else "left")
        for r in manifest["relations"]:
            table.add_row(r["name"], r["kind"], str(r["rows"]), r["file"])
        console.print(table)
        for p in manifest["positions"]:
            console.print(
                f"{p['consumer']} {p['stream']}: up to stream sequence {p['last_sequence']}", highlight=False
            )
    return 0


def add_parsers(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a consistent snapshot of the evaluator's tables as Parquet files or a DuckDB file",
        description="The evaluator snapshots every table and view between two projection writes and "
        "streams the files; they are written into DIR (created if missing). parquet: one file per table "
        "and view, schema.sql, README.md, manifest.json. duckdb: nightshift.duckdb and manifest.json.",
    )
    export.add_argument("dir", metavar="DIR")
    export.add_argument("--format", choices=FORMATS, default="parquet", help="default: parquet")
    export.add_argument("--force", action="store_true", help="write into DIR even when it is not empty")
    export.add_argument("--timeout", type=float, default=600.0, help="RPC deadline in seconds")
    export.set_defaults(func=cmd_export)
