"""The one wrapper over NATS JetStream that every service uses to publish and consume events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from google.protobuf import message as pb_message
from nats.js import api

from nightshift import events
from nightshift.v1 import events_pb2

log = logging.getLogger("nightshift.bus")

# Window in which JetStream drops a second message with the same Nats-Msg-Id.
DUPLICATE_WINDOW_SECONDS = 600.0
# A failing handler is retried in place, backing off between these bounds.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
# JetStream's default limit of unacked messages per consumer.
DEFAULT_MAX_ACK_PENDING = 1000


@dataclass(frozen=True)
class Delivery:
    """One event handed to a consumer's handler."""

    envelope: events_pb2.EventEnvelope
    event: pb_message.Message
    subject: str
    stream_sequence: int


@dataclass(frozen=True)
class Undecodable:
    """A message of a batch that is no envelope of a known event, handed over as it was stored."""

    data: bytes
    subject: str
    stream_sequence: int
    error: Exception


Handler = Callable[[Delivery], Awaitable[None]]
# Called with (raw message data, subject, stream sequence, the decoding error).
UndecodableHandler = Callable[[bytes, str, int, Exception], Awaitable[None]]
# Called with every message of one batch, in stream order.
BatchHandler = Callable[[list[Delivery | Undecodable]], Awaitable[None]]


def decode(msg) -> Delivery | Undecodable:
    """A received message as a Delivery, or as an Undecodable when it is no envelope of a known event."""
    sequence = msg.metadata.sequence.stream
    try:
        envelope = events_pb2.EventEnvelope()
        envelope.ParseFromString(msg.data)
        return Delivery(envelope, events.unwrap(envelope), msg.subject, sequence)
    except Exception as exc:  # a poison message must not stop the consumer
        return Undecodable(msg.data, msg.subject, sequence, exc)


class BusUnavailableError(ConnectionError):
    """The broker did not accept an event before the deadline."""


