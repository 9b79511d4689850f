"""The evaluator's gRPC server: queries, exports, evaluation runs, the gate, reports and the cycle saga,
with the projection consumers running beside it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from nightshift.bus import BusUnavailableError, EventBus
from nightshift.grpcserver import Server, abort_invalid, create_server, serve_until_signal
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc, events_pb2

from nightshift_evaluator import decisions
from nightshift_evaluator.config import EvaluatorConfig
from nightshift_evaluator.cycle import CycleSaga
from nightshift_evaluator.export import ExportFormatError, check_format, export_chunks
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.query import (
    QueryFailedError,
    QueryRefusedError,
    QueryTimedOutError,
    QueryTooLargeError,
    ReadOnlyQueries,
)
from nightshift_evaluator.runs import EvaluationRuns, RunRequestError
from nightshift_evaluator.store import ProjectionStore

log = logging.getLogger("nightshift.evaluator")

SERVICE_NAME = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Answers Query, Export, the evaluation runs, the gate, reports and the cycle saga."""

    def __init__(
        self,
        queries: ReadOnlyQueries,
        runs: EvaluationRuns | None = None,
        bus: EventBus | None = None,
        saga: CycleSaga | None = None,
    ):
        self.queries = queries
        self.runs = runs
        self.bus = bus
        self.saga = saga

    async def Query(self, request: evaluator_pb2.QueryRequest, context: grpc.aio.ServicerContext):
        timeout = self.queries.timeout_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(min(timeout, remaining), 0.001)
        try:
            return await self.queries.run(request.sql, max_rows=request.max_rows, timeout_seconds=timeout)
        except QueryRefusedError as exc:
            await abort_invalid(context, "sql", str(exc))
        except QueryTimedOutError as exc:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"sql: query {exc}")
        except QueryTooLargeError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"sql: {exc}")
        except QueryFailedError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"sql: {exc}")
        except Exception:
            log.exception("Query failed")
            await context.abort(grpc.StatusCode.INTERNAL, "query failed; the evaluator log has the details")

    async def StartEvaluation(self, request: evaluator_pb2.StartEvaluationRequest, context):
        try:
            run_id = await self.runs.start_run(request)
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))
        except BusUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"bus: {exc}")
        except Exception:
            log.exception("StartEvaluation failed")
            await context.abort(grpc.StatusCode.INTERNAL, "not started; the evaluator log says why")
        return evaluator_pb2.StartEvaluationResponse(run_id=run_id)

    async def GetEvaluation(self, request: evaluator_pb2.GetEvaluationRequest, context):
        try:
            return evaluator_pb2.GetEvaluationResponse(summary=self.runs.summary(request.run_id))
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))

    async def WatchEvaluation(self, request: evaluator_pb2.WatchEvaluationRequest, context):
        try:
            async for update in self.runs.watch(request.run_id):
                yield update
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))

    async def DecideGate(self, request: evaluator_pb2.DecideGateRequest, context):
        """The gate on finished runs; the decision is published as GateDecided for the registry."""
        try:
            decision = decisions.decide(self.runs.find, request)
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))
        await self.bus.publish(
            events_pb2.GateDecided(decision=decision),
            correlation_id=request.correlation_id,
            event_id=decision.decision_id,
        )
        return evaluator_pb2.DecideGateResponse(decision=decision)

    async def GetReport(self, request: evaluator_pb2.GetReportRequest, context):
        try:
            if request.compare_cycle_ids and not request.cycle_id:
                raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "compare_cycle_ids", "needs cycle_id")
            cycles = [self.saga.curve(request.cycle_id, "cycle_id")] if request.cycle_id else []
            cycles += [self.saga.curve(c, "compare_cycle_ids") for c in request.compare_cycle_ids]
            files = await asyncio.to_thread(decisions.build_report, self.runs.find, request, cycles)
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))
        return evaluator_pb2.GetReportResponse(
            files=[evaluator_pb2.ReportFile(name=name, content=data) for name, data in files.items()],
            markdown=files["report.md"].decode(),
        )

    async def StartCycle(self, request: evaluator_pb2.StartCycleRequest, context):
        try:
            cycle_id = await self.saga.start_cycle(request)
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))
        return evaluator_pb2.StartCycleResponse(cycle_id=cycle_id)

    async def GetCycle(self, request: evaluator_pb2.GetCycleRequest, context):
        try:
            return evaluator_pb2.GetCycleResponse(status=self.saga.find(request.cycle_id).status())
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))

    async def RetryCycle(self, request: evaluator_pb2.RetryCycleRequest, context):
        try:
            cycle = await self.saga.retry_cycle(request.cycle_id)
        except RunRequestError as exc:
            await context.abort(exc.code, str(exc))
        return evaluator_pb2.RetryCycleResponse(status=cycle.status())

    async def Export(self, request: evaluator_pb2.ExportRequest, context: grpc.aio.ServicerContext):
        """A consistent snapshot of every table and view, as files streamed in chunks of at most 1 MiB."""
        try:
            fmt = check_format(request.format)
        except ExportFormatError as exc:
            await abort_invalid(context, "format", str(exc))
        try:
            async for chunk in export_chunks(self.queries.store, fmt):
                yield chunk
        except Exception:
            log.exception("Export failed")
            await context.abort(grpc.StatusCode.INTERNAL, "export failed; the evaluator log has the details")


