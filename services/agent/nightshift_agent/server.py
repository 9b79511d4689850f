"""The Agent gRPC service: accepts tasks, runs the fix loop on the model, publishes every attempt."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from nightshift.bus import Delivery, EventBus
from nightshift.corpus import Corpus
from nightshift.grpcserver import Server, abort_invalid, client_channel, create_server
from nightshift.models import ModelError, ModelStore
from nightshift.v1 import agent_pb2, agent_pb2_grpc, events_pb2, sandbox_pb2, sandbox_pb2_grpc

from nightshift_agent.adapters import AdapterDirectory, AdapterError
from nightshift_agent.config import MAX_ATTEMPTS_LIMIT, AgentConfig
from nightshift_agent.loop import run_fix_loop
from nightshift_agent.prompts import FixTask
from nightshift_agent.runtime import ModelPool, QueueFullError
from nightshift_agent.tasks import TaskRecord, episode_of

log = logging.getLogger("nightshift.agent")
S = sandbox_pb2
A = agent_pb2
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
MODES = (S.MODE_BUILD, S.MODE_TEST, S.MODE_CLIPPY)


class PoolGenerator:
    """The fix loop's Generator over the shared pool, for one (model, adapter)."""

    def __init__(self, pool: ModelPool, model_path: Path, adapter_path: Path | None):
        self.pool = pool
        self.model_path = model_path
        self.adapter_path = adapter_path
        self._vocab = _vocabulary(str(model_path))

    async def generate(self, messages, *, max_tokens: int, temperature: float, seed: int):
        return await self.pool.generate(
            self.model_path,
            self.adapter_path,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._vocab.tokenize(text.encode(), add_bos=False, special=False))


@functools.lru_cache(maxsize=4)
def _vocabulary(model_path: str):
    """A vocabulary-only llama.cpp instance: exact token counts for prompt budgets, no weights loaded."""
    from llama_cpp import Llama

    return Llama(model_path=model_path, vocab_only=True, verbose=False)


class Champion:
    """The adapter the trainer's registry last promoted (None = the base model), from ADAPTERS events."""

    def __init__(self) -> None:
        self.adapter_id: str | None = None

    async def apply(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, events_pb2.AdapterPromoted):
            self.adapter_id = event.adapter_id or None
            log.info("champion is now %s", self.adapter_id or "the base model")
        elif isinstance(event, events_pb2.AdapterRolledBack):
            self.adapter_id = event.to_adapter_id or None
            log.info("rolled back: champion is now %s", self.adapter_id or "the base model")


