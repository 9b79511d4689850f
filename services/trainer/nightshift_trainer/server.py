"""The trainer's gRPC server: jobs, mixes and the adapter registry, with its event consumers.

Beside the server run: the episode consumer (EPISODES -> the trainer's own SQLite store), the gate
consumer (GateDecided -> promote or reject the candidate) and the job worker (one job at a time).
On start the registry and the job book are rebuilt from the ADAPTERS and TRAINING streams, and every
job that never ended is queued again (it resumes from its last checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from nightshift.bus import Delivery, EventBus
from nightshift.corpus import Corpus
from nightshift.grpcserver import Server, abort_invalid, create_server, serve_until_signal
from nightshift.models import ModelError, ModelStore
from nightshift.v1 import events_pb2, trainer_pb2, trainer_pb2_grpc

from nightshift_trainer import jobs as J
from nightshift_trainer.config import TrainerConfig
from nightshift_trainer.episodes import EpisodeConsumer, EpisodeStore
from nightshift_trainer.examples import Example
from nightshift_trainer.presets import PRESETS, default_preset_name, resolve_preset
from nightshift_trainer.recipes import RECIPES, Mix, MixError, build_mix, build_mix_response
from nightshift_trainer.registry import Registry, RegistryError, UnknownAdapterError

T = trainer_pb2
log = logging.getLogger("nightshift.trainer")
SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, config: TrainerConfig, bus: EventBus, episodes: EpisodeStore, corpus: Corpus):
        self.config = config
        self.bus = bus
        self.episodes = episodes
        self.corpus = corpus
        self.registry = Registry()
        self.book = J.JobBook()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.models = ModelStore()
        self.consumer: EpisodeConsumer | None = None
        self._lock = asyncio.Lock()

    # --- events --------------------------------------------------------------------------------

    async def publish(self, event, *, correlation_id: str = "", causation_id: str = "") -> str:
        """Publish an event the trainer owns, then fold it into its own state."""
        envelope = await self.bus.publish(event, correlation_id=correlation_id, causation_id=causation_id)
        if isinstance(
            event,
            (
                events_pb2.AdapterTrained,
                events_pb2.AdapterPromoted,
                events_pb2.AdapterRejected,
                events_pb2.AdapterRolledBack,
            ),
        ):
            self.registry.apply(envelope.event_id, event)
        else:
            self.book.apply(event, correlation_id)
        return envelope.event_id

    async def rebuild(self) -> None:
        """Fold the ADAPTERS and TRAINING streams; queue every job that never ended."""
        for delivery in await self.bus.read_all("ADAPTERS"):
            self.registry.apply(delivery.envelope.event_id, delivery.event)
        for delivery in await self.bus.read_all("TRAINING"):
            self.book.apply(delivery.event, delivery.envelope.correlation_id)
        for record in self.book.unfinished():
            log.info("job %s never ended: queued again", record.job.job_id)
            self.queue.put_nowait(record.job.job_id)

    # --- mixes and jobs ------------------------------------------------------------------------

    async def _mix(self, spec: T.MixSpec, seed: int, context) -> Mix:
        if spec.recipe not in RECIPES:
            await abort_invalid(
                context, "mix.recipe", f"unknown recipe {spec.recipe!r}; known: {', '.join(RECIPES)}"
            )
        base = spec.base_adapter_id
        if not base:
            champion = self.registry.champion(self.config.model)
            base = champion.adapter_id if champion else ""
        if self.consumer is not None:
            # Read your writes: the mix sees every episode on the stream when the request came in.
            try:
                await self.consumer.catch_up(timeout_seconds=60.0)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "episodes: the trainer is still catching up with the stream"
                )
        episodes = await asyncio.to_thread(self.episodes.episodes)
        try:
            return build_mix(
                spec.recipe, dict(spec.parameters), episodes, self.corpus, base_adapter_id=base, seed=seed
            )
        except MixError as exc:
            await abort_invalid(context, "mix.parameters", str(exc))

    async def BuildMix(self, request, context):
        return build_mix_response(await self._mix(request.mix, 0, context))

    async def StartJob(self, request, context):
        preset_name = request.preset or ("dpo" if request.mix.recipe == "dpo" else default_preset_name())
        if preset_name not in PRESETS:
            await abort_invalid(
                context, "preset", f"unknown preset {preset_name!r}; known: {', '.join(PRESETS)}"
            )
        try:
            preset = resolve_preset(preset_name, dict(request.overrides))
        except ValueError as exc:
            await abort_invalid(context, "overrides", str(exc))
        if (preset.method == "dpo") != (request.mix.recipe == "dpo"):
            await abort_invalid(
                context,
                "preset",
                f"preset {preset.name} trains {preset.method}, recipe {request.mix.recipe!r} does not",
            )
        model = request.model or self.config.model
        try:
            self.models.spec(model)
        except (KeyError, ModelError) as exc:
            await abort_invalid(context, "model", str(exc))
        mix = await self._mix(request.mix, request.seed, context)
        if not mix.examples:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"mix.recipe: {request.mix.recipe} found no training examples "
                f"({mix.excluded_count} excluded: {dict(mix.excluded_by_reason)}); work the train pool first",
            )
        job_id = str(uuid.uuid4())
        J.write_examples(J.job_dir(self.config.jobs_dir, job_id) / "examples.json", list(mix.examples))
        event = events_pb2.TrainingJobRequested(
            job_id=job_id,
            preset=preset.name,
            example_ids=[e.example_id for e in mix.examples],
            data_hash=mix.data_hash,
            excluded_count=mix.excluded_count,
            model=model,
            seed=request.seed,
        )
        event.mix.CopyFrom(request.mix)
        event.mix.parameters.clear()
        for key, value in mix.parameters.items():
            event.mix.parameters[key] = value
        for key, value in preset.as_fields().items():
            event.preset_fields[key] = value
        for reason, count in mix.excluded_by_reason.items():
            event.excluded_by_reason[reason] = count
        await self.publish(event, correlation_id=request.correlation_id)
        self.queue.put_nowait(job_id)
        log.info(
            "job %s queued: %s, %d examples, preset %s", job_id, mix.recipe, len(mix.examples), preset.name
        )
        return T.StartJobResponse(job_id=job_id)

    async def _record(self, job_id: str, context) -> J.JobRecord:
        record = self.book.jobs.get(job_id)
        if record is None:
            if not job_id:
                await abort_invalid(context, "job_id", "required")
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
        return record

    async def GetJob(self, request, context):
        return T.GetJobResponse(job=(await self._record(request.job_id, context)).job)

    async def WatchJob(self, request, context):
        record = await self._record(request.job_id, context)
        while True:
            changed = record.changed
            yield T.WatchJobResponse(job=record.job)
            if record.done:
                return
            await changed.wait()

    async def CancelJob(self, request, context):
        record = await self._record(request.job_id, context)
        if record.done:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job_id: job {request.job_id} already ended ({T.JobState.Name(record.job.state)})",
            )
        record.cancel.set()
        if not record.started:
            # Not running yet: the worker skips it once it sees the event.
            await self.publish(
                events_pb2.TrainingJobCancelled(job_id=request.job_id, reason="cancelled before it started")
            )
        return T.CancelJobResponse(job=record.job)

    # --- registry ------------------------------------------------------------------------------

    async def ListAdapters(self, request, context):
        return T.ListAdaptersResponse(adapters=self.registry.listing())

    async def GetChampion(self, request, context):
        adapter = self.registry.champion(request.model or self.config.model)
        return T.GetChampionResponse(adapter=adapter) if adapter else T.GetChampionResponse()

    async def _registry_call(self, context, make, *args):
        async with self._lock:
            try:
                event = make(*args)
            except UnknownAdapterError as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"adapter_id: {exc}")
            except RegistryError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            await self.publish(event)
            return event

    async def PromoteAdapter(self, request, context):
        if not request.adapter_id:
            await abort_invalid(context, "adapter_id", "required")
        reason = request.reason or "promoted by hand"
        await self._registry_call(
            context, self.registry.promotion, request.adapter_id, reason, request.gate_decision_id
        )
        return T.PromoteAdapterResponse(adapter=self.registry.get(request.adapter_id))

    async def RejectAdapter(self, request, context):
        if not request.adapter_id:
            await abort_invalid(context, "adapter_id", "required")
        reason = request.reason or "rejected by hand"
        await self._registry_call(
            context, self.registry.rejection, request.adapter_id, reason, request.gate_decision_id
        )
        return T.RejectAdapterResponse(adapter=self.registry.get(request.adapter_id))

    async def RollbackAdapter(self, request, context):
        model = request.model or self.config.model
        event = await self._registry_call(
            context, self.registry.rollback, model, request.reason or "rolled back by hand"
        )
        champion = self.registry.get(event.to_adapter_id) if event.to_adapter_id else None
        return T.RollbackAdapterResponse(champion=champion) if champion else T.RollbackAdapterResponse()

    async def on_gate(self, delivery: Delivery) -> None:
        """GateDecided -> promote or reject its candidate (once; a decided adapter is left alone)."""
        if not isinstance(delivery.event, events_pb2.GateDecided):
            return
        decision = delivery.event.decision
        adapter = self.registry.adapters.get(decision.adapter_id)
        if adapter is None or adapter.state != T.ADAPTER_CANDIDATE:
            return
        reason = "; ".join(decision.reasons) or decision.reason
        async with self._lock:
            if decision.promote:
                event = self.registry.promotion(decision.adapter_id, reason, decision.decision_id)
            else:
                event = self.registry.rejection(decision.adapter_id, reason, decision.decision_id)
            await self.publish(
                event,
                correlation_id=delivery.envelope.correlation_id,
                causation_id=delivery.envelope.event_id,
            )
        log.info(
            "gate %s: %s %s",
            decision.decision_id,
            "promoted" if decision.promote else "rejected",
            decision.adapter_id,
        )

    # --- the worker ----------------------------------------------------------------------------

    async def work(self) -> None:
        """Run queued jobs one at a time, forever."""
        while True:
            job_id = await self.queue.get()
            record = self.book.jobs.get(job_id)
            if record is None or record.done:
                continue
            try:
                await self.run_job(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("job %s failed", job_id)
                await self.publish(
                    events_pb2.TrainingJobFailed(job_id=job_id, error=f"{type(exc).__name__}: {exc}"),
                    correlation_id=record.job.correlation_id,
                )
            # A transformers + PEFT model is full of reference cycles: without a full collection the
            # job's model (about 5 GiB for the 0.5B in float32, with its optimizer) outlives it, and the
            # next job of a cycle run would hold two.
            gc.collect()

    async def run_job(self, record: J.JobRecord) -> None:
        from nightshift_trainer import pipeline

        job = record.job
        corr = job.correlation_id
        work_dir = J.job_dir(self.config.jobs_dir, job.job_id)
        examples: list[Example] = J.read_examples(work_dir / "examples.json")
        existing = next((a for a in self.registry.listing() if a.job_id == job.job_id), None)
        if existing is not None:
            # The adapter was registered before a restart cut the job short: only the end is missing.
            await self.publish(
                events_pb2.TrainingJobCompleted(job_id=job.job_id, adapter_id=existing.adapter_id),
                correlation_id=corr,
            )
            return
        preset = resolve_preset(record.request.preset, dict(record.request.preset_fields))
        model_path = await asyncio.to_thread(self.models.resolve, record.request.model or self.config.model)
        loop = asyncio.get_running_loop()
        throttle = J.ProgressThrottle()
        resumed = record.started
        await self.publish(
            events_pb2.TrainingJobStarted(
                job_id=job.job_id, device=pipeline.device_name(), resumed=resumed, from_step=job.progress.step
            ),
            correlation_id=corr,
        )

        def on_progress(progress) -> None:
            if not throttle.due(progress.step, progress.total_steps):
                return
            event = events_pb2.TrainingJobProgressed(
                job_id=job.job_id,
                progress=T.JobProgress(
                    step=progress.step,
                    total_steps=progress.total_steps,
                    loss=progress.loss,
                    tokens_per_second=progress.tokens_per_second,
                    eta_seconds=progress.eta_seconds,
                ),
            )
            asyncio.run_coroutine_threadsafe(self.publish(event, correlation_id=corr), loop).result()

        champion = self.registry.champion(record.request.model or self.config.model)
        adapter_id = f"{record.request.mix.recipe}-{job.job_id[:8]}"
        try:
            outcome = await asyncio.to_thread(
                pipeline.train_export_verify,
                model_path=model_path,
                examples=examples,
                preset=preset,
                work_dir=work_dir / "work",
                adapter_path=self.config.adapters_dir / adapter_id / "adapter.gguf",
                on_progress=on_progress,
                should_stop=record.cancel.is_set,
                threads=self.config.threads,
                verify=self.config.verify,
            )
        except pipeline.TrainingCancelled:
            await self.publish(
                events_pb2.TrainingJobCancelled(job_id=job.job_id, reason="cancelled"), correlation_id=corr
            )
            return
        if outcome.verification is not None and not outcome.verification.passed:
            shutil.rmtree(self.config.adapters_dir / adapter_id, ignore_errors=True)
            await self.publish(
                events_pb2.TrainingJobFailed(
                    job_id=job.job_id,
                    error=f"the exported adapter failed verification: {outcome.verification.detail}",
                ),
                correlation_id=corr,
            )
            return
        adapter = T.Adapter(
            adapter_id=adapter_id,
            state=T.ADAPTER_CANDIDATE,
            model=record.request.model or self.config.model,
            gguf_path=str(outcome.adapter_path),
            job_id=job.job_id,
            sha256=J.sha256_file(outcome.adapter_path),
            parent_adapter_id=champion.adapter_id if champion else "",
            recipe=record.request.mix.recipe,
            data_hash=record.request.data_hash,
            preset=preset.name,
        )
        for key, value in outcome.metrics().items():
            adapter.metrics[key] = value
        if outcome.verification is not None:
            adapter.verification.CopyFrom(outcome.verification)
        await self.publish(events_pb2.AdapterTrained(adapter=adapter), correlation_id=corr)
        await self.publish(
            events_pb2.TrainingJobCompleted(
                job_id=job.job_id,
                adapter_id=adapter_id,
                train_seconds=outcome.train.train_seconds,
                train_tokens=outcome.train.train_tokens,
                final_loss=outcome.train.final_loss,
            ),
            correlation_id=corr,
        )
        log.info("job %s: adapter %s registered as a candidate", job.job_id, adapter_id)


@dataclass
class RunningTrainer:
    config: TrainerConfig
    server: Server
    servicer: TrainerServicer
    bus: EventBus
    episodes: EpisodeStore
    consumer: EpisodeConsumer
    tasks: list[asyncio.Task]
    gate_stop: asyncio.Event

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)
        await self.close_backends()

    async def close_backends(self) -> None:
        for record in self.servicer.book.jobs.values():
            record.cancel.set()
        self.gate_stop.set()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.consumer.stop()
        await self.bus.close()
        await asyncio.to_thread(self.episodes.close)


async def start(config: TrainerConfig) -> RunningTrainer:
    """Open the store, rebuild state from events, start the consumers, the worker and the server."""
    config.store_dir.mkdir(parents=True, exist_ok=True)
    episodes = await asyncio.to_thread(EpisodeStore.open, config.episodes_path)
    bus = await EventBus.connect(config.nats_url, "trainer")
    servicer = TrainerServicer(config, bus, episodes, Corpus.load())
    await servicer.rebuild()
    consumer = EpisodeConsumer(episodes, bus)
    consumer.start()
    servicer.consumer = consumer
    gate_stop = asyncio.Event()
    last = await bus.stream_last_sequence("EVALUATION")
    for delivery in await bus.read_all("EVALUATION", "evaluation.gate.decided"):
        await servicer.on_gate(delivery)
    tasks = [
        asyncio.create_task(
            bus.consume(
                "EVALUATION",
                "trainer-gate",
                servicer.on_gate,
                start_sequence=last + 1,
                subject="evaluation.gate.decided",
                stop=gate_stop,
            ),
            name="trainer-gate",
        ),
        asyncio.create_task(servicer.work(), name="trainer-worker"),
    ]
    server = create_server(
        config.addr, [(trainer_pb2_grpc.add_TrainerServicer_to_server, servicer, SERVICE_NAME)]
    )
    await server.start()
    return RunningTrainer(config, server, servicer, bus, episodes, consumer, tasks, gate_stop)


async def serve(config: TrainerConfig) -> None:
    running = await start(config)
    log.info("trainer listening on %s (store %s)", running.port, config.store_dir)
    await serve_until_signal(running.server, on_stop=running.close_backends)


def adapters_path(config: TrainerConfig, adapter_id: str) -> Path:
    return config.adapters_dir / adapter_id / "adapter.gguf"
