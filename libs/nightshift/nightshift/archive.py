"""Event archives: every event of the stack's JetStream streams in one gzip'd JSON-lines file, and back.

The event log is the system of record (DESIGN.md): every service rebuilds its state from it after a
restart. An archive carries that log to another machine or data dir, so a long experiment survives the
loss of its store: `nightshift archive save FILE` writes it from a running stack, and `nightshift up
--restore FILE` publishes it into JetStream before the services start, which then rebuild runs, tables,
the adapter registry and cycle sagas from it as after any restart.

Format: the first line is a header {"format": FORMAT, "saved_at", "counts": {stream: n}}; every other
line is one event {"stream", "subject", "type", "event_id", "occurred_at", "envelope"} with the
serialised EventEnvelope in base64. Events are in stream order within each stream and merged across
streams by their `occurred_at`, so a restore publishes them in about the order they happened. The file
is written with a zero gzip timestamp: the same events give the same bytes.

Loading is idempotent: an event whose id is already in its stream is skipped, so loading an archive
twice, or into a store that holds part of it, publishes each event once.

An archive also carries the adapter files its AdapterTrained events name, so a restored registry's
adapters can be served: lines {"file": "adapters/<adapter_id>/adapter.gguf", "sha256", "data"} (base64),
written back under the adapter directory on restore. A file already there with other bytes is refused,
never overwritten.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import heapq
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nightshift import events
from nightshift.v1 import events_pb2

FORMAT = "nightshift-events/1"
ADAPTER_FILE = "adapter.gguf"
# The only files an archive may carry, relative to the adapter directory's parent.
_FILE_PATH = re.compile(r"adapters/([A-Za-z0-9][A-Za-z0-9._-]*)/adapter\.gguf")


class ArchiveError(ValueError):
    """A file that is not a readable event archive; the message names the file and the line."""


@dataclass(frozen=True)
class Record:
    stream: str
    subject: str
    envelope: events_pb2.EventEnvelope

    @property
    def occurred_ns(self) -> int:
        return self.envelope.occurred_at.ToNanoseconds()

    def line(self) -> str:
        return json.dumps(
            {
                "stream": self.stream,
                "subject": self.subject,
                "type": self.envelope.type,
                "event_id": self.envelope.event_id,
                "occurred_at": self.envelope.occurred_at.ToJsonString(),
                "envelope": base64.b64encode(self.envelope.SerializeToString()).decode("ascii"),
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class FileRecord:
    """An adapter file: `adapters/<adapter_id>/adapter.gguf` and its bytes."""

    path: str
    data: bytes

    @property
    def adapter_id(self) -> str:
        return self.path.split("/")[1]

    def line(self) -> str:
        return json.dumps(
            {
                "file": self.path,
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "data": base64.b64encode(self.data).decode("ascii"),
            },
            sort_keys=True,
        )


@dataclass
class LoadResult:
    """Events per stream that a load published, and those it skipped as already stored."""

    published: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def merged(per_stream: dict[str, list[Record]]) -> list[Record]:
    """All records, each stream's in its own order, interleaved by occurred_at (stable on ties)."""
    keyed = ([(r.occurred_ns, i, r) for r in records] for i, records in enumerate(per_stream.values()))
    return [r for _, _, r in heapq.merge(*keyed, key=lambda t: (t[0], t[1]))]


