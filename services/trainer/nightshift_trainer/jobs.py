"""Training jobs: their state (a fold of the TRAINING stream) and the one worker that runs them.

A job is requested with its whole mix: the examples are written to `<jobs dir>/<job id>/examples.json`
and `TrainingJobRequested` records the recipe, parameters, example ids and data hash, so the job can be
reproduced and resumed. Jobs run one at a time, in a thread (torch holds the cores); every phase is
an event: Started, Progressed (step, loss, tokens/s, ETA), then Completed with the adapter id, or
Failed with the reason, or Cancelled.

A job checkpoints every N steps into its work directory; after a restart, every job that was
requested but never ended is queued again and resumes from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nightshift.v1 import events_pb2, trainer_pb2

from nightshift_trainer.examples import Example

T = trainer_pb2
log = logging.getLogger("nightshift.trainer.jobs")

TERMINAL = (T.JOB_COMPLETED, T.JOB_FAILED, T.JOB_CANCELLED)
# A progress event at most this often (seconds), besides the first and the last step.
PROGRESS_EVENT_INTERVAL = 2.0


def job_dir(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / job_id


def write_examples(path: Path, examples: list[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([dataclasses.asdict(e) for e in examples], indent=1))
    tmp.replace(path)


def read_examples(path: Path) -> list[Example]:
    return [Example(**row) for row in json.loads(path.read_text())]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class JobRecord:
    """One job as the TRAINING stream tells it, plus what the worker needs while it runs."""

    job: T.Job
    request: events_pb2.TrainingJobRequested
    started: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        return self.job.state in TERMINAL

    def touch(self) -> None:
        """Wake every watcher; each re-arms by waiting on the fresh event."""
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class JobBook:
    """Every job by id, folded from TRAINING events in stream order."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}

    def apply(self, event, correlation_id: str = "") -> JobRecord | None:
        """Fold one TRAINING event; `correlation_id` is its envelope's (the cycle that asked for the job)."""
        if isinstance(event, events_pb2.TrainingJobRequested):
            if event.job_id in self.jobs:
                return self.jobs[event.job_id]
            job = T.Job(
                job_id=event.job_id,
                state=T.JOB_QUEUED,
                preset=event.preset,
                example_count=len(event.example_ids),
                excluded_count=event.excluded_count,
                data_hash=event.data_hash,
                model=event.model,
                correlation_id=correlation_id,
            )
            job.mix.CopyFrom(event.mix)
            for reason, count in event.excluded_by_reason.items():
                job.excluded_by_reason[reason] = count
            record = JobRecord(job, event)
            self.jobs[event.job_id] = record
            return record
        record = self.jobs.get(getattr(event, "job_id", ""))
        if record is None:
            return None
        job = record.job
        if isinstance(event, events_pb2.TrainingJobStarted):
            record.started = True
            job.state = T.JOB_RUNNING
            job.device = event.device
        elif isinstance(event, events_pb2.TrainingJobProgressed):
            job.progress.CopyFrom(event.progress)
        elif isinstance(event, events_pb2.TrainingJobCompleted):
            job.state = T.JOB_COMPLETED
            job.adapter_id = event.adapter_id
            job.train_seconds = event.train_seconds
            job.train_tokens = event.train_tokens
        elif isinstance(event, events_pb2.TrainingJobFailed):
            job.state = T.JOB_FAILED
            job.error = event.error
        elif isinstance(event, events_pb2.TrainingJobCancelled):
            job.state = T.JOB_CANCELLED
            job.error = event.reason
        record.touch()
        return record

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self.jobs.values() if not r.done]


class ProgressThrottle:
    """Decides which progress reports become events: the first, the last, and one per interval."""

    def __init__(
        self, interval: float = PROGRESS_EVENT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self.interval = interval
        self.clock = clock
        self._last = float("-inf")

    def due(self, step: int, total: int) -> bool:
        now = self.clock()
        if step <= 1 or step >= total or now - self._last >= self.interval:
            self._last = now
            return True
        return False
