"""Event archives against real nats-servers: save from one store, load into another, idempotently."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nightshift import archive, events
from nightshift.bus import EventBus
from nightshift.natsserver import NatsServer
from nightshift.v1 import events_pb2, sandbox_pb2, trainer_pb2

HEADER = b'{"format": "nightshift-events/1"}\n'


def check_event(n: int) -> events_pb2.CheckCompleted:
    return events_pb2.CheckCompleted(
        check_id=f"check-{n}", verdict=sandbox_pb2.Verdict(status=sandbox_pb2.OK), source_bytes=n
    )


async def stored(bus: EventBus) -> dict[str, list[bytes]]:
    return {s: [d.envelope.SerializeToString() for d in await bus.read_all(s)] for s in events.STREAMS}


@pytest.fixture
async def source(nats_server):
    bus = await EventBus.connect(nats_server.url, "source")
    await bus.ensure_streams()
    for n in range(3):
        await bus.publish(check_event(n), correlation_id="c")
        await bus.publish(events_pb2.TaskSubmitted(task_id=f"task-{n}"))
    await bus.publish(events_pb2.EpisodeCompleted(task_id="task-0", passed=True))
    yield bus
    await bus.close()


@pytest.fixture
async def target(tmp_path):
    server = NatsServer(tmp_path / "nats-target", log_file=tmp_path / "nats-target.log").start()
    bus = await EventBus.connect(server.url, "target")
    yield bus
    await bus.close()
    server.stop()


async def test_a_saved_archive_restores_every_event_in_order_and_only_once(source, target, tmp_path):
    path = tmp_path / "events.jsonl.gz"
    counts, carried = await archive.save(source, path)
    assert counts == {"SANDBOX": 3, "EPISODES": 4} and carried == archive.Carried()

    header, records, files = archive.read(path)
    assert header["format"] == archive.FORMAT and header["counts"] == counts and files == []
    # Interleaved as published: check, task, check, task, ...
    assert [r.envelope.type.rsplit(".", 1)[-1] for r in records[:4]] == [
        "CheckCompleted",
        "TaskSubmitted",
        "CheckCompleted",
        "TaskSubmitted",
    ]

    first = await archive.load(target, records)
    assert first.published == counts and first.total_skipped == 0
    assert await stored(target) == await stored(source)

    again = await archive.load(target, records)
    assert again.total_published == 0 and again.skipped == counts
    assert await stored(target) == await stored(source)


async def test_a_store_holding_part_of_an_archive_gets_only_the_rest(source, target, tmp_path):
    path = tmp_path / "events.jsonl.gz"
    await archive.save(source, path)
    _, records, _ = archive.read(path)
    part = await archive.load(target, records[:2])
    assert part.total_published == 2
    rest = await archive.load(target, records)
    assert rest.total_published == len(records) - 2 and rest.total_skipped == 2
    assert await stored(target) == await stored(source)


async def test_only_the_named_streams_are_saved_and_unknown_ones_are_refused(source, tmp_path):
    counts, _ = await archive.save(source, tmp_path / "sandbox.jsonl.gz", ["SANDBOX"])
    assert counts == {"SANDBOX": 3}
    with pytest.raises(archive.ArchiveError, match="unknown stream 'NOPE'"):
        await archive.save(source, tmp_path / "x.jsonl.gz", ["NOPE"])
    assert not (tmp_path / "x.jsonl.gz").exists()


async def test_the_same_events_give_the_same_bytes(source, tmp_path):
    await archive.save(source, tmp_path / "a.gz")
    _, records, _ = archive.read(tmp_path / "a.gz")
    archive.write(tmp_path / "b.gz", records)
    archive.write(tmp_path / "c.gz", records)
    body = [gzip.decompress((tmp_path / n).read_bytes()).splitlines()[1:] for n in ("a.gz", "b.gz", "c.gz")]
    assert body[0] == body[1] == body[2]
    # No timestamp in the gzip header: only the archive header's saved_at can differ.
    assert all((tmp_path / n).read_bytes()[4:8] == bytes(4) for n in ("a.gz", "b.gz", "c.gz"))


def envelope_at(seconds: int, n: int) -> events_pb2.EventEnvelope:
    envelope = events.wrap(check_event(n), event_id=f"e{n}")
    envelope.occurred_at.CopyFrom(Timestamp(seconds=seconds))
    return envelope


def test_streams_are_merged_by_time_but_each_keeps_its_own_order():
    sandbox = [
        archive.Record("SANDBOX", "sandbox.check.completed", envelope_at(t, i))
        for i, t in [(0, 1), (1, 5), (2, 3)]
    ]
    episodes = [
        archive.Record("EPISODES", "episodes.task.submitted", envelope_at(t, i))
        for i, t in [(10, 2), (11, 4)]
    ]
    out = [r.envelope.event_id for r in archive.merged({"SANDBOX": sandbox, "EPISODES": episodes})]
    # The clock skew inside SANDBOX (5 before 3) does not reorder it.
    assert out == ["e0", "e10", "e11", "e1", "e2"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not gzip at all", "not a gzip'd event archive"),
        (gzip.compress(b""), "empty file"),
        (gzip.compress(b'{"format": "something-else"}\n'), "line 1 is not a nightshift-events/1 header"),
        (gzip.compress(HEADER + b'{"stream": "SANDBOX"}\n'), "line 2: not an event record"),
        (gzip.compress(HEADER + b'{"envelope": "%%%"}\n'), "line 2: not an event record"),
    ],
)
def test_unreadable_archives_are_refused_naming_the_line(tmp_path, content, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(content)
    with pytest.raises(archive.ArchiveError, match=message):
        archive.read(path)


def test_a_record_whose_stream_disagrees_with_its_envelope_is_refused(tmp_path):
    envelope = envelope_at(1, 0)
    line = {
        "stream": "EPISODES",
        "event_id": envelope.event_id,
        "envelope": base64.b64encode(envelope.SerializeToString()).decode(),
    }
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(HEADER + json.dumps(line).encode() + b"\n"))
    with pytest.raises(archive.ArchiveError, match="line 2: stream or event_id does not match"):
        archive.read(path)
    with pytest.raises(archive.ArchiveError, match="no such file"):
        archive.read(tmp_path / "missing.gz")


def nightshift(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nightshift_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )


async def test_the_cli_saves_shows_and_loads_an_archive(source, target, nats_server, tmp_path):
    path = tmp_path / "events.jsonl.gz"
    saved = await asyncio.to_thread(
        nightshift, "archive", "save", str(path), env={"NIGHTSHIFT_NATS_URL": nats_server.url}
    )
    assert saved.returncode == 0, saved.stderr
    assert "wrote 7 events" in saved.stdout
    shown = await asyncio.to_thread(nightshift, "archive", "show", str(path))
    assert shown.returncode == 0 and "TaskSubmitted" in shown.stdout and "CheckCompleted" in shown.stdout
    url = target._nc.connected_url.geturl()
    loaded = await asyncio.to_thread(
        nightshift, "archive", "load", str(path), str(path), env={"NIGHTSHIFT_NATS_URL": url}
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "7 events published, 0 already there" in loaded.stdout
    assert "0 events published, 7 already there" in loaded.stdout
    assert await stored(target) == await stored(source)


async def test_the_cli_carries_a_running_job_between_data_dirs(source, target, nats_server, tmp_path):
    job_store(tmp_path / "here" / "trainer", "job-7", [30])
    await source.publish(events_pb2.TrainingJobRequested(job_id="job-7"))
    path = tmp_path / "events.jsonl.gz"
    saved = await asyncio.to_thread(
        nightshift,
        *("archive", "save", str(path), "--data-dir", str(tmp_path / "here")),
        env={"NIGHTSHIFT_NATS_URL": nats_server.url},
    )
    assert saved.returncode == 0, saved.stderr
    assert "1 unfinished training jobs" in saved.stdout
    assert "training job job-7: its examples and its checkpoint at step 30" in saved.stdout
    shown = await asyncio.to_thread(nightshift, "archive", "show", str(path))
    assert "training job job-7: trainer/jobs/job-7/work/checkpoints/step-000030/state.json" in shown.stdout
    url = target._nc.connected_url.geturl()
    trainer_dir = tmp_path / "elsewhere-trainer"  # NIGHTSHIFT_TRAINER_DIR wins over <data-dir>/trainer
    loaded = await asyncio.to_thread(
        nightshift,
        *("archive", "load", str(path), "--data-dir", str(tmp_path / "there")),
        env={"NIGHTSHIFT_NATS_URL": url, "NIGHTSHIFT_TRAINER_DIR": str(trainer_dir)},
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "job job-7: its examples and its checkpoint at step 30 written to" in loaded.stdout
    assert (trainer_dir / "jobs" / "job-7" / "work" / "checkpoints" / "step-000030" / "state.json").is_file()
    assert not (tmp_path / "there" / "trainer").exists()


def test_the_cli_refuses_a_bad_archive_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"junk")
    shown = nightshift("archive", "show", str(bad))
    assert shown.returncode == 2 and "not a gzip'd event archive" in shown.stderr
    up = nightshift("up", "--data-dir", str(tmp_path / "data"), "--restore", str(tmp_path / "missing.gz"))
    assert up.returncode == 2 and "missing.gz: no such file" in up.stderr
    assert not (tmp_path / "data" / "nats").exists()


def trained(adapter_id: str) -> events_pb2.AdapterTrained:
    return events_pb2.AdapterTrained(adapter=trainer_pb2.Adapter(adapter_id=adapter_id, model="m"))


def roots(base) -> archive.FileRoots:
    return archive.FileRoots(base / "adapters", base / "trainer")


async def test_adapter_files_travel_with_their_events_and_are_never_overwritten(source, target, tmp_path):
    adapters = tmp_path / "adapters"
    (adapters / "replay-1").mkdir(parents=True)
    (adapters / "replay-1" / "adapter.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 40)
    await source.publish(trained("replay-1"))
    await source.publish(trained("naive-2"))  # its file is gone
    path = tmp_path / "events.jsonl.gz"
    counts, carried = await archive.save(source, path, roots=roots(tmp_path))
    assert counts["ADAPTERS"] == 2
    assert (carried.adapters, carried.missing_adapters, carried.jobs) == (["replay-1"], ["naive-2"], {})

    header, records, files = archive.read(path)
    assert header["files"] == ["adapters/replay-1/adapter.gguf"]
    elsewhere = roots(tmp_path / "elsewhere")
    restored = archive.restore_files(files, elsewhere)
    assert (restored.adapters, restored.adapters_present) == (["replay-1"], [])
    assert (elsewhere.adapters / "replay-1" / "adapter.gguf").read_bytes() == (
        adapters / "replay-1" / "adapter.gguf"
    ).read_bytes()
    assert archive.restore_files(files, elsewhere).adapters_present == ["replay-1"]
    (elsewhere.adapters / "replay-1" / "adapter.gguf").write_bytes(b"another adapter")
    with pytest.raises(archive.ArchiveError, match="exists with other content"):
        archive.restore_files(files, elsewhere)
    assert (elsewhere.adapters / "replay-1" / "adapter.gguf").read_bytes() == b"another adapter"


def job_store(trainer, job_id: str, steps: list[int]) -> None:
    """A trainer store's job directory: its mix and checkpoints at `steps` (the last incomplete when
    it is negative: no state.json)."""
    job = trainer / "jobs" / job_id
    job.mkdir(parents=True)
    (job / "examples.json").write_text(json.dumps([{"example_id": job_id}]))
    for step in steps:
        checkpoint = job / "work" / "checkpoints" / f"step-{abs(step):06d}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "lora.safetensors").write_bytes(f"lora {job_id} {step}".encode())
        (checkpoint / "optimizer.pt").write_bytes(os.urandom(64))
        if step > 0:
            (checkpoint / "state.json").write_text(json.dumps({"step": step}))


async def test_unfinished_jobs_travel_with_their_mix_and_latest_complete_checkpoint(source, tmp_path):
    here, there = roots(tmp_path / "here"), roots(tmp_path / "there")
    job_store(here.trainer, "running", [10, 20, -30])  # step 30 was being written
    job_store(here.trainer, "queued", [])
    job_store(here.trainer, "done", [10])
    for job_id in ("running", "queued", "done", "lost"):
        await source.publish(events_pb2.TrainingJobRequested(job_id=job_id))
    await source.publish(events_pb2.TrainingJobCompleted(job_id="done", adapter_id="naive-done"))
    path = tmp_path / "events.jsonl.gz"
    _, carried = await archive.save(source, path, roots=here)
    assert carried.jobs == {"running": 20, "queued": 0} and carried.missing_jobs == ["lost"]

    _, _, files = archive.read(path)
    assert sorted(f.path for f in files) == [
        "trainer/jobs/queued/examples.json",
        "trainer/jobs/running/examples.json",
        "trainer/jobs/running/work/checkpoints/step-000020/lora.safetensors",
        "trainer/jobs/running/work/checkpoints/step-000020/optimizer.pt",
        "trainer/jobs/running/work/checkpoints/step-000020/state.json",
    ]
    restored = archive.restore_files(files, there)
    assert restored.jobs == {"running": 20, "queued": 0} and restored.jobs_present == []
    for name in ("lora.safetensors", "optimizer.pt", "state.json"):
        relative = f"jobs/running/work/checkpoints/step-000020/{name}"
        assert (there.trainer / relative).read_bytes() == (here.trainer / relative).read_bytes()
    assert not list((there.trainer / "jobs" / "running" / "work" / "checkpoints").glob(".*"))

    # A store whose job got further keeps its own checkpoint; a job's mix names one mix.
    shutil.rmtree(there.trainer)
    job_store(there.trainer, "running", [40])
    again = archive.restore_files(files, there)
    assert again.jobs == {"queued": 0} and again.jobs_present == ["running"]
    assert not (there.trainer / "jobs" / "running" / "work" / "checkpoints" / "step-000020").exists()
    (there.trainer / "jobs" / "queued" / "examples.json").write_text("[]")
    with pytest.raises(archive.ArchiveError, match="queued/examples.json exists with other content"):
        archive.restore_files(files, there)


def test_an_archived_checkpoint_missing_one_of_its_files_is_refused(tmp_path):
    path = tmp_path / "bad.gz"
    lines = [
        {
            "file": f"trainer/jobs/j/work/checkpoints/step-000010/{name}",
            "data": base64.b64encode(b"x").decode(),
            "sha256": hashlib.sha256(b"x").hexdigest(),
        }
        for name in ("lora.safetensors", "state.json")
    ]
    path.write_bytes(gzip.compress(HEADER + b"".join(json.dumps(line).encode() + b"\n" for line in lines)))
    with pytest.raises(archive.ArchiveError, match="job j's checkpoint step-000010 has 2 of its files"):
        archive.read(path)


@pytest.mark.parametrize(
    "line, message",
    [
        (
            {"file": "../../etc/passwd", "sha256": hashlib.sha256(b"x").hexdigest()},
            "is not an adapters/<id>/",
        ),
        (
            {
                "file": "trainer/jobs/j/work/checkpoints/step-1/state.json",
                "sha256": hashlib.sha256(b"x").hexdigest(),
            },
            "nor a training job's examples or checkpoint file",
        ),
        (
            {"file": "trainer/episodes.sqlite", "sha256": hashlib.sha256(b"x").hexdigest()},
            "nor a training job's examples or checkpoint file",
        ),
        ({"file": "adapters/a/adapter.gguf", "sha256": "0" * 64}, "does not match its sha256"),
        ({"file": "adapters/a/adapter.gguf"}, "not a file record"),
    ],
)
def test_file_records_outside_the_adapter_layout_or_with_a_wrong_digest_are_refused(tmp_path, line, message):
    path = tmp_path / "bad.gz"
    line = {**line, "data": base64.b64encode(b"x").decode()}
    path.write_bytes(gzip.compress(HEADER + json.dumps(line).encode() + b"\n"))
    with pytest.raises(archive.ArchiveError, match=f"line 2: .*{re.escape(message)}"):
        archive.read(path)
