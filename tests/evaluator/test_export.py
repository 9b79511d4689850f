"""Export: a consistent snapshot while events are being projected, read back with a fresh DuckDB."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
from pathlib import Path

import duckdb
import grpc
import pytest
from evaluator_support import plain_rows, query
from event_builders import (
    attempt,
    event_mix,
    koan_evaluated,
    publish,
    stream_ends,
    verdict,
    wait_until_projected,
)
from nightshift.v1 import evaluator_pb2, sandbox_pb2
from nightshift_cli import export as export_cli
from nightshift_cli.rpc import CliError
from nightshift_evaluator.export import CHUNK_BYTES, confined_instance, file_chunks

S = sandbox_pb2


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The temporary directory exports are written to, so a test can see it emptied again."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def busy_events(n: int) -> list:
    """Attempts with incompressible prompts (several MiB in all) and koan evaluations, on two streams."""
    items = []
    for i in range(n):
        failing = verdict(S.COMPILE_ERROR, "E0382") if i % 3 else verdict(S.OK)
        items.append(
            attempt(
                f"task-{i}", f"k{i % 7}", 1, failing, prompt=base64.b64encode(os.urandom(40_000)).decode()
            )
        )
        items.append(koan_evaluated("run-busy", f"k{i}", f"family-{i % 4}", 1, i % 2 == 0, i % 4 == 0, 1))
    return items


async def export_files(stub, fmt: str) -> tuple[dict[str, bytes], list[evaluator_pb2.ExportChunk]]:
    chunks = [chunk async for chunk in stub.Export(evaluator_pb2.ExportRequest(format=fmt), timeout=120)]
    files: dict[str, bytes] = {}
    for chunk in chunks:
        files[chunk.name] = files.get(chunk.name, b"") + chunk.data
    return files, chunks


def live_count_at(table: str, positions: dict[str, int]) -> str:
    """SQL counting the rows of `table` whose event was projected at or before `positions`."""
    case = " ".join(f"WHEN '{s}' THEN {n}" for s, n in positions.items())
    return (
        f"SELECT count(*) FROM {table} t JOIN projected_events p USING (event_id) "
        f"WHERE p.stream_sequence <= CASE p.stream {case} ELSE 0 END"
    )


@pytest.mark.parametrize("fmt", ["parquet", "duckdb"])
async def test_an_export_taken_while_projecting_is_a_consistent_snapshot(
    bus, stub, fmt, private_tmp, tmp_path, monkeypatch
):
    await publish(bus, event_mix())
    items = busy_events(150)
    half = len(items) // 2
    await publish(bus, items[:half])
    await wait_until_projected(stub, {"EPISODES": 40})
    publisher = asyncio.create_task(publish(bus, items[half:]))
    files, chunks = await export_files(stub, fmt)
    await publisher
    await wait_until_projected(stub, await stream_ends(bus))

    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)
    assert [c.name for c in chunks if c.end_of_file] == list(files)
    assert max(sum(1 for c in chunks if c.name == name) for name in files) > 1  # a file spans chunks
    assert list(private_tmp.iterdir()) == []  # the export's temporary directory is gone

    out = tmp_path / "export"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data)
    manifest = json.loads(files["manifest.json"])
    positions = {
        p["stream"]: p["last_sequence"] for p in manifest["positions"] if p["consumer"] == "projection"
    }
    assert positions["EPISODES"] >= 40
    # The snapshot lands mid-stream: the second half was still being published and projected.
    assert positions["EPISODES"] < (await stream_ends(bus))["EPISODES"]
    relations = {r["name"]: r for r in manifest["relations"]}
    live_views = plain_rows(await query(stub, "SELECT view_name FROM duckdb_views() WHERE NOT internal"))
    assert {name for (name,) in live_views} == {n for n, r in relations.items() if r["kind"] == "view"}

    conn = duckdb.connect()
    try:
        if fmt == "parquet":
            assert set(files) == {f"{n}.parquet" for n in relations} | {
                "schema.sql",
                "README.md",
                "manifest.json",
            }

            def exported(name):
                return conn.execute(
                    f"SELECT count(*) FROM read_parquet('{out / relations[name]['file']}')"
                ).fetchone()[0]
        else:
            assert set(files) == {"nightshift.duckdb", "manifest.json"}
            conn.execute(f"ATTACH '{out / 'nightshift.duckdb'}' AS snap (READ_ONLY)")

            def exported(name):
                return conn.execute(f"SELECT count(*) FROM snap.{name}").fetchone()[0]

        for name, relation in relations.items():
            assert exported(name) == relation["rows"], name
        # Every event table holds exactly the rows of the events projected up to the snapshot's positions.
        event_tables = [
            n
            for (n,) in plain_rows(
                await query(
                    stub,
                    "SELECT table_name FROM duckdb_columns() WHERE column_name = 'event_id' "
                    "AND table_name NOT IN (SELECT view_name FROM duckdb_views()) GROUP BY 1",
                )
            )
        ]
        assert {"attempts", "koan_evaluations", "sandbox_check_diagnostics", "projected_events"} <= set(
            event_tables
        )
        for table in event_tables:
            live = plain_rows(await query(stub, live_count_at(table, positions)))[0][0]
            assert relations[table]["rows"] == live, table
        final = plain_rows(await query(stub, "SELECT count(*) FROM attempts"))[0][0]
        assert final == 7 + 150
        assert relations["attempts"]["rows"] <= final
    finally:
        conn.close()


async def test_the_parquet_schema_script_recreates_tables_and_views(bus, stub, tmp_path, monkeypatch):
    await publish(bus, event_mix())
    await wait_until_projected(stub, await stream_ends(bus))
    files, _ = await export_files(stub, "parquet")
    out = tmp_path / "export"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data)
    manifest = json.loads(files["manifest.json"])
    monkeypatch.chdir(out)
    conn = duckdb.connect()
    try:
        conn.execute((out / "schema.sql").read_text())
        for r in manifest["relations"]:
            assert conn.execute(f"SELECT count(*) FROM {r['name']}").fetchone()[0] == r["rows"], r["name"]
        assert conn.execute("SELECT * FROM run_pass_rates").fetchall() == [("r2", 3, 2, 2 / 3, 1, 1 / 3)]
        materialised = conn.execute(
            "SELECT * FROM read_parquet('adapter_states.parquet') ORDER BY 1"
        ).fetchall()
        assert materialised == conn.execute("SELECT * FROM adapter_states ORDER BY 1").fetchall()
    finally:
        conn.close()
    assert "| attempts | table | 7 |" in files["README.md"].decode()


@pytest.mark.parametrize("fmt", ["", "csv", "PARQUET"])
async def test_an_unknown_format_is_invalid_argument_naming_format(stub, fmt):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export_files(stub, fmt)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("format: must be one of parquet, duckdb")


async def test_the_live_instance_stays_locked_after_an_export(stub, evaluator):
    await export_files(stub, "duckdb")
    cursor = evaluator.store.read_cursor()
    try:
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            cursor.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.PermissionException):
            cursor.execute("COPY (SELECT 1) TO '/tmp/nightshift-export-escape.csv'")
    finally:
        cursor.close()


def test_the_private_instance_cannot_reach_outside_its_directory(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    conn = confined_instance(inside)
    try:
        conn.execute(f"COPY (SELECT 1 AS x) TO '{inside / 'ok.parquet'}' (FORMAT parquet)")
        with pytest.raises(duckdb.PermissionException):
            conn.execute(f"COPY (SELECT 1 AS x) TO '{tmp_path / 'outside.parquet'}' (FORMAT parquet)")
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            conn.execute("SET enable_external_access = true")
    finally:
        conn.close()
    assert [p.name for p in tmp_path.iterdir()] == ["inside"]


@pytest.mark.parametrize(("size", "chunks"), [(0, [0]), (5, [4, 1]), (8, [4, 4]), (9, [4, 4, 1])])
async def test_file_chunks(tmp_path, size, chunks):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * size)
    got = [c async for c in file_chunks(path, chunk_bytes=4)]
    assert [len(c.data) for c in got] == chunks
    assert [c.end_of_file for c in got] == [False] * (len(chunks) - 1) + [True]
    assert {c.name for c in got} == {"f.bin"}


# --- nightshift export ------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nightshift")
    export_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


async def test_nightshift_export_writes_the_files_and_prints_the_row_counts(
    bus, stub, evaluator, tmp_path, monkeypatch, capsys
):
    await publish(bus, event_mix())
    await wait_until_projected(stub, await stream_ends(bus))
    monkeypatch.setenv("NIGHTSHIFT_EVALUATOR_ADDR", evaluator.addr)
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "snap"

    assert await asyncio.to_thread(run_cli, ["export", "--format", "duckdb", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "nightshift.duckdb"]
    assert f"to {out}" in printed
    lines = {line.split("│")[1].strip(): line for line in printed.splitlines() if line.count("│") >= 4}
    assert lines["attempts"].split("│")[3].strip() == "7"
    assert lines["run_pass_rates"].split("│")[2].strip() == "view"
    conn = duckdb.connect(str(out / "nightshift.duckdb"), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM koan_evaluations").fetchone() == (9,)
    finally:
        conn.close()

    with pytest.raises(CliError, match="not empty; pass --force"):
        await asyncio.to_thread(run_cli, ["export", "--format", "parquet", str(out)])
    assert await asyncio.to_thread(run_cli, ["export", "--format", "parquet", "--force", str(out)]) == 0
    assert (out / "attempts.parquet").exists() and (out / "schema.sql").exists()


def test_the_cli_refuses_file_names_that_leave_the_directory(tmp_path):
    for name in ["../escape", "/etc/passwd", "", "..", "a/b"]:
        with pytest.raises(CliError, match="not a plain name"):
            export_cli.write_chunks(
                [evaluator_pb2.ExportChunk(name=name, data=b"x", end_of_file=True)], tmp_path
            )
    with pytest.raises(CliError, match="ended before x.bin was complete"):
        export_cli.write_chunks([evaluator_pb2.ExportChunk(name="x.bin", data=b"x")], tmp_path)
