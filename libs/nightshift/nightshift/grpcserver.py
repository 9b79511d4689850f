"""One way to build and run a gRPC server: health, reflection, port 0 in tests, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import message as pb_message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("nightshift.grpc")

# Grace period for in-flight calls when a server is asked to stop.
DEFAULT_GRACE_SECONDS = 30.0
# A service calling another reconnects within seconds of the peer coming back (gRPC's default backoff
# grows to two minutes, so a call after a peer's restart could fail for that long).
CLIENT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def client_channel(addr: str) -> grpc.aio.Channel:
    """An aio channel from one service to another, quick to reconnect after the peer restarts."""
    return grpc.aio.insecure_channel(addr, options=CLIENT_OPTIONS)


class Server:
    """An aio gRPC server with the standard health and reflection services."""

    def __init__(self, server: grpc.aio.Server, port: int, health: health_aio.HealthServicer):
        self.grpc = server
        self.port = port
        self.health = health

    async def start(self) -> None:
        await self.grpc.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Refuse new calls, let in-flight calls finish within `grace`, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.grpc.stop(grace)


def create_server(
    addr: str,
    register: Iterable[tuple[Callable[[object, grpc.aio.Server], None], object, str]],
    *,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> Server:
    """Build a server bound to `addr` ("127.0.0.1:0" picks a free port).

    `register` lists (add_XServicer_to_server, servicer, full service name) triples.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for add, servicer, name in register:
        add(servicer, server)
        names.append(name)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"could not bind {addr}")
    return Server(server, port, health)


async def serve_until_signal(server: Server, on_stop: Callable[[], object] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (in-flight calls finish)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("stopping: finishing in-flight calls")
    await server.stop()
    if on_stop is not None:
        result = on_stop()
        if asyncio.iscoroutine(result):
            await result


def abort_invalid(context: grpc.aio.ServicerContext, field: str, problem: str):
    """Abort a call with INVALID_ARGUMENT naming the offending field."""
    return context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request whose bytes did not parse, naming the field that broke it."""

    field: str
    problem: str


def lenient_deserializer(message_cls: type[pb_message.Message]) -> Callable[[bytes], object]:
    """Deserialize requests; bad bytes become an UndecodableRequest the handler can refuse clearly.

    gRPC's default deserializer turns a string field holding invalid UTF-8 into an opaque
    INTERNAL error; handlers want INVALID_ARGUMENT with the field named.
    """

    def deserialize(data: bytes) -> object:
        try:
            return message_cls.FromString(data)
        except pb_message.DecodeError as exc:
            field = _first_non_utf8_string(message_cls.DESCRIPTOR, data)
            if field:
                return UndecodableRequest(field, "is not valid UTF-8")
            return UndecodableRequest("request", f"cannot be decoded ({exc})")

    return deserialize


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise IndexError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _first_non_utf8_string(descriptor, data: bytes) -> str | None:
    """Name of the first top-level string field whose bytes are not UTF-8, by walking the wire format."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                if field is not None and field.type == field.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return field.name
            else:
                return None
    except IndexError:
        return None
    return None


def run_service(name: str, main: Callable[[], Awaitable[None]]) -> int:
    """Run a service's main coroutine; startup failures become one logged line and exit status 1."""
    from nightshift.bus import BusUnavailableError

    try:
        asyncio.run(main())
    except BusUnavailableError as exc:
        log.error("%s cannot start: %s (is nats-server running? `nightshift up` starts one)", name, exc)
        return 1
    except OSError as exc:
        log.error("%s cannot start: %s", name, exc)
        return 1
    return 0
