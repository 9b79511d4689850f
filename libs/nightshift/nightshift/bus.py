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


@dataclass(frozen=True)
class Delivery:
    """One event handed to a consumer's handler."""

    envelope: events_pb2.EventEnvelope
    event: pb_message.Message
    subject: str
    stream_sequence: int


Handler = Callable[[Delivery], Awaitable[None]]


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
    ) -> None:
        """Run a durable pull consumer until `stop` is set.

        The consumer is (re)created to start at `start_sequence`: the caller stores the last
        sequence it committed together with its own writes, so its store, not the broker, is
        the truth about its position. Each message is acked only after `handler` returned;
        a handler that raises gets the message again later, before any message after it.
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
                except nats.errors.TimeoutError:
                    continue
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                    log.info("consumer %s waiting for the broker: %r", durable, exc)
                    await asyncio.sleep(0.25)
                    continue
                for i, msg in enumerate(msgs):
                    if not await self._deliver(durable, msg, handler, stop):
                        # Stopping mid-batch: hand the rest back for redelivery, in order.
                        for later in msgs[i + 1 :]:
                            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                                await later.nak()
                        break
        finally:
            if sub is not None and not self._nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def _deliver(self, durable: str, msg, handler: Handler, stop: asyncio.Event) -> bool:
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
        except Exception:  # a poison message must not stop the consumer
            log.exception("consumer %s: undecodable message on %s, skipping", durable, msg.subject)
            await msg.term()
            return True
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await handler(delivery)
                break
            except Exception:
                log.exception("consumer %s: handler failed on %s, retrying", durable, envelope.event_id)
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
            log.info("consumer %s: ack of %s lost, it will be redelivered", durable, envelope.event_id)
        return True

    async def _reset_consumer(
        self, stream: str, durable: str, subject: str, start_sequence: int, ack_wait: float
    ) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(stream, durable)
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
        )
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
                except nats.errors.TimeoutError:
                    break  # nothing more matches the filter
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
