"""The trainer's own episode store: the EPISODES stream projected into a SQLite file it alone owns.

The trainer never reads another service's database. It consumes `TaskSubmitted`, `AttemptRecorded`
and `EpisodeCompleted` into its own file, idempotently: every event id is written once, and the
stream position is stored in the same transaction as the rows, so a redelivery changes nothing and
the consumer resumes from the file's position, not the broker's. Deleting the file and replaying the
stream rebuilds the same content.

Threading: `EpisodeStore` is synchronous and serialises every call on one lock (one writer; reads
wait for a write in flight). Async code calls it through `asyncio.to_thread`, as `EpisodeConsumer`
does; short reads (`position`, `counts`) may be called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nightshift import events
from nightshift.bus import Delivery, EventBus
from nightshift.v1 import agent_pb2, events_pb2, sandbox_pb2

log = logging.getLogger("nightshift.trainer.episodes")

STREAM = "EPISODES"
DURABLE = "trainer-episodes"
# How the agent spells "the base model, no adapter" in its events (SubmitTaskRequest.adapter_id).
BASE_MODEL_ADAPTER_IDS = ("", "none")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: positions, applied events, and one table per event type.
    (
        """CREATE TABLE stream_positions (
            stream TEXT PRIMARY KEY,
            last_sequence INTEGER NOT NULL
        )""",
        # Every event whose rows are written; a second delivery of the same id is skipped.
        """CREATE TABLE applied_events (
            event_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            stream TEXT NOT NULL,
            stream_sequence INTEGER NOT NULL
        )""",
        """CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            koan_id TEXT NOT NULL,
            koan_set TEXT NOT NULL,
            family TEXT NOT NULL,
            source TEXT NOT NULL,
            adapter_id TEXT NOT NULL,
            model TEXT NOT NULL,
            run_id TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            max_attempts INTEGER NOT NULL,
            seed TEXT NOT NULL,
            event_id TEXT NOT NULL,
            stream_sequence INTEGER NOT NULL
        )""",
        """CREATE TABLE attempts (
            task_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            koan_id TEXT NOT NULL,
            adapter_id TEXT NOT NULL,
            model TEXT NOT NULL,
            run_id TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            completion TEXT NOT NULL,
            code TEXT NOT NULL,
            status TEXT NOT NULL,
            error_codes TEXT NOT NULL,
            temperature REAL NOT NULL,
            seed TEXT NOT NULL,
            event_id TEXT NOT NULL,
            stream_sequence INTEGER NOT NULL,
            PRIMARY KEY (task_id, number)
        )""",
        """CREATE TABLE episodes (
            task_id TEXT PRIMARY KEY,
            koan_id TEXT NOT NULL,
            koan_set TEXT NOT NULL,
            family TEXT NOT NULL,
            passed INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            state TEXT NOT NULL,
            adapter_id TEXT NOT NULL,
            model TEXT NOT NULL,
            run_id TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            final_code TEXT NOT NULL,
            error_codes TEXT NOT NULL,
            event_id TEXT NOT NULL,
            stream_sequence INTEGER NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
# The tables a replay must rebuild identically, each with its natural order.
TABLES = {
    "stream_positions": "stream",
    "applied_events": "event_id",
    "tasks": "task_id",
    "attempts": "task_id, number",
    "episodes": "task_id",
}


class EpisodeStoreError(RuntimeError):
    """The store file cannot be used by this version of the trainer."""


def adapter_key(adapter_id: str) -> str:
    """One spelling per adapter: "" for the base model, however an event wrote it."""
    return "" if adapter_id in BASE_MODEL_ADAPTER_IDS else adapter_id


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of an episode, as the agent recorded it."""

    number: int
    prompt: str
    completion: str = ""
    code: str = ""
    status: str = ""  # CheckStatus name: OK, COMPILE_ERROR, TEST_FAILED, ...
    error_codes: list[str] = field(default_factory=list)
    temperature: float = 0.0
    seed: int = 0

    @property
    def passed(self) -> bool:
        """Whether the sandbox accepted this attempt with the task's own tests."""
        return self.status == "OK"


@dataclass(frozen=True)
class EpisodeRecord:
    """A task with its attempts and, once it ended, its outcome."""

    task_id: str
    koan_id: str = ""  # "" for a user's own program
    koan_set: str = ""  # train, frozen, heldout, a pack's name, or "user"
    family: str = ""
    run_id: str = ""
    correlation_id: str = ""
    adapter_id: str = ""  # as the agent wrote it: "none" (or "") for the base model
    model: str = ""
    passed: bool = False
    steps: int = 0
    attempts: list[AttemptRecord] = field(default_factory=list)
    completed: bool = True  # an EpisodeCompleted was seen
    state: str = ""  # TaskState name of the completed episode
    source: str = ""  # the submitted program of a user's task ("" for a koan: the corpus holds it)


@dataclass(frozen=True)
class EpisodeCounts:
    events: int  # event ids written
    tasks: int  # TaskSubmitted
    attempts: int
    episodes: int  # completed
    passed: int  # completed and passed


class EpisodeStore:
    """The SQLite file of the trainer's episodes. Open with `EpisodeStore.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, path: Path | str) -> EpisodeStore:
        """Open (creating it and its folder if missing) the file and bring its schema up to date."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every transaction below is explicit. One lock guards the connection.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # A position is acked to the broker only after its commit, so the commit must be durable.
            conn.execute("PRAGMA synchronous=FULL")
            store = cls(conn, path)
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (once; later calls do nothing)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # --- writing -----------------------------------------------------------------------------

    def apply(self, delivery: Delivery) -> bool:
        """Write one event and the stream's new position in one transaction.

        Returns True when rows were written. A sequence at or behind the stored position (a
        redelivery) changes nothing; an event id already written (the same event stored again at
        a later sequence) and event types this store ignores only move the position.
        """
        stream = events.stream_for(delivery.subject)
        with self._lock:
            return self._in_transaction(self._apply, stream, delivery)

    def _apply(self, cur: sqlite3.Cursor, stream: str, delivery: Delivery) -> bool:
        if delivery.stream_sequence <= self._position(cur, stream):
            return False
        envelope = delivery.envelope
        writer = _WRITERS.get(type(delivery.event))
        written = False
        if writer is not None:
            seen = cur.execute(
                "SELECT 1 FROM applied_events WHERE event_id = ?", (envelope.event_id,)
            ).fetchone()
            if seen is None:
                writer(cur, delivery)
                cur.execute(
                    "INSERT INTO applied_events VALUES (?, ?, ?, ?)",
                    (envelope.event_id, envelope.type, stream, delivery.stream_sequence),
                )
                written = True
        cur.execute(
            """INSERT INTO stream_positions VALUES (?, ?)
               ON CONFLICT (stream) DO UPDATE SET last_sequence = excluded.last_sequence""",
            (stream, delivery.stream_sequence),
        )
        return written

    # --- reading -----------------------------------------------------------------------------

    def position(self, stream: str = STREAM) -> int:
        """The last stream sequence committed for `stream` (0 when none)."""
        with self._lock:
            return self._position(self._conn.cursor(), stream)

    def counts(self) -> EpisodeCounts:
        def one(sql: str) -> int:
            return int(self._conn.execute(sql).fetchone()[0])

        with self._lock:
            return EpisodeCounts(
                events=one("SELECT count(*) FROM applied_events"),
                tasks=one("SELECT count(*) FROM tasks"),
                attempts=one("SELECT count(*) FROM attempts"),
                episodes=one("SELECT count(*) FROM episodes"),
                passed=one("SELECT count(*) FROM episodes WHERE passed"),
            )

    def episodes(
        self, *, adapter_id: str | None = None, koan_set: str | None = None, completed_only: bool = True
    ) -> list[EpisodeRecord]:
        """Episodes in the order their tasks reached the stream.

        `adapter_id` matches the adapter the episode ran on ("" and "none" both mean the base
        model); `koan_set` matches the set the agent recorded (train, frozen, ..., "user");
        `completed_only=False` adds tasks whose EpisodeCompleted has not arrived yet.
        """
        records = self._records()
        if completed_only:
            records = [r for r in records if r.completed]
        if adapter_id is not None:
            records = [r for r in records if adapter_key(r.adapter_id) == adapter_key(adapter_id)]
        if koan_set is not None:
            records = [r for r in records if r.koan_set == koan_set]
        return records

    def episode(self, task_id: str) -> EpisodeRecord | None:
        """One task's episode (completed or not), or None when the store has never seen it."""
        return next((r for r in self._records(task_id) if r.task_id == task_id), None)

    def dump(self) -> dict[str, list[tuple]]:
        """Every table in a stable order: two stores with equal dumps hold the same content."""
        with self._lock:
            return {
                table: self._conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
                for table, order in TABLES.items()
            }

    # --- internals ---------------------------------------------------------------------------

    def _records(self, task_id: str | None = None) -> list[EpisodeRecord]:
        where, args = ("WHERE task_id = ?", (task_id,)) if task_id is not None else ("", ())
        with self._lock:
            conn = self._conn
            tasks = {r["task_id"]: r for r in _rows(conn, f"SELECT * FROM tasks {where}", args)}
            done = {r["task_id"]: r for r in _rows(conn, f"SELECT * FROM episodes {where}", args)}
            attempts: dict[str, list[sqlite3.Row]] = {}
            for row in _rows(conn, f"SELECT * FROM attempts {where} ORDER BY task_id, number", args):
                attempts.setdefault(row["task_id"], []).append(row)
        first_seen: dict[str, int] = {}
        for rows in (tasks.values(), done.values(), (r for rs in attempts.values() for r in rs)):
            for row in rows:
                seq = row["stream_sequence"]
                first_seen[row["task_id"]] = min(seq, first_seen.get(row["task_id"], seq))
        order = sorted(first_seen, key=lambda t: (first_seen[t], t))
        return [_record(t, tasks.get(t), done.get(t), attempts.get(t, [])) for t in order]

    def _in_transaction(self, fn, *args):
        if self._closed:
            raise EpisodeStoreError(f"{self.path}: the store is closed")
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            result = fn(cur, *args)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return result

    @staticmethod
    def _position(cur: sqlite3.Cursor, stream: str) -> int:
        row = cur.execute("SELECT last_sequence FROM stream_positions WHERE stream = ?", (stream,)).fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise EpisodeStoreError(
                f"{self.path} has schema version {current}, newer than this trainer's {SCHEMA_VERSION}"
            )
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):

            def migrate(cur: sqlite3.Cursor, statements=statements, version=version) -> None:
                for statement in statements:
                    cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {version}")

            with self._lock:
                self._in_transaction(migrate)
            log.info("%s: applied schema version %d", self.path, version)


