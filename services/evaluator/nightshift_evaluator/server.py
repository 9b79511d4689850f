"""The evaluator's gRPC server: the Query RPC, plus the projection consumers running beside it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from nightshift.bus import EventBus
from nightshift.grpcserver import Server, abort_invalid, create_server, serve_until_signal
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc

from nightshift_evaluator.config import EvaluatorConfig
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.query import (
    QueryFailedError,
    QueryRefusedError,
    QueryTimedOutError,
    QueryTooLargeError,
    ReadOnlyQueries,
)
from nightshift_evaluator.store import ProjectionStore

log = logging.getLogger("nightshift.evaluator")

SERVICE_NAME = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Answers Query; the other Evaluator RPCs are not served yet (UNIMPLEMENTED)."""

    def __init__(self, queries: ReadOnlyQueries):
        self.queries = queries

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


@dataclass
class RunningEvaluator:
    """A started evaluator: its gRPC server, store, bus connection and projection consumers."""

    config: EvaluatorConfig
    server: Server
    store: ProjectionStore
    bus: EventBus
    projector: Projector
    queries: ReadOnlyQueries
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
            await self.server.stop(grace_seconds)
        await self.close_backends()

    async def close_backends(self) -> None:
        """Stop the projections, then close the bus and the store (once; later calls do nothing)."""
        if not self._open:
            return
        self._open = False
        await self.projector.stop()
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
    try:
        server = create_server(
            config.addr,
            [(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, EvaluatorServicer(queries), SERVICE_NAME)],
        )
        await server.start()
    except BaseException:
        await bus.close()
        await queries.close()
        await store.close()
        raise
    projector.start()
    return RunningEvaluator(config, server, store, bus, projector, queries)


async def serve(config: EvaluatorConfig) -> None:
    """Run the evaluator until SIGTERM or SIGINT, then stop gracefully."""
    running = await start(config)
    log.info("evaluator listening on %s (store %s)", running.addr, config.db_path)
    await serve_until_signal(running.server, on_stop=running.close_backends)
