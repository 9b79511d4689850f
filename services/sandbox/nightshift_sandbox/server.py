"""The Sandbox gRPC service: validates requests, runs checks in a bounded pool, publishes CheckCompleted."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass

import grpc
from nightshift.bus import BusUnavailableError, EventBus
from nightshift.grpcserver import (
    Server,
    UndecodableRequest,
    abort_invalid,
    create_server,
    lenient_deserializer,
)
from nightshift.v1 import events_pb2, sandbox_pb2

from nightshift_sandbox.backends import BACKEND_NAMES, make_backend
from nightshift_sandbox.backends.base import Backend
from nightshift_sandbox.checker import CheckInput, effective_limits, run_check
from nightshift_sandbox.config import SandboxConfig
from nightshift_sandbox.pool import CheckPool, PoolFullError

log = logging.getLogger("nightshift.sandbox")
S = sandbox_pb2
SERVICE_NAME = S.DESCRIPTOR.services_by_name["Sandbox"].full_name
EDITIONS = ("2021", "2024")
MODES = (S.MODE_BUILD, S.MODE_TEST, S.MODE_CLIPPY)


class InvalidRequest(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def validate(request: sandbox_pb2.CheckRequest, config: SandboxConfig) -> CheckInput:
    """Turn a request into a CheckInput, or raise InvalidRequest naming the bad field."""
    if not request.source.strip():
        raise InvalidRequest("source", "is required (the Rust program to check)")
    for name in ("source", "tests"):
        size = len(getattr(request, name).encode())
        if size > config.max_source_bytes:
            raise InvalidRequest(name, f"{size} bytes exceeds the limit of {config.max_source_bytes}")
    edition = request.edition or "2021"
    if edition not in EDITIONS:
        raise InvalidRequest("edition", f"must be one of {', '.join(EDITIONS)}, got {request.edition!r}")
    mode = request.mode or S.MODE_TEST
    if mode not in MODES:
        raise InvalidRequest("mode", f"unknown mode {request.mode} (expected build, test or clippy)")
    if request.backend and request.backend not in BACKEND_NAMES:
        raise InvalidRequest("backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {request.backend!r}")
    limits = request.limits
    ceiling = config.max_run_limits
    for name in ("cpu_seconds", "wall_seconds", "memory_bytes", "max_processes", "output_bytes"):
        value = getattr(limits, name)
        if isinstance(value, float) and (math.isnan(value) or value < 0):
            raise InvalidRequest(f"limits.{name}", f"must be a positive number, got {value}")
        if value > getattr(ceiling, name):
            raise InvalidRequest(f"limits.{name}", f"{value} exceeds the maximum {getattr(ceiling, name)}")
    return CheckInput(
        source=request.source,
        tests=request.tests,
        edition=edition,
        mode=mode,
        run_limits=effective_limits(limits, config.run_limits),
    )


class SandboxServicer:
    def __init__(self, config: SandboxConfig, bus: EventBus):
        self.config = config
        self.bus = bus
        self.pool = CheckPool(config.workers, config.queue_size)
        self._backends: dict[str, Backend] = {}
        self._unpublished: set[asyncio.Task] = set()

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(name, self.config.sysroot)
        return self._backends[name]

    async def Check(self, request, context: grpc.aio.ServicerContext) -> sandbox_pb2.CheckResponse:
        if isinstance(request, UndecodableRequest):
            await abort_invalid(context, request.field, request.problem)
        try:
            check = validate(request, self.config)
        except InvalidRequest as exc:
            await abort_invalid(context, exc.field, exc.problem)
        backend = self.backend(request.backend or self.config.backend)
        unavailable = await asyncio.to_thread(backend.available)
        if unavailable:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"backend {backend.name}: {unavailable}")
        try:
            verdict = await self.pool.run(
                lambda slot: run_check(
                    backend, self.config.work_root, slot, check, self.config.compile_limits
                )
            )
        except PoolFullError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"sandbox busy: {exc}")
        verdict.check_id = str(uuid.uuid4())
        event = events_pb2.CheckCompleted(
            check_id=verdict.check_id,
            mode=check.mode,
            edition=check.edition,
            backend=backend.name,
            source_sha256=verdict.source_sha256,
            source_bytes=len(request.source.encode()),
            has_tests=bool(request.tests.strip()),
            verdict=verdict,
            task_id=request.task_id,
        )
        await self._publish(event, request)
        log.info(
            "check %s: %s in %.2fs",
            verdict.check_id,
            S.CheckStatus.Name(verdict.status),
            verdict.total_seconds,
        )
        return S.CheckResponse(verdict=verdict)

    async def _publish(self, event: events_pb2.CheckCompleted, request: sandbox_pb2.CheckRequest) -> None:
        kwargs = dict(
            correlation_id=request.correlation_id,
            causation_id=request.causation_id,
            event_id=event.check_id,
        )
        try:
            await self.bus.publish(event, deadline_seconds=5.0, **kwargs)
        except BusUnavailableError:
            # The verdict is still valid; keep retrying in the background (the id de-duplicates).
            log.warning("check %s: broker unavailable, publishing in the background", event.check_id)
            task = asyncio.create_task(self.bus.publish(event, deadline_seconds=3600.0, **kwargs))
            self._unpublished.add(task)
            task.add_done_callback(self._unpublished.discard)

    async def close(self) -> None:
        if self._unpublished:
            await asyncio.wait(self._unpublished, timeout=10.0)
        self.pool.shutdown()


def _register(servicer: SandboxServicer, server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                servicer.Check,
                request_deserializer=lenient_deserializer(S.CheckRequest),
                response_serializer=S.CheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))


@dataclass
class SandboxService:
    """A running sandbox service (used by `serve` and by tests)."""

    server: Server
    servicer: SandboxServicer
    bus: EventBus

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 30.0) -> None:
        await self.server.stop(grace)
        await self.close_backends()

    async def close_backends(self) -> None:
        """What stays after the gRPC server stopped: background publishes, the pool, the bus."""
        await self.servicer.close()
        await self.bus.close()


async def start(config: SandboxConfig) -> SandboxService:
    """Connect to the bus, bind `config.addr` and start serving."""
    bus = await EventBus.connect(config.nats_url, name="sandbox")
    servicer = SandboxServicer(config, bus)
    server = create_server(config.addr, [(_register, servicer, SERVICE_NAME)])
    await server.start()
    return SandboxService(server, servicer, bus)