def _rows(conn: sqlite3.Connection, sql: str, args: tuple) -> Iterator[sqlite3.Row]:
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return iter(cur.execute(sql, args).fetchall())


def _first(*values: str) -> str:
    return next((v for v in values if v), "")


def _record(
    task_id: str, task: sqlite3.Row | None, done: sqlite3.Row | None, attempt_rows: list[sqlite3.Row]
) -> EpisodeRecord:
    """One EpisodeRecord from whatever of its events the store holds (the episode's own fields first)."""
    first_attempt = attempt_rows[0] if attempt_rows else None

    def pick(name: str, order: tuple) -> str:
        return _first(*(row[name] for row in order if row is not None))

    by_episode = (done, first_attempt, task)
    attempts = [
        AttemptRecord(
            number=int(a["number"]),
            prompt=a["prompt"],
            completion=a["completion"],
            code=a["code"],
            status=a["status"],
            error_codes=json.loads(a["error_codes"]),
            temperature=float(a["temperature"]),
            seed=int(a["seed"]),
        )
        for a in attempt_rows
    ]
    return EpisodeRecord(
        task_id=task_id,
        koan_id=pick("koan_id", by_episode),
        koan_set=pick("koan_set", (done, task)),
        family=pick("family", (done, task)),
        run_id=pick("run_id", by_episode),
        correlation_id=pick("correlation_id", by_episode),
        adapter_id=pick("adapter_id", by_episode),
        model=pick("model", by_episode),
        passed=bool(done["passed"]) if done is not None else any(a.passed for a in attempts),
        steps=int(done["steps"]) if done is not None else len(attempts),
        attempts=attempts,
        completed=done is not None,
        state=done["state"] if done is not None else "",
        source=task["source"] if task is not None else "",
    )


