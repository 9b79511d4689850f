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

An archive also carries files, as lines {"file": PATH, "sha256", "data"} (base64), so that what the
events name can be used after a restore (PATH is relative to the data dir's layout; `FileRoots` maps it
onto the stack's directories):

- `adapters/<adapter_id>/adapter.gguf`: the file of every adapter an AdapterTrained event names, so a
  restored registry's adapters can be served. A file already there with other bytes is refused, never
  overwritten.
- `trainer/jobs/<job_id>/examples.json` and `trainer/jobs/<job_id>/work/checkpoints/step-NNNNNN/{lora.
  safetensors, optimizer.pt, state.json}`: the mix and the latest complete checkpoint of every training
  job that was requested and never ended (the trainer's layout, services/trainer jobs.py and
  training.py), so a job cut short by the end of a working session resumes from its checkpoint on the
  next machine instead of from step 0. A checkpoint is written only where the job has none as far along.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import heapq
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nightshift import events
from nightshift.v1 import events_pb2

FORMAT = "nightshift-events/1"
ADAPTER_FILE = "adapter.gguf"
EXAMPLES_FILE = "examples.json"
CHECKPOINT_FILES = ("lora.safetensors", "optimizer.pt", "state.json")  # state.json marks it complete
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# The only files an archive may carry.
_ADAPTER_PATH = re.compile(rf"adapters/(?P<owner>{_ID})/adapter\.gguf")
_JOB_PATH = re.compile(
    rf"trainer/jobs/(?P<owner>{_ID})/(?:examples\.json|work/checkpoints/(?P<step>step-\d{{6}})/"
    rf"(?:{'|'.join(re.escape(name) for name in CHECKPOINT_FILES)}))"
)
_TERMINAL_JOB_EVENTS = (".TrainingJobCompleted", ".TrainingJobFailed", ".TrainingJobCancelled")


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
    """A carried file: its path in the data dir's layout (an adapter's or a job's) and its bytes."""

    path: str
    data: bytes

    @property
    def kind(self) -> str:
        return "adapter" if self.path.startswith("adapters/") else "job"

    @property
    def owner(self) -> str:
        """The adapter id or the job id the file belongs to."""
        return self.path.split("/")[1 if self.kind == "adapter" else 2]

    @property
    def checkpoint(self) -> str:
        """`step-NNNNNN` for a checkpoint's file, else ""."""
        match = _JOB_PATH.fullmatch(self.path)
        return (match["step"] or "") if match else ""

    def line(self) -> str:
        return json.dumps(
            {
                "file": self.path,
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "data": base64.b64encode(self.data).decode("ascii"),
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class FileRoots:
    """Where a stack keeps the directories an archive's files go to: its adapter directory and the
    trainer's store (NIGHTSHIFT_ADAPTERS_DIR and NIGHTSHIFT_TRAINER_DIR, by default <data-dir>/adapters
    and <data-dir>/trainer)."""

    adapters: Path
    trainer: Path

    def target(self, f: FileRecord) -> Path:
        head, rest = f.path.split("/", 1)
        return Path(self.adapters if head == "adapters" else self.trainer) / rest


@dataclass
class Carried:
    """What a save put in the archive besides events."""

    adapters: list[str] = field(default_factory=list)  # adapter ids with their file
    missing_adapters: list[str] = field(default_factory=list)  # trained adapters without a file
    jobs: dict[str, int] = field(default_factory=dict)  # unfinished job id -> checkpoint step (0: none)
    missing_jobs: list[str] = field(default_factory=list)  # unfinished jobs without their examples


@dataclass
class Restored:
    """What a restore wrote, and what it found already there."""

    adapters: list[str] = field(default_factory=list)
    adapters_present: list[str] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # job id -> checkpoint step written (0: mix only)
    jobs_present: list[str] = field(default_factory=list)  # left as they were: same mix, as far along


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
    groups = Counter((f.owner, f.checkpoint) for f in files if f.checkpoint)
    for (job_id, step), n in groups.items():
        if n != len(CHECKPOINT_FILES):
            raise ArchiveError(
                f"{path}: job {job_id}'s checkpoint {step} has {n} of its files "
                f"({', '.join(CHECKPOINT_FILES)})"
            )
    return header, records, files


def _file_record(path: Path, number: int, obj: dict) -> FileRecord:
    try:
        data = base64.b64decode(obj["data"], validate=True)
        name, digest = obj["file"], obj["sha256"]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ArchiveError(f"{path}: line {number}: not a file record ({reason})") from None
    if not isinstance(name, str) or not (_ADAPTER_PATH.fullmatch(name) or _JOB_PATH.fullmatch(name)):
        raise ArchiveError(
            f"{path}: line {number}: {name!r} is not an adapters/<id>/{ADAPTER_FILE} path "
            "nor a training job's examples or checkpoint file"
        )
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
        if _ADAPTER_PATH.fullmatch(relative) and source.is_file():
            files.append(FileRecord(relative, source.read_bytes()))
        else:
            missing.append(adapter_id)
    return files, missing


def unfinished_jobs(records: Iterable[Record]) -> list[str]:
    """Ids of the training jobs the records request and never end (completed, failed or cancelled)."""
    requested: dict[str, None] = {}
    ended: set[str] = set()
    for r in records:
        kind = r.envelope.type
        if kind.endswith(".TrainingJobRequested"):
            requested.setdefault(events.unwrap(r.envelope).job_id, None)
        elif kind.endswith(_TERMINAL_JOB_EVENTS):
            ended.add(events.unwrap(r.envelope).job_id)
    return [job_id for job_id in requested if job_id not in ended]


def _checkpoints(work: Path) -> list[Path]:
    """The complete checkpoints under a job's work dir (state.json is written last), oldest first."""
    found = [p for p in (work / "checkpoints").glob("step-*") if re.fullmatch(r"step-\d{6}", p.name)]
    return sorted((p for p in found if (p / "state.json").is_file()), key=lambda p: p.name)


def _step(checkpoints: list[Path]) -> int:
    return int(checkpoints[-1].name[5:]) if checkpoints else 0


def _latest_checkpoint(work: Path, attempts: int = 5) -> tuple[int, list[tuple[str, bytes]]]:
    """(step, [(file name, bytes)]) of the newest complete checkpoint under `work`, (0, []) if none.

    The trainer may replace its checkpoint while it is read (a new step-N appears, the older is
    removed); a checkpoint that vanishes mid-read is looked for again."""
    for _ in range(attempts):
        checkpoints = _checkpoints(work)
        if not checkpoints:
            return 0, []
        try:
            return _step(checkpoints), [(n, (checkpoints[-1] / n).read_bytes()) for n in CHECKPOINT_FILES]
        except FileNotFoundError:
            continue
    raise ArchiveError(f"{work / 'checkpoints'}: the checkpoint kept changing while it was read; save again")


def job_files(
    records: Iterable[Record], trainer_dir: Path
) -> tuple[list[FileRecord], dict[str, int], list[str]]:
    """The mix and latest checkpoint of every unfinished job; (files, job id -> step, ids without a mix)."""
    files: list[FileRecord] = []
    steps: dict[str, int] = {}
    missing: list[str] = []
    for job_id in unfinished_jobs(records):
        base = f"trainer/jobs/{job_id}"
        source = Path(trainer_dir) / "jobs" / job_id
        if not _JOB_PATH.fullmatch(f"{base}/{EXAMPLES_FILE}") or not (source / EXAMPLES_FILE).is_file():
            missing.append(job_id)
            continue
        files.append(FileRecord(f"{base}/{EXAMPLES_FILE}", (source / EXAMPLES_FILE).read_bytes()))
        step, checkpoint = _latest_checkpoint(source / "work")
        files += [FileRecord(f"{base}/work/checkpoints/step-{step:06d}/{n}", data) for n, data in checkpoint]
        steps[job_id] = step
    return files, steps, missing


async def save(
    bus, path: Path, streams: Iterable[str] | None = None, roots: FileRoots | None = None
) -> tuple[dict[str, int], Carried]:
    """Write the archive; (events per stream, the files it carries: adapters and unfinished jobs)."""
    records = merged(await collect(bus, streams))
    carried = Carried()
    files: list[FileRecord] = []
    if roots is not None:
        adapters, carried.missing_adapters = adapter_files(records, roots.adapters)
        jobs, carried.jobs, carried.missing_jobs = job_files(records, roots.trainer)
        carried.adapters = [f.owner for f in adapters]
        files = adapters + jobs
    return write(path, records, files), carried


def _write_file(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _same_or_absent(target: Path, f: FileRecord) -> bool:
    """True when `target` holds f's bytes, False when it is absent; ArchiveError when it differs."""
    if not target.exists():
        return False
    if target.read_bytes() != f.data:
        raise ArchiveError(f"{target} exists with other content than the archive's {f.path}")
    return True


def restore_files(files: Iterable[FileRecord], roots: FileRoots) -> Restored:
    """Write the archive's files under `roots`.

    An adapter file or a job's mix already there with other bytes raises ArchiveError (an id names one
    adapter, one job). A job's checkpoint is written (into a partial directory renamed into place, so
    the trainer never sees half of it) only when the job has no complete checkpoint as far along."""
    result = Restored()
    checkpoints: dict[tuple[str, str], list[FileRecord]] = {}
    for f in files:
        if f.checkpoint:
            checkpoints.setdefault((f.owner, f.checkpoint), []).append(f)
            continue
        target = roots.target(f)
        present = _same_or_absent(target, f)
        if not present:
            _write_file(target, f.data)
        if f.kind == "adapter":
            (result.adapters_present if present else result.adapters).append(f.owner)
        elif present:
            result.jobs_present.append(f.owner)
        else:
            result.jobs[f.owner] = 0
    for (job_id, name), group in checkpoints.items():
        step = int(name[5:])
        final = roots.target(group[0]).parent
        if _step(_checkpoints(final.parent.parent)) >= step:
            continue  # the job got as far here: its own checkpoint stays
        partial = final.with_name(f".{name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for f in sorted(group, key=lambda f: f.path.endswith("/state.json")):  # state.json last
            (partial / f.path.rsplit("/", 1)[1]).write_bytes(f.data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        result.jobs[job_id] = step
        if job_id in result.jobs_present:
            result.jobs_present.remove(job_id)
    return result


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