class AgentServicer(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        config: AgentConfig,
        bus: EventBus,
        corpus: Corpus,
        pool: ModelPool,
        sandbox: sandbox_pb2_grpc.SandboxStub,
        champion: Champion,
    ):
        self.config = config
        self.bus = bus
        self.corpus = corpus
        self.pool = pool
        self.sandbox = sandbox
        self.champion = champion
        self.models = ModelStore()
        self.adapters = AdapterDirectory(config.adapters_dir)
        self.tasks: dict[str, TaskRecord] = {}

    # --- requests ----------------------------------------------------------------------------

    async def SubmitTask(self, request, context):
        record = await self._validate(request, context)
        running = sum(1 for r in self.tasks.values() if not r.done)
        if running > self.config.queue_size:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"agent busy: {running} tasks waiting for the model"
            )
        koan = record.koan
        await self.bus.publish(
            events_pb2.TaskSubmitted(
                task_id=record.task.task_id,
                request=record.request,
                koan_set=koan.split if koan else "user",
                family=koan.family if koan else "",
            ),
            correlation_id=request.correlation_id or request.run_id,
        )
        self._start(record)
        return A.SubmitTaskResponse(task_id=record.task.task_id)

    async def _validate(self, request, context) -> TaskRecord:
        if bool(request.koan_id) == bool(request.source.strip()):
            await abort_invalid(context, "koan_id", "give exactly one of koan_id or source")
        if request.max_attempts > MAX_ATTEMPTS_LIMIT:
            await abort_invalid(context, "max_attempts", f"at most {MAX_ATTEMPTS_LIMIT}")
        if request.mode and request.mode not in MODES:
            await abort_invalid(context, "mode", f"unknown mode {request.mode}")
        if request.edition and request.edition not in ("2021", "2024"):
            await abort_invalid(context, "edition", "must be 2021 or 2024")
        for name in ("source", "tests"):
            if len(getattr(request, name).encode()) > self.config.max_source_bytes:
                await abort_invalid(context, name, f"larger than {self.config.max_source_bytes} bytes")
        model = request.model or self.config.model
        try:
            self.models.spec(model)
        except ModelError as exc:
            await abort_invalid(context, "model", str(exc))
        adapter_id = await self._adapter_for(request.adapter_id, context)
        koan = None
        if request.koan_id:
            try:
                koan = self.corpus.get(request.koan_id)
            except KeyError:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"koan_id: no koan {request.koan_id!r}")
        resolved = A.SubmitTaskRequest()
        resolved.CopyFrom(request)
        resolved.model = model
        resolved.adapter_id = adapter_id or "none"
        resolved.max_attempts = request.max_attempts or self.config.max_attempts
        task = A.Task(
            task_id=str(uuid.uuid4()),
            state=A.TASK_QUEUED,
            koan_id=request.koan_id,
            adapter_id=resolved.adapter_id,
            model=model,
            run_id=request.run_id,
        )
        return self._record(task, resolved, koan)

    def _record(self, task: A.Task, request: A.SubmitTaskRequest, koan) -> TaskRecord:
        mode = request.mode or S.MODE_TEST
        if koan is not None:
            source, tests, edition = koan.broken, koan.tests, koan.edition
            mode = S.MODE_BUILD if koan.mode == "build" else mode
        else:
            source, tests, edition = request.source, request.tests, request.edition or "2021"
        record = TaskRecord(
            task=task, request=request, source=source, tests=tests, mode=mode, edition=edition, koan=koan
        )
        self.tasks[task.task_id] = record
        return record

    async def _adapter_for(self, requested: str, context) -> str | None:
        """The adapter id a request runs on: its own, the champion (""), or none ("none")."""
        if requested == "none":
            return None
        adapter_id = requested or self.champion.adapter_id
        if adapter_id is None:
            return None
        try:
            self.adapters.inspect(adapter_id)
        except AdapterError as exc:
            if not requested:  # a champion we cannot load: serve the base model, loudly
                log.error("champion adapter %s unavailable (%s): serving the base model", adapter_id, exc)
                return None
            await context.abort(grpc.StatusCode.NOT_FOUND, f"adapter_id: {exc}")
        return adapter_id

    async def GetTask(self, request, context):
        return A.GetTaskResponse(task=(await self._find(request.task_id, context)).task)

    async def GetEpisode(self, request, context):
        record = await self._find(request.task_id, context)
        if not record.done:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"task_id: task {request.task_id} is still running"
            )
        return A.GetEpisodeResponse(episode=episode_of(record.task))

    async def WatchTask(self, request, context):
        record = await self._find(request.task_id, context)
        async for update in record.watch():
            yield update

    async def CancelTask(self, request, context):
        record = await self._find(request.task_id, context)
        if not record.done and record.runner is not None:
            record.runner.cancel()
            await asyncio.gather(record.runner, return_exceptions=True)
        return A.CancelTaskResponse(task=record.task)

    async def ListModels(self, request, context):
        infos = []
        for location in self.models.list():
            spec = self.models.spec(location.name)
            infos.append(
                A.ModelInfo(
                    name=location.name,
                    path=str(location.path or ""),
                    available=location.path is not None,
                    size_bytes=spec.size,
                    sha256=spec.sha256,
                    source=location.source,
                )
            )
        return A.ListModelsResponse(models=infos)

    async def ListAdapters(self, request, context):
        loaded = {key.adapter_path for key in self.pool.loaded() if key.adapter_path is not None}
        champion = self.champion.adapter_id or ""
        usable, _unusable = await asyncio.to_thread(self.adapters.list)
        adapters = [
            A.ServedAdapter(
                adapter_id=info.adapter_id,
                path=str(info.path),
                loaded=info.path in loaded,
                champion=info.adapter_id == champion,
            )
            for info in usable
        ]
        return A.ListServedAdaptersResponse(adapters=adapters, champion_adapter_id=champion)

    async def _find(self, task_id: str, context) -> TaskRecord:
        if not task_id:
            await abort_invalid(context, "task_id", "is required")
        record = self.tasks.get(task_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task_id: no task {task_id!r}")
        return record

    # --- running -----------------------------------------------------------------------------

    def _start(self, record: TaskRecord) -> None:
        record.runner = asyncio.create_task(self._run(record), name=f"task-{record.task.task_id}")

    async def _run(self, record: TaskRecord) -> None:
        task, request = record.task, record.request
        correlation = request.correlation_id or request.run_id
        record.task.state = A.TASK_RUNNING
        try:
            model_path = await asyncio.to_thread(self.models.resolve, task.model)
            adapter_path = self.adapters.resolve(task.adapter_id)
            generator = PoolGenerator(self.pool, model_path, adapter_path)
            fix = FixTask(
                source=record.source,
                tests=record.tests,
                hint=record.koan.hint if record.koan else "",
                mode=record.mode,
                edition=record.edition,
                koan_id=task.koan_id,
                task_id=task.task_id,
                correlation_id=correlation,
            )

            async def on_attempt(attempt: A.Attempt) -> None:
                await self.bus.publish(
                    events_pb2.AttemptRecorded(
                        task_id=task.task_id,
                        koan_id=task.koan_id,
                        attempt=attempt,
                        adapter_id=task.adapter_id,
                        model=task.model,
                        run_id=task.run_id,
                    ),
                    correlation_id=correlation,
                    causation_id=task.task_id,
                )
                await record.add_attempt(attempt)

            result = await run_fix_loop(
                fix,
                generator,
                self.sandbox,
                max_attempts=request.max_attempts,
                seed=request.seed,
                on_attempt=on_attempt,
                previous_attempts=list(task.attempts),
                context_tokens=self.config.n_ctx,
                max_resamples=self.config.max_resamples,
            )
            await record.finish(A.TASK_PASSED if result.passed else A.TASK_FAILED)
        except asyncio.CancelledError:
            await record.finish(A.TASK_CANCELLED, "cancelled")
        except QueueFullError as exc:
            await record.finish(A.TASK_FAILED, f"model queue full: {exc}")
        except Exception as exc:  # the task fails with a reason; the service keeps serving
            log.exception("task %s failed", task.task_id)
            await record.finish(A.TASK_FAILED, f"{type(exc).__name__}: {exc}")
        episode = episode_of(task)
        await self.bus.publish(
            events_pb2.EpisodeCompleted(
                task_id=task.task_id,
                koan_id=task.koan_id,
                passed=episode.passed,
                steps=episode.attempts_used,
                error_codes=episode.error_codes,
                adapter_id=task.adapter_id,
                model=task.model,
                run_id=task.run_id,
                state=task.state,
                final_code=episode.final_code,
                koan_set=record.koan.split if record.koan else "user",
                family=record.koan.family if record.koan else "",
                first_error_code=episode.first_error_code,
                last_error_code=episode.last_error_code,
                repeated_error=episode.repeated_error,
                correlation_id=correlation,
            ),
            correlation_id=correlation,
            causation_id=task.task_id,
        )
        log.info(
            "task %s: %s after %d attempt(s)", task.task_id, A.TaskState.Name(task.state), len(task.attempts)
        )

    async def resume_unfinished(self) -> int:
        """Resume every TaskSubmitted without an EpisodeCompleted, keeping the attempts it recorded."""
        submitted: dict[str, events_pb2.TaskSubmitted] = {}
        attempts: dict[str, list[A.Attempt]] = {}
        finished: set[str] = set()
        for delivery in await self.bus.read_all("EPISODES"):
            event = delivery.event
            if isinstance(event, events_pb2.TaskSubmitted):
                submitted[event.task_id] = event
            elif isinstance(event, events_pb2.AttemptRecorded):
                attempts.setdefault(event.task_id, []).append(event.attempt)
            elif isinstance(event, events_pb2.EpisodeCompleted):
                finished.add(event.task_id)
        resumed = 0
        for task_id, event in submitted.items():
            if task_id in finished or task_id in self.tasks:
                continue
            request = event.request
            koan = None
            if request.koan_id:
                try:
                    koan = self.corpus.get(request.koan_id)
                except KeyError:
                    log.error("cannot resume task %s: koan %s is gone", task_id, request.koan_id)
                    continue
            task = A.Task(
                task_id=task_id,
                state=A.TASK_QUEUED,
                koan_id=request.koan_id,
                adapter_id=request.adapter_id,
                model=request.model,
                run_id=request.run_id,
                attempts=attempts.get(task_id, []),
            )
            record = self._record(task, request, koan)
            self._start(record)
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished task(s)", resumed)
        return resumed

    async def close(self) -> None:
        runners = [r.runner for r in self.tasks.values() if r.runner and not r.runner.done()]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)