def write(path: Path, records: Iterable[Record], files: Iterable[FileRecord] = ()) -> dict[str, int]:
    """Write an archive atomically (a temp file renamed over `path`); returns events per stream."""
    records, files = list(records), list(files)
    counts = dict(Counter(r.stream for r in records))
    saved_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    header = {"format": FORMAT, "saved_at": saved_at, "counts": counts, "files": [f.path for f in files]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write((json.dumps(header, sort_keys=True) + "\n").encode())
            for r in records:
                gz.write((r.line() + "\n").encode())
            for f in files:
                gz.write((f.line() + "\n").encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def read(path: Path) -> tuple[dict, list[Record], list[FileRecord]]:
    """Header, event records and files of an archive; ArchiveError naming the line when one is unusable."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{path}: not a gzip'd event archive ({exc})") from None
    if not lines:
        raise ArchiveError(f"{path}: empty file, no archive header")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError(f"{path}: line 1 is not a {FORMAT} header")
    records: list[Record] = []
    files: list[FileRecord] = []
    for number, text in enumerate(lines[1:], start=2):
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"{path}: line {number}: not JSON ({exc})") from None
        if isinstance(obj, dict) and "file" in obj:
            files.append(_file_record(path, number, obj))
        else:
            records.append(_record(path, number, obj))
    return header, records, files


def _file_record(path: Path, number: int, obj: dict) -> FileRecord:
    try:
        data = base64.b64decode(obj["data"], validate=True)
        name, digest = obj["file"], obj["sha256"]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ArchiveError(f"{path}: line {number}: not a file record ({reason})") from None
    if not isinstance(name, str) or not _FILE_PATH.fullmatch(name):
        raise ArchiveError(f"{path}: line {number}: {name!r} is not an adapters/<id>/{ADAPTER_FILE} path")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ArchiveError(f"{path}: line {number}: {name} does not match its sha256")
    return FileRecord(name, data)


def _record(path: Path, number: int, obj) -> Record:
    try:
        envelope = events_pb2.EventEnvelope()
        envelope.ParseFromString(base64.b64decode(obj["envelope"], validate=True))
        subject = events.subject_for(events.unwrap(envelope))
        stream = events.stream_for(subject)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ArchiveError(f"{path}: line {number}: not an event record ({reason})") from None
    if obj.get("stream") != stream or obj.get("event_id") != envelope.event_id:
        raise ArchiveError(f"{path}: line {number}: stream or event_id does not match the envelope")
    return Record(stream, subject, envelope)


async def collect(bus, streams: Iterable[str] | None = None) -> dict[str, list[Record]]:
    """Every event of the named streams (default all), in stream order."""
    names = list(streams) if streams is not None else list(events.STREAMS)
    unknown = [s for s in names if s not in events.STREAMS]
    if unknown:
        raise ArchiveError(f"unknown stream {unknown[0]!r}; known: {', '.join(events.STREAMS)}")
    await bus.ensure_streams()
    return {name: [Record(name, d.subject, d.envelope) for d in await bus.read_all(name)] for name in names}


def adapter_files(records: Iterable[Record], adapters_dir: Path) -> tuple[list[FileRecord], list[str]]:
    """The files of the adapters the records' AdapterTrained events name, and the ids without a file."""
    files: list[FileRecord] = []
    missing: list[str] = []
    for r in records:
        if not r.envelope.type.endswith(".AdapterTrained"):
            continue
        adapter_id = events.unwrap(r.envelope).adapter.adapter_id
        relative = f"adapters/{adapter_id}/{ADAPTER_FILE}"
        source = Path(adapters_dir) / adapter_id / ADAPTER_FILE
        if _FILE_PATH.fullmatch(relative) and source.is_file():
            files.append(FileRecord(relative, source.read_bytes()))
        else:
            missing.append(adapter_id)
    return files, missing


async def save(
    bus, path: Path, streams: Iterable[str] | None = None, adapters_dir: Path | None = None
) -> tuple[dict[str, int], list[str], list[str]]:
    """Write the archive; (events per stream, adapter ids whose files it holds, ids it found no file for)."""
    records = merged(await collect(bus, streams))
    files, missing = adapter_files(records, adapters_dir) if adapters_dir is not None else ([], [])
    return write(path, records, files), [f.adapter_id for f in files], missing


def restore_files(files: Iterable[FileRecord], adapters_dir: Path) -> tuple[list[str], list[str]]:
    """Write each adapter file under `adapters_dir`; (ids written, ids already there with the same bytes).

    A file already there with other bytes raises ArchiveError: an adapter id names one adapter."""
    written: list[str] = []
    present: list[str] = []
    for f in files:
        target = Path(adapters_dir) / f.adapter_id / ADAPTER_FILE
        if target.exists():
            if target.read_bytes() != f.data:
                raise ArchiveError(f"{target} exists with other content than the archive's {f.path}")
            present.append(f.adapter_id)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{ADAPTER_FILE}.{os.getpid()}.tmp")
        tmp.write_bytes(f.data)
        os.replace(tmp, target)
        written.append(f.adapter_id)
    return written, present


async def load(bus, records: list[Record], progress: Callable[[int, int], None] | None = None) -> LoadResult:
    """Publish every record whose event id its stream does not hold yet, in the archive's order."""
    await bus.ensure_streams()
    present: dict[str, set[str]] = {}
    for stream in {r.stream for r in records}:
        present[stream] = {d.envelope.event_id for d in await bus.read_all(stream)}
    result = LoadResult()
    for done, r in enumerate(records, start=1):
        seen = present[r.stream]
        if r.envelope.event_id in seen:
            result.skipped[r.stream] += 1
        else:
            await bus.publish_envelope(r.envelope)
            seen.add(r.envelope.event_id)
            result.published[r.stream] += 1
        if progress is not None:
            progress(done, len(records))
    return result
