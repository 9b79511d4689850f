"""Runs the projections: one durable consumer per projected stream, each writing through the store.

Every consumer starts at the sequence after the one its store committed, so the DuckDB file,
not the broker, decides where a consumer resumes; deleting the file replays from the start.

Nothing a producer sends can block a consumer: a message that is no envelope, names an
unknown type, carries a payload that does not parse, is rejected by its rule or gives rows the
store refuses becomes a `dead_letters` row, written with the position move, and consumption
goes on. Any other failure (the disk, a bug) is retried from the stored position; the same
message failing `max_failures` times in a row is dead-lettered too.

Messages are written and acked up to `batch_size` at a time (EventBus.consume_batches): the rows
of every event of a batch, its dead letters and the position of its last message go in one
transaction, then one ack covers the batch. A batch the store refuses is rolled back and written
again one message at a time, so a bad message in it becomes a dead letter without losing or
repeating the good ones around it. `batch_size=1` is the one-message-per-transaction path
(EventBus.consume, each message acked alone), about a hundred times slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import duckdb
from google.protobuf import message as pb_message
from nightshift import events
from nightshift.bus import Delivery, EventBus, Undecodable
from nightshift.v1 import events_pb2

from nightshift_evaluator.projection import RULES, EventRejectedError, Rule, is_event_type, projected_streams
from nightshift_evaluator.store import BatchWrite, DeadLetterWrite, EventWrite, ProjectionStore

log = logging.getLogger("nightshift.evaluator.projector")

PROJECTION_CONSUMER = "projection"
DEFAULT_MAX_FAILURES = 5
# Messages fetched, written in one transaction and acked together.
DEFAULT_BATCH_SIZE = 1024
# What a rule raises for an event it cannot turn into rows: the same event always fails the same way.
REJECTIONS = (EventRejectedError, ValueError, TypeError, LookupError, AttributeError, pb_message.Error)
# What the store raises for rows it refuses (a NULL in a NOT NULL column, a value out of range, ...).
STORE_REJECTIONS = (
    duckdb.ConstraintException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
)


def durable_name(consumer: str, stream: str) -> str:
    return f"evaluator-{consumer}-{stream.lower()}"


def undecodable_reason(envelope: events_pb2.EventEnvelope | None, error: Exception) -> str:
    """Why a message could not be decoded, for the dead_letters row."""
    if envelope is None:
        return f"not an EventEnvelope: {error}"
    if isinstance(error, events.UnknownEventError):
        return f"unknown event type {envelope.type!r}"
    return f"payload of {envelope.type} does not parse: {error!r}"


def envelope_identity(envelope: events_pb2.EventEnvelope | None) -> tuple[str | None, str | None]:
    """(event_id, type) of an envelope, each None when missing."""
    if envelope is None:
        return None, None
    return envelope.event_id or None, envelope.type or None


def parse_envelope(data: bytes) -> events_pb2.EventEnvelope | None:
    """The envelope in `data`, or None when the bytes are not one."""
    envelope = events_pb2.EventEnvelope()
    try:
        envelope.ParseFromString(data)
    except pb_message.DecodeError:
        return None
    return envelope


class Projector:
    """Consumes every stream the rules need and applies each event in stream order."""

    def __init__(
        self,
        store: ProjectionStore,
        bus: EventBus,
        *,
        consumer: str = PROJECTION_CONSUMER,
        rules: Mapping[str, Rule] = RULES,
        restart_delay_seconds: float = 1.0,
        max_failures: int = DEFAULT_MAX_FAILURES,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.bus = bus
        self.consumer = consumer
        self.rules = rules
        self.streams = projected_streams(rules)
        self.restart_delay_seconds = restart_delay_seconds
        self.max_failures = max_failures
        self.batch_size = batch_size
        self._stopping = asyncio.Event()
        self._writing: dict[str, asyncio.Lock] = {}
        self._run_stops: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        # stream -> (sequence, consecutive failures, last error) of the message that keeps failing
        self._failures: dict[str, tuple[int, int, str]] = {}

    def prepare(self, delivery: Delivery) -> BatchWrite:
        """What one delivery writes: its rule's rows (None for a type without a rule here) or a dead letter.

        Raises what the rule raises beyond a rejection (a bug, retried like a failed write).
        """
        envelope = delivery.envelope
        if not envelope.event_id:
            return dead_letter_of(delivery, "envelope has no event_id")
        rule = self.rules.get(envelope.type)
        if rule is None and not is_event_type(envelope.type):
            return dead_letter_of(delivery, f"unknown event type {envelope.type!r}")
        rows = None
        if rule is not None:
            try:
                rows = rule(delivery)
            except REJECTIONS as exc:
                return dead_letter_of(delivery, f"rejected by its rule: {exc}")
        return EventWrite(delivery.stream_sequence, envelope.event_id, envelope.type, rows)

    async def handle(self, stream: str, delivery: Delivery) -> bool:
        """Project one delivery; True when it added rows.

        False for a type known to the design but without a rule here (only the position moves), a
        duplicate, or an event that became a dead letter.
        """
        return await self._write_one(stream, delivery, self.prepare(delivery))

    async def handle_undecodable(
        self, stream: str, data: bytes, subject: str, sequence: int, error: Exception, reason: str = ""
    ) -> None:
        """Record a message the bus could not decode as a dead letter (with its id and type if readable)."""
        await self._dead_letter(stream, dead_letter_of(Undecodable(data, subject, sequence, error), reason))

    async def handle_batch(self, stream: str, items: Sequence[Delivery | Undecodable]) -> None:
        """Project consecutive messages of one stream in one transaction (one at a time if it fails).

        A message whose rule fails beyond a rejection ends the batch: the messages before it are
        written, its failure is counted and the error raised, so the consumer resumes at it; once it
        failed `max_failures` times in a row it becomes a dead letter instead.
        """
        failed_sequence, count, last_error = self._failures.get(stream, (0, 0, ""))
        writes: list[BatchWrite] = []
        for item in items:
            if item.stream_sequence == failed_sequence and count >= self.max_failures:
                writes.append(dead_letter_of(item, f"failed {count} times, last: {last_error}"))
                continue
            try:
                writes.append(self.prepare(item) if isinstance(item, Delivery) else dead_letter_of(item))
            except Exception as exc:
                await self._write_batch(stream, items[: len(writes)], writes)
                self._count_failure(stream, item.stream_sequence, exc)
                raise
        await self._write_batch(stream, items, writes)
        self._failures.pop(stream, None)

    async def _write_batch(
        self, stream: str, items: Sequence[Delivery | Undecodable], writes: list[BatchWrite]
    ) -> None:
        if not writes:
            return
        try:
            recorded = await self.store.apply_batch(consumer=self.consumer, stream=stream, items=writes)
        except Exception as exc:
            log.info(
                "%s: batch of messages %d..%d not written (%r), writing them one at a time",
                stream,
                writes[0].sequence,
                writes[-1].sequence,
                exc,
            )
            for item, write in zip(items, writes, strict=True):
                try:
                    await self._write_one(stream, item, write)
                except Exception as one_exc:
                    self._count_failure(stream, write.sequence, one_exc)
                    raise
            return
        for write, done in zip(writes, recorded, strict=True):
            if done and isinstance(write, DeadLetterWrite):
                log_dead_letter(stream, write)

    async def _write_one(self, stream: str, item: Delivery | Undecodable, write: BatchWrite) -> bool:
        """Write one message in its own transaction; True when it added rows."""
        if isinstance(write, DeadLetterWrite):
            await self._dead_letter(stream, write)
            return False
        try:
            written = await self.store.apply(
                consumer=self.consumer,
                stream=stream,
                sequence=write.sequence,
                event_id=write.event_id,
                event_type=write.event_type,
                rows=write.rows,
            )
        except STORE_REJECTIONS as exc:
            await self._dead_letter(stream, dead_letter_of(item, f"rows refused by the store: {exc}"))
            return False
        if not written and write.rows is not None:
            log.debug("%s: %s already projected", stream, write.event_id)
        return written

    async def _dead_letter(self, stream: str, letter: DeadLetterWrite) -> None:
        recorded = await self.store.dead_letter(
            consumer=self.consumer,
            stream=stream,
            sequence=letter.sequence,
            subject=letter.subject,
            event_id=letter.event_id,
            event_type=letter.event_type,
            reason=letter.reason,
            raw=letter.raw,
        )
        if recorded:
            log_dead_letter(stream, letter)

    def _count_failure(self, stream: str, sequence: int, error: Exception) -> None:
        failed_sequence, count, _ = self._failures.get(stream, (0, 0, ""))
        count = count + 1 if failed_sequence == sequence else 1
        self._failures[stream] = (sequence, count, repr(error))

    def start(self) -> None:
        """Start one consumer task per stream."""
        for stream in self.streams:
            self._writing[stream] = asyncio.Lock()
            task = asyncio.create_task(self._run_stream(stream), name=f"projection-{stream}")
            self._tasks[stream] = task

    async def stop(self) -> None:
        """Stop every consumer, letting the batch it is writing commit first."""
        self._stopping.set()
        for run_stop in self._run_stops.values():
            run_stop.set()
        for stream, task in self._tasks.items():
            while not task.done():
                # Holding the lock means no write is in flight; the broker's copy of an unacked
                # message does not matter, the consumer restarts from the store's position.
                async with self._writing[stream]:
                    task.cancel()
                # A cancellation can be lost inside the NATS client (asyncio.wait_for on 3.11);
                # then the stop event ends the fetch loop, and the next round cancels again.
                await asyncio.wait({task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _guarded(
        self,
        stream: str,
        sequence: int,
        project: Callable[[], Awaitable[object]],
        give_up: Callable[[str], Awaitable[object]],
    ) -> None:
        """Run `project` under the stream's write lock, counting consecutive failures of one message.

        A message that already failed `max_failures` times in a row goes to `give_up` (a dead letter).
        """
        async with self._writing[stream]:
            failed_sequence, count, last_error = self._failures.get(stream, (0, 0, ""))
            try:
                if failed_sequence == sequence and count >= self.max_failures:
                    await give_up(f"failed {count} times, last: {last_error}")
                else:
                    await project()
            except Exception as exc:
                self._count_failure(stream, sequence, exc)
                raise
            self._failures.pop(stream, None)

    async def _consume_one_at_a_time(self, stream: str, start: int, run_stop: asyncio.Event, guarded) -> None:
        async def handler(delivery: Delivery) -> None:
            await guarded(
                delivery.stream_sequence,
                lambda: self.handle(stream, delivery),
                lambda reason: self._dead_letter(stream, dead_letter_of(delivery, reason)),
            )

        async def undecodable(data: bytes, subject: str, sequence: int, error: Exception) -> None:
            await guarded(
                sequence,
                lambda: self.handle_undecodable(stream, data, subject, sequence, error),
                lambda reason: self.handle_undecodable(stream, data, subject, sequence, error, reason),
            )

        await self.bus.consume(
            stream,
            durable_name(self.consumer, stream),
            handler,
            start_sequence=start,
            stop=run_stop,
            on_undecodable=undecodable,
        )

    async def _run_stream(self, stream: str) -> None:
        durable = durable_name(self.consumer, stream)
        while not self._stopping.is_set():
            run_stop = asyncio.Event()
            self._run_stops[stream] = run_stop
            failed = False

            async def guarded(sequence: int, project, give_up, run_stop=run_stop) -> None:
                nonlocal failed
                if failed:
                    # The consumer restarts at the stored position, so nothing skipped here is lost.
                    return
                try:
                    await self._guarded(stream, sequence, project, give_up)
                except Exception:
                    # Stop and resume from the store: a later event must not commit a position
                    # beyond one that was never written.
                    failed = True
                    run_stop.set()
                    raise

            async def batch_handler(items: list[Delivery | Undecodable], run_stop=run_stop) -> None:
                nonlocal failed
                if failed:
                    return
                try:
                    async with self._writing[stream]:
                        await self.handle_batch(stream, items)
                except Exception:
                    failed = True
                    run_stop.set()
                    raise

            try:
                start = await self.store.position(self.consumer, stream) + 1
                log.info("projecting %s from sequence %d", stream, start)
                if self.batch_size == 1:
                    await self._consume_one_at_a_time(stream, start, run_stop, guarded)
                else:
                    await self.bus.consume_batches(
                        stream,
                        durable,
                        batch_handler,
                        start_sequence=start,
                        stop=run_stop,
                        batch=self.batch_size,
                    )
            except Exception as exc:
                failed = True
                log.warning("consumer %s stopped: %r", durable, exc)
            if not failed:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.restart_delay_seconds)


def dead_letter_of(item: Delivery | Undecodable, reason: str = "") -> DeadLetterWrite:
    """The dead letter of a message, with its id and type when readable; `reason` defaults to why
    an undecodable message could not be decoded."""
    if isinstance(item, Undecodable):
        envelope = parse_envelope(item.data)
        event_id, event_type = envelope_identity(envelope)
        reason = reason or undecodable_reason(envelope, item.error)
        return DeadLetterWrite(item.stream_sequence, item.subject, event_id, event_type, reason, item.data)
    event_id, event_type = envelope_identity(item.envelope)
    return DeadLetterWrite(
        item.stream_sequence, item.subject, event_id, event_type, reason, item.envelope.SerializeToString()
    )


def log_dead_letter(stream: str, letter: DeadLetterWrite) -> None:
    log.warning(
        "%s: message %d (%s) is a dead letter: %s", stream, letter.sequence, letter.event_id, letter.reason
    )