@dataclass
class RunningEvaluator:
    """A started evaluator: its gRPC server, store, bus connection and projection consumers."""

    config: EvaluatorConfig
    server: Server
    store: ProjectionStore
    bus: EventBus
    projector: Projector
    queries: ReadOnlyQueries
    runs: EvaluationRuns | None = None
    saga: CycleSaga | None = None
    _serving: bool = field(default=True, init=False)
    _open: bool = field(default=True, init=False)

    @property
    def addr(self) -> str:
        host = self.config.addr.rsplit(":", 1)[0]
        return f"{host}:{self.server.port}"

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop serving (in-flight calls finish within the grace), then stop projecting and close."""
        if self._serving:
            self._serving = False
            if self.runs is not None:
                self.runs.release_watchers()
            await self.server.stop(grace_seconds)
        await self.close_backends()

    async def close_backends(self) -> None:
        """Stop the projections, then close the bus and the store (once; later calls do nothing)."""
        if not self._open:
            return
        self._open = False
        await self.projector.stop()
        if self.saga is not None:
            await self.saga.stop()
        if self.runs is not None:
            await self.runs.stop()
        await self.bus.close()
        await self.queries.close()
        await self.store.close()


async def start(config: EvaluatorConfig) -> RunningEvaluator:
    """Open the store, connect the bus, start the projections and the gRPC server.

    With `config.addr` "127.0.0.1:0" the server picks a free port (see `.addr`).
    """
    store = await ProjectionStore.open(config.db_path)
    try:
        bus = await EventBus.connect(config.nats_url, "evaluator")
    except BaseException:
        await store.close()
        raise
    queries = ReadOnlyQueries(
        store,
        max_rows=config.query_max_rows,
        timeout_seconds=config.query_timeout_seconds,
        max_bytes=config.query_max_bytes,
    )
    projector = Projector(store, bus)
    runs = EvaluationRuns(bus, config.agent_addr, corpus_dir=config.corpus_dir, window=config.submit_window)
    saga = CycleSaga(bus, runs, trainer_addr=config.trainer_addr, agent_addr=config.agent_addr)
    try:
        await runs.start()
        await saga.start()
        server = create_server(
            config.addr,
            [
                (
                    evaluator_pb2_grpc.add_EvaluatorServicer_to_server,
                    EvaluatorServicer(queries, runs, bus, saga),
                    SERVICE_NAME,
                )
            ],
        )
        await server.start()
    except BaseException:
        await saga.stop()
        await runs.stop()
        await bus.close()
        await queries.close()
        await store.close()
        raise
    projector.start()
    return RunningEvaluator(config, server, store, bus, projector, queries, runs=runs, saga=saga)


async def serve(config: EvaluatorConfig) -> None:
    """Run the evaluator until SIGTERM or SIGINT, then stop gracefully."""
    running = await start(config)
    log.info("evaluator listening on %s (store %s)", running.addr, config.db_path)
    await serve_until_signal(running.server, on_stop=running.close_backends)