# --- event writers -------------------------------------------------------------------------------


def _error_codes(verdict: sandbox_pb2.Verdict) -> list[str]:
    """The distinct codes of the verdict's errors, in the order rustc reported them."""
    codes: list[str] = []
    for d in verdict.diagnostics:
        if d.level == "error" and d.code and d.code not in codes:
            codes.append(d.code)
    return codes


def _write_task(cur: sqlite3.Cursor, delivery: Delivery) -> None:
    event: events_pb2.TaskSubmitted = delivery.event
    request = event.request
    cur.execute(
        "INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.task_id,
            request.koan_id,
            event.koan_set,
            event.family,
            request.source,
            request.adapter_id,
            request.model,
            request.run_id,
            delivery.envelope.correlation_id or request.correlation_id,
            request.max_attempts,
            str(request.seed),  # uint64 does not fit SQLite's signed integer
            delivery.envelope.event_id,
            delivery.stream_sequence,
        ),
    )


def _write_attempt(cur: sqlite3.Cursor, delivery: Delivery) -> None:
    event: events_pb2.AttemptRecorded = delivery.event
    attempt = event.attempt
    # The first record of an attempt number wins: a replay keeps the same one.
    cur.execute(
        "INSERT OR IGNORE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.task_id,
            attempt.number,
            event.koan_id,
            event.adapter_id,
            event.model,
            event.run_id,
            delivery.envelope.correlation_id,
            attempt.prompt,
            attempt.completion,
            attempt.code,
            sandbox_pb2.CheckStatus.Name(attempt.verdict.status),
            json.dumps(_error_codes(attempt.verdict)),
            attempt.temperature,
            str(attempt.seed),
            delivery.envelope.event_id,
            delivery.stream_sequence,
        ),
    )


