"""Runs the projections: one durable consumer per projected stream, each writing through the store.

Every consumer starts at the sequence after the one its store committed, so the DuckDB file,
not the broker, decides where a consumer resumes; deleting the file replays from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from nightshift.bus import Delivery, EventBus

from nightshift_evaluator.projection import RULES, Rule, projected_streams
from nightshift_evaluator.store import ProjectionStore

log = logging.getLogger("nightshift.evaluator.projector")

PROJECTION_CONSUMER = "projection"


def durable_name(consumer: str, stream: str) -> str:
    return f"evaluator-{consumer}-{stream.lower()}"


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
    ):
        self.store = store
        self.bus = bus
        self.consumer = consumer
        self.rules = rules
        self.streams = projected_streams(rules)
        self.restart_delay_seconds = restart_delay_seconds
        self._stopping = asyncio.Event()
        self._writing: dict[str, asyncio.Lock] = {}
        self._run_stops: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    async def handle(self, stream: str, delivery: Delivery) -> bool:
        """Project one delivery; True when it added rows, False for an ignored type or a duplicate."""
        rule = self.rules.get(delivery.envelope.type)
        rows = rule(delivery) if rule is not None else None
        written = await self.store.apply(
            consumer=self.consumer,
            stream=stream,
            sequence=delivery.stream_sequence,
            event_id=delivery.envelope.event_id,
            event_type=delivery.envelope.type,
            rows=rows,
        )
        if not written and rows is not None:
            log.debug("%s: %s already projected", stream, delivery.envelope.event_id)
        return written

    def start(self) -> None:
        """Start one consumer task per stream."""
        for stream in self.streams:
            self._writing[stream] = asyncio.Lock()
            task = asyncio.create_task(self._run_stream(stream), name=f"projection-{stream}")
            self._tasks[stream] = task

    async def stop(self) -> None:
        """Stop every consumer, letting the event it is writing commit first."""
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

    async def _run_stream(self, stream: str) -> None:
        durable = durable_name(self.consumer, stream)
        while not self._stopping.is_set():
            run_stop = asyncio.Event()
            self._run_stops[stream] = run_stop
            failed = False

            async def handler(delivery: Delivery, run_stop=run_stop) -> None:
                nonlocal failed
                if failed:
                    # The consumer restarts at the stored position, so nothing skipped here is lost.
                    return
                try:
                    async with self._writing[stream]:
                        await self.handle(stream, delivery)
                except Exception:
                    # Stop and resume from the store: a later event must not commit a position
                    # beyond one that was never written.
                    failed = True
                    run_stop.set()
                    raise

            try:
                start = await self.store.position(self.consumer, stream) + 1
                log.info("projecting %s from sequence %d", stream, start)
                await self.bus.consume(stream, durable, handler, start_sequence=start, stop=run_stop)
            except Exception as exc:
                failed = True
                log.warning("consumer %s stopped: %r", durable, exc)
            if not failed:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.restart_delay_seconds)