class EventBus:
    """Publishes enveloped events with Nats-Msg-Id = event_id and runs durable pull consumers."""

    def __init__(self, nc: nats.NATS):
        self._nc = nc
        self._js = nc.jetstream()

    @classmethod
    async def connect(cls, url: str, name: str, connect_timeout: float = 10.0) -> EventBus:
        """Connect (retrying until `connect_timeout`) and create the design's streams if missing."""

        async def _quiet(_exc: Exception) -> None:
            # Disconnects are expected during broker restarts; the client reconnects by itself.
            log.debug("nats: %s", _exc)

        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=[url],
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=_quiet,
                ),
                timeout=connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise BusUnavailableError(f"no NATS server answers at {url} ({exc!r})") from exc
        bus = cls(nc)
        deadline = asyncio.get_running_loop().time() + connect_timeout
        while True:
            try:
                await bus.ensure_streams()
                return bus
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
                if asyncio.get_running_loop().time() > deadline:
                    await nc.close()
                    raise
                await asyncio.sleep(0.2)

    @property
    def connected(self) -> bool:
        return self._nc.is_connected

    async def ensure_streams(self) -> None:
        for name, subjects in events.STREAMS.items():
            try:
                await self._js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(
                    name=name,
                    subjects=subjects,
                    storage=api.StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_SECONDS,
                )

    async def publish(
        self,
        event: pb_message.Message,
        *,
        correlation_id: str = "",
        causation_id: str = "",
        event_id: str | None = None,
        deadline_seconds: float = 30.0,
    ) -> events_pb2.EventEnvelope:
        """Publish one event; retries until JetStream acknowledges it (safe: the id de-duplicates)."""
        envelope = events.wrap(
            event, correlation_id=correlation_id, causation_id=causation_id, event_id=event_id
        )
        await self.publish_envelope(envelope, deadline_seconds=deadline_seconds)
        return envelope

    async def publish_envelope(
        self, envelope: events_pb2.EventEnvelope, *, deadline_seconds: float = 30.0
    ) -> None:
        subject = events.subject_for(events.unwrap(envelope))
        data = envelope.SerializeToString()
        headers = {"Nats-Msg-Id": envelope.event_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        delay = 0.1
        while True:
            try:
                await self._js.publish(subject, data, headers=headers, timeout=2.0)
                return
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                if loop.time() + delay > deadline:
                    raise BusUnavailableError(
                        f"could not publish {envelope.type} {envelope.event_id}: {exc!r}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def consume(
        self,
        stream: str,
        durable: str,
        handler: Handler,
        *,
        start_sequence: int = 1,
        subject: str | None = None,
        stop: asyncio.Event | None = None,
        batch: int = 64,
        ack_wait_seconds: float = 30.0,
        on_undecodable: UndecodableHandler | None = None,
    ) -> None:
        """Run a durable pull consumer until `stop` is set.

        The consumer is (re)created to start at `start_sequence`: the caller stores the last
        sequence it committed together with its own writes, so its store, not the broker, is
        the truth about its position. Each message is acked only after `handler` returned;
        a handler that raises gets the message again later, before any message after it.
        A message that is no envelope of a known event is logged and skipped, or, with
        `on_undecodable`, handed to it (and acked after it returned, retried like `handler`).
        """
        stop = stop or asyncio.Event()
        subject = subject or events.STREAMS[stream][0]
        await self._reset_consumer(stream, durable, subject, start_sequence, ack_wait_seconds)
        sub = None
        try:
            while not stop.is_set():
                try:
                    if sub is None:
                        sub = await self._js.pull_subscribe_bind(durable=durable, stream=stream)
                    msgs = await sub.fetch(batch, timeout=1.0)
                except TimeoutError:  # nothing within the fetch timeout (nats raises its own or asyncio's)
                    continue
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    log.info("consumer %s waiting for the broker: %r", durable, exc)
                    await asyncio.sleep(0.25)
                    continue
                for i, msg in enumerate(msgs):
                    if not await self._deliver(durable, msg, handler, stop, on_undecodable):
                        # Stopping mid-batch: hand the rest back for redelivery, in order.
                        for later in msgs[i + 1 :]:
                            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                                await later.nak()
                        break
        finally:
            if sub is not None and not self._nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def consume_batches(
        self,
        stream: str,
        durable: str,
        handler: BatchHandler,
        *,
        start_sequence: int = 1,
        subject: str | None = None,
        stop: asyncio.Event | None = None,
        batch: int = 256,
        ack_wait_seconds: float = 30.0,
    ) -> None:
        """Run a durable consumer until `stop` is set, handing `handler` up to `batch` messages at a time.

        Like `consume`, the consumer is (re)created to start at `start_sequence`, so the caller's
        store decides where it resumes. `handler` gets every message that arrived since its last
        call (at most `batch`) as one list in stream order, a message that is no envelope of a
        known event as an `Undecodable`. The batch is acked with one ack (the consumer acks all up
        to it) only after `handler` returned; a handler that raises gets the same batch again,
        retried in place before anything after it, until it succeeds or `stop` is set. Messages
        that arrived but were not handed over when it stops come again to the next consumer
        created at the caller's position.

        The broker pushes messages to the consumer, at most twice `batch` (and at least
        JetStream's default of 1000) unacked at a time, instead of answering a pull per fetch:
        the client then spends a few microseconds a message where a pull costs it a task and a
        timer each.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        stop = stop or asyncio.Event()
        subject = subject or events.STREAMS[stream][0]
        inbox = self._nc.new_inbox()
        arrived: list = []
        ready = asyncio.Event()

        async def on_message(msg) -> None:
            arrived.append(msg)
            ready.set()

        sub = await self._nc.subscribe(inbox, cb=on_message)
        try:
            await self._reset_consumer(
                stream,
                durable,
                subject,
                start_sequence,
                ack_wait_seconds,
                ack_all=True,
                max_ack_pending=2 * batch,
                deliver_subject=inbox,
            )
            while not stop.is_set():
                if not arrived:
                    ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ready.wait(), 1.0)
                    continue
                msgs = arrived[:batch]
                del arrived[:batch]
                items = [decode(msg) for msg in msgs]
                if not await self._handle_batch_in_place(durable, msgs, handler, items, stop):
                    break
        finally:
            if not self._nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def _handle_batch_in_place(
        self,
        durable: str,
        msgs: list,
        handler: BatchHandler,
        items: list[Delivery | Undecodable],
        stop: asyncio.Event,
    ) -> bool:
        """Await `handler(items)` until it succeeds, then ack the batch; False when `stop` was set
        first (then every message of it is nak'ed, in order)."""
        first, last = msgs[0].metadata.sequence.stream, msgs[-1].metadata.sequence.stream
        label = f"messages {first}..{last}"
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await handler(items)
                break
            except Exception:
                log.exception("consumer %s: batch handler failed on %s, retrying", durable, label)
            if stop.is_set():
                for msg in msgs:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                        await msg.nak()
                return False
            for msg in msgs:  # keep the broker from redelivering them meanwhile
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                    await msg.in_progress()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
        try:
            # The consumer acks all: acking the last message acks the whole batch.
            await msgs[-1].ack()
        except (nats.errors.Error, nats.js.errors.Error):
            # The handler already committed; a redelivery is skipped by the idempotent store.
            log.info("consumer %s: ack of %s lost, they will be redelivered", durable, label)
        return True

    async def _deliver(
        self,
        durable: str,
        msg,
        handler: Handler,
        stop: asyncio.Event,
        on_undecodable: UndecodableHandler | None = None,
    ) -> bool:
        """Hand one message to the handler, retrying it in place until it succeeds (so nothing after it
        is handled first) or `stop` is set; False when stopped before it succeeded (it is nak'ed)."""
        try:
            envelope = events_pb2.EventEnvelope()
            envelope.ParseFromString(msg.data)
            delivery = Delivery(
                envelope=envelope,
                event=events.unwrap(envelope),
                subject=msg.subject,
                stream_sequence=msg.metadata.sequence.stream,
            )
        except Exception as exc:  # a poison message must not stop the consumer
            if on_undecodable is None:
                log.exception("consumer %s: undecodable message on %s, skipping", durable, msg.subject)
                await msg.term()
                return True
            error = exc
        else:
            return await self._handle_in_place(
                durable, msg, lambda: handler(delivery), stop, envelope.event_id
            )
        sequence = msg.metadata.sequence.stream
        log.warning("consumer %s: undecodable message %d on %s: %r", durable, sequence, msg.subject, error)
        return await self._handle_in_place(
            durable,
            msg,
            lambda: on_undecodable(msg.data, msg.subject, sequence, error),
            stop,
            f"undecodable message {sequence}",
        )

    async def _handle_in_place(
        self, durable: str, msg, call: Callable[[], Awaitable[None]], stop: asyncio.Event, label: str
    ) -> bool:
        """Await `call` until it succeeds, then ack; False when `stop` was set first (then it is nak'ed)."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await call()
                break
            except Exception:
                log.exception("consumer %s: handler failed on %s, retrying", durable, label)
            if stop.is_set():
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                    await msg.nak()
                return False
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await msg.in_progress()  # keep the broker from redelivering it meanwhile
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
        try:
            await msg.ack()
        except (nats.errors.Error, nats.js.errors.Error):
            # The handler already committed; a redelivery is skipped by the idempotent store.
            log.info("consumer %s: ack of %s lost, it will be redelivered", durable, label)
        return True

    async def _reset_consumer(
        self,
        stream: str,
        durable: str,
        subject: str,
        start_sequence: int,
        ack_wait: float,
        *,
        ack_all: bool = False,
        max_ack_pending: int | None = None,
        deliver_subject: str | None = None,
    ) -> None:
        """(Re)create a durable consumer; a pull consumer unless `deliver_subject` makes it push there."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(stream, durable)
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=api.AckPolicy.ALL if ack_all else api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            deliver_subject=deliver_subject,
        )
        if max_ack_pending is not None:
            config.max_ack_pending = max(max_ack_pending, DEFAULT_MAX_ACK_PENDING)
        if start_sequence > 1:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_sequence
        else:
            config.deliver_policy = api.DeliverPolicy.ALL
        await self._js.add_consumer(stream, config)

    async def read_all(self, stream: str, subject: str | None = None) -> list[Delivery]:
        """Every event of a stream (optionally one subject) up to its current end, in order."""
        last = await self.stream_last_sequence(stream)
        if last == 0:
            return []
        subject = subject or events.STREAMS[stream][0]
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,
        )
        sub = await self._js.pull_subscribe(subject, stream=stream, config=config)
        out: list[Delivery] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(256, timeout=1.0)
                except TimeoutError:  # nats raises both its own and asyncio's
                    # A slow broker also times out: stop only when nothing matching is left.
                    info = await sub.consumer_info()
                    if info.num_pending == 0:
                        break
                    continue
                for msg in msgs:
                    envelope = events_pb2.EventEnvelope()
                    envelope.ParseFromString(msg.data)
                    out.append(
                        Delivery(envelope, events.unwrap(envelope), msg.subject, msg.metadata.sequence.stream)
                    )
                if out and out[-1].stream_sequence >= last or msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return out

    async def stream_last_sequence(self, stream: str) -> int:
        info = await self._js.stream_info(stream)
        return info.state.last_seq

    async def close(self) -> None:
        """Close the connection; every publish already awaited its acknowledgement."""
        if not self._nc.is_closed:
            await self._nc.close()