def _write_episode(cur: sqlite3.Cursor, delivery: Delivery) -> None:
    event: events_pb2.EpisodeCompleted = delivery.event
    cur.execute(
        "INSERT OR IGNORE INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.task_id,
            event.koan_id,
            event.koan_set,
            event.family,
            int(event.passed),
            event.steps,
            agent_pb2.TaskState.Name(event.state),
            event.adapter_id,
            event.model,
            event.run_id,
            event.correlation_id or delivery.envelope.correlation_id,
            event.final_code,
            json.dumps(list(event.error_codes)),
            delivery.envelope.event_id,
            delivery.stream_sequence,
        ),
    )


_WRITERS = {
    events_pb2.TaskSubmitted: _write_task,
    events_pb2.AttemptRecorded: _write_attempt,
    events_pb2.EpisodeCompleted: _write_episode,
}


# --- the consumer --------------------------------------------------------------------------------


class EpisodeConsumer:
    """A durable consumer of the EPISODES stream writing through an `EpisodeStore`.

    It starts at the sequence after the store's position, so the store file, not the broker,
    decides where it resumes; after a failure (of the broker or of a write) it starts again from
    that position.
    """

    def __init__(
        self,
        store: EpisodeStore,
        bus: EventBus,
        durable: str = DURABLE,
        *,
        restart_delay_seconds: float = 1.0,
    ):
        self.store = store
        self.bus = bus
        self.durable = durable
        self.restart_delay_seconds = restart_delay_seconds
        self._stopping = asyncio.Event()
        self._run_stop = asyncio.Event()
        self._writing = asyncio.Lock()
        self._advanced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start consuming in a background task (once: after `stop`, make a new consumer)."""
        if self._task is not None or self._stopping.is_set():
            raise RuntimeError(f"consumer {self.durable} was already started")
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        """Stop consuming, letting the event being written commit first."""
        self._stopping.set()
        self._run_stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        while not task.done():
            # Holding the lock means no write is in flight: the thread doing it is never abandoned.
            async with self._writing:
                task.cancel()
            # A cancellation can be lost inside the NATS client; the stop event then ends the fetch
            # loop, and the next round cancels again.
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_for(self, sequence: int, timeout_seconds: float = 30.0) -> None:
        """Wait until the store has committed `sequence` (TimeoutError after `timeout_seconds`)."""
        async with asyncio.timeout(timeout_seconds):
            while await asyncio.to_thread(self.store.position, STREAM) < sequence:
                self._advanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), 0.5)

    async def catch_up(self, timeout_seconds: float = 30.0) -> int:
        """Wait until the store holds every event the stream held when called; that sequence."""
        last = await self.bus.stream_last_sequence(STREAM)
        await self.wait_for(last, timeout_seconds)
        return last

    async def _run(self) -> None:
        while not self._stopping.is_set():
            run_stop = asyncio.Event()
            self._run_stop = run_stop
            failed = False

            async def handler(delivery: Delivery, run_stop: asyncio.Event = run_stop) -> None:
                nonlocal failed
                if failed:
                    # The next run starts at the stored position, so nothing skipped here is lost.
                    return
                try:
                    async with self._writing:
                        await asyncio.to_thread(self.store.apply, delivery)
                except Exception:
                    # Restart from the store: a later event must never commit a position beyond
                    # one that was not written.
                    failed = True
                    run_stop.set()
                    raise
                self._advanced.set()

            try:
                start = await asyncio.to_thread(self.store.position, STREAM) + 1
                log.info("consuming %s from sequence %d", STREAM, start)
                await self.bus.consume(STREAM, self.durable, handler, start_sequence=start, stop=run_stop)
            except Exception as exc:
                failed = True
                log.warning("consumer %s stopped: %r", self.durable, exc)
            if not failed:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.restart_delay_seconds)
