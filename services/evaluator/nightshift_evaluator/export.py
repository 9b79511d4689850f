"""Exports a consistent snapshot of the projections as Parquet files or one DuckDB file.

The live instance can reach no file but its own (store.DUCKDB_CONFIG), so it never writes an
export. The store hands over a snapshot (every table as Arrow, read on its writer thread), and
a private DuckDB instance, confined to a fresh temporary directory, rebuilds the database there
and writes the files; they are streamed in chunks and the directory is deleted afterwards.

Files of an export:
- parquet: `<relation>.parquet` for every table and view (views materialised), `schema.sql`
  (recreates the database from those files: `.read schema.sql` inside the directory),
  `README.md` and `manifest.json`;
- duckdb: `nightshift.duckdb` (tables with their constraints, views as views) and `manifest.json`.

`manifest.json` records the schema version, the time of the snapshot, every consumer's stream
position at that moment and each relation's row count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
from nightshift.v1 import evaluator_pb2

from nightshift_evaluator.store import ProjectionStore, Relation, Snapshot, quote_identifier

FORMATS = ("parquet", "duckdb")
CHUNK_BYTES = 1024 * 1024
DUCKDB_FILE = "nightshift.duckdb"
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "schema.sql"
README_FILE = "README.md"


class ExportFormatError(ValueError):
    """The requested export format is not one of FORMATS."""


class ExportError(RuntimeError):
    """The snapshot could not be written (a view could not be recreated)."""


@dataclasses.dataclass(frozen=True)
class ExportedRelation:
    """One table or view of an export: its row count and the file that holds it."""

    name: str
    kind: str
    rows: int
    file: str


def check_format(fmt: str) -> str:
    """`fmt` when it names a format, else ExportFormatError listing the formats."""
    if fmt not in FORMATS:
        raise ExportFormatError(f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def confined_instance(directory: Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A private DuckDB instance that can reach no file outside `directory` and load nothing."""
    conn = duckdb.connect(database, config={"autoinstall_known_extensions": False})
    try:
        conn.execute("SET allowed_directories = ?", [[str(directory)]])
        conn.execute("SET autoload_known_extensions = false")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
    except BaseException:
        conn.close()
        raise
    return conn


def rebuild(conn: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> list[Relation]:
    """Create every table with its rows and every view in `conn`; the relations in creation order."""
    for table in snapshot.tables:
        conn.execute(table.sql)
        conn.register("snapshot_rows", table.rows)
        try:
            conn.execute(f"INSERT INTO {quote_identifier(table.name)} SELECT * FROM snapshot_rows")
        finally:
            conn.unregister("snapshot_rows")
    created = list(snapshot.tables)
    pending = list(snapshot.views)
    # A view can name views created after it; retry until every one resolves.
    while pending:
        left = []
        for view in pending:
            try:
                conn.execute(view.sql)
                created.append(view)
            except duckdb.CatalogException:
                left.append(view)
        if len(left) == len(pending):
            names = ", ".join(v.name for v in left)
            raise ExportError(f"views {names} cannot be recreated from the snapshot")
        pending = left
    return created


def count_rows(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote_identifier(name)}").fetchone()[0])


def manifest(snapshot: Snapshot, fmt: str, relations: list[ExportedRelation]) -> dict:
    return {
        "format": fmt,
        "schema_version": snapshot.schema_version,
        "taken_at": snapshot.taken_at.isoformat(sep=" "),
        "positions": [{"consumer": c, "stream": s, "last_sequence": n} for c, s, n in snapshot.positions],
        "relations": [dataclasses.asdict(r) for r in relations],
    }


def schema_script(created: list[Relation]) -> str:
    """SQL that recreates the database from the Parquet files (run inside the export directory)."""
    lines = [
        "-- Recreates the nightshift evaluator database from this export's Parquet files.",
        "-- Run inside this directory, e.g. `duckdb nightshift.duckdb -c '.read schema.sql'`.",
        "",
    ]
    for relation in created:
        lines.append(relation.sql.rstrip().rstrip(";") + ";")
        if relation.kind == "table":
            name = quote_identifier(relation.name)
            lines.append(f"INSERT INTO {name} SELECT * FROM read_parquet('{relation.name}.parquet');")
        lines.append("")
    return "\n".join(lines)


def readme(snapshot: Snapshot, relations: list[ExportedRelation]) -> str:
    lines = [
        "# nightshift evaluator export",
        "",
        f"Snapshot of schema version {snapshot.schema_version}, "
        f"taken at {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC.",
        "One Parquet file per table and per view (views materialised); `schema.sql` recreates",
        "the database with its views; `manifest.json` has the stream positions and row counts.",
        "docs/evaluator-schema.md in the nightshift repository describes every column.",
        "",
        "| relation | kind | rows |",
        "|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.kind} | {r.rows} |" for r in relations]
    return "\n".join(lines) + "\n"


def write_export(snapshot: Snapshot, fmt: str, directory: Path) -> list[Path]:
    """Write the snapshot into `directory` (empty, private); the files written, in streaming order."""
    check_format(fmt)
    if fmt == "duckdb":
        return _write_duckdb(snapshot, directory)
    return _write_parquet(snapshot, directory)


def _write_duckdb(snapshot: Snapshot, directory: Path) -> list[Path]:
    path = directory / DUCKDB_FILE
    conn = confined_instance(directory, str(path))
    try:
        created = rebuild(conn, snapshot)
        relations = [ExportedRelation(r.name, r.kind, count_rows(conn, r.name), DUCKDB_FILE) for r in created]
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest(snapshot, "duckdb", relations), indent=2))
    return [path, directory / MANIFEST_FILE]


def _write_parquet(snapshot: Snapshot, directory: Path) -> list[Path]:
    conn = confined_instance(directory)
    files = []
    try:
        created = rebuild(conn, snapshot)
        relations = []
        for relation in created:
            path = directory / f"{relation.name}.parquet"
            conn.execute(
                f"COPY (SELECT * FROM {quote_identifier(relation.name)}) TO ? (FORMAT parquet)", [str(path)]
            )
            relations.append(
                ExportedRelation(relation.name, relation.kind, count_rows(conn, relation.name), path.name)
            )
            files.append(path)
    finally:
        conn.close()
    (directory / SCHEMA_FILE).write_text(schema_script(created))
    (directory / README_FILE).write_text(readme(snapshot, relations))
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest(snapshot, "parquet", relations), indent=2))
    return [*files, directory / SCHEMA_FILE, directory / README_FILE, directory / MANIFEST_FILE]


async def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[evaluator_pb2.ExportChunk]:
    """A file as ExportChunks of at most `chunk_bytes`; the last one has end_of_file set."""
    with path.open("rb") as f:
        data = await asyncio.to_thread(f.read, chunk_bytes)
        while True:
            following = await asyncio.to_thread(f.read, chunk_bytes) if data else b""
            yield evaluator_pb2.ExportChunk(name=path.name, data=data, end_of_file=not following)
            if not following:
                return
            data = following


async def export_chunks(
    store: ProjectionStore, fmt: str, chunk_bytes: int = CHUNK_BYTES
) -> AsyncIterator[evaluator_pb2.ExportChunk]:
    """Snapshot the store, write the export into a temporary directory and stream its files."""
    check_format(fmt)
    snapshot = await store.snapshot()
    directory = Path(tempfile.mkdtemp(prefix="nightshift-export-"))
    try:
        files = await asyncio.to_thread(write_export, snapshot, fmt, directory)
        for path in files:
            async for chunk in file_chunks(path, chunk_bytes):
                yield chunk
    finally:
        shutil.rmtree(directory, ignore_errors=True)
