"""gRPC plumbing of the CLI: channels, health checks and readable errors."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nightshift.config import service_addr
from nightshift.rustsrc import split_tests


class CliError(RuntimeError):
    """A failure to report to the user in one line (exit status 2)."""


def channel(service: str) -> grpc.Channel:
    return grpc.insecure_channel(service_addr(service))


def health(addr: str, timeout: float = 2.0) -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE."""
    with grpc.insecure_channel(addr) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "UNREACHABLE"
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def explain(exc: grpc.RpcError, service: str) -> CliError:
    """Turn an RPC error into one line a user can act on."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"the {service} service is not reachable at {service_addr(service)}: "
            "start the stack with `nightshift up` (or set "
            f"NIGHTSHIFT_{service.upper()}_ADDR)"
        )
    return CliError(f"{service}: {code.name}: {exc.details()}")


def read_rust_file(path: Path) -> tuple[str, str, str]:
    """(whole text, program without its #[cfg(test)] items, those items) of a UTF-8 Rust file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    program, tests = split_tests(text)
    return text, program, tests