@dataclass
class RunningAgent:
    server: Server
    servicer: AgentServicer
    bus: EventBus
    channel: grpc.aio.Channel
    champion_stop: asyncio.Event
    champion_task: asyncio.Task

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 30.0) -> None:
        await self.server.stop(grace)
        await self.close_backends()

    async def close_backends(self) -> None:
        self.champion_stop.set()
        await asyncio.gather(self.champion_task, return_exceptions=True)
        await self.servicer.close()
        await self.channel.close()
        await self.bus.close()


async def start(config: AgentConfig, *, resume: bool = True) -> RunningAgent:
    """Connect to the bus and the sandbox, follow the champion, resume unfinished tasks, serve."""
    bus = await EventBus.connect(config.nats_url, name="agent")
    channel = client_channel(config.sandbox_addr)
    champion = Champion()
    champion_stop = asyncio.Event()
    champion_task = asyncio.create_task(
        bus.consume("ADAPTERS", "agent-champion", champion.apply, stop=champion_stop)
    )
    pool = ModelPool(
        max_instances=config.max_loaded,
        queue_size=config.queue_size,
        n_ctx=config.n_ctx,
        n_threads=config.n_threads,
    )
    servicer = AgentServicer(
        config, bus, Corpus.load(), pool, sandbox_pb2_grpc.SandboxStub(channel), champion
    )
    server = create_server(
        config.addr, [(agent_pb2_grpc.add_AgentServicer_to_server, servicer, SERVICE_NAME)]
    )
    await server.start()
    if resume:
        await servicer.resume_unfinished()
    return RunningAgent(server, servicer, bus, channel, champion_stop, champion_task)
