"""The Sandbox gRPC service end to end: real nats-server, real rustc, events on JetStream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nightshift.bus import EventBus
from nightshift.natsserver import free_port
from nightshift.v1 import events_pb2, sandbox_pb2, sandbox_pb2_grpc
from nightshift_sandbox.server import start

S = sandbox_pb2
BROKEN = 'fn main() {\n    let s = String::from("x");\n    let t = s;\n    println!("{}{}", s, t);\n}\n'


@pytest.fixture
async def sandbox(nats_server, sandbox_config):
    config = replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url)
    service = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    yield sandbox_pb2_grpc.SandboxStub(channel), service, channel
    await channel.close()
    await service.stop(grace=5)


async def collect(bus: EventBus, n: int, timeout: float = 20.0) -> list:
    got, done = [], asyncio.Event()

    async def handler(delivery):
        got.append(delivery)
        if len(got) >= n:
            done.set()

    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume("SANDBOX", "test-reader", handler, stop=stop))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        stop.set()
        await task
    return got


async def test_check_returns_verdict_and_publishes_check_completed(sandbox, nats_server):
    stub, _, _ = sandbox
    reply = await stub.Check(S.CheckRequest(source=BROKEN, mode=S.MODE_BUILD, correlation_id="run-1"))
    verdict = reply.verdict
    assert verdict.status == S.COMPILE_ERROR
    assert [d.code for d in verdict.diagnostics if d.level == "error"] == ["E0382"]
    assert verdict.check_id

    bus = await EventBus.connect(nats_server.url, "test")
    try:
        [delivery] = await collect(bus, 1)
    finally:
        await bus.close()
    assert delivery.subject == "sandbox.check.completed"
    assert delivery.envelope.type == "nightshift.v1.CheckCompleted"
    assert delivery.envelope.event_id == verdict.check_id
    assert delivery.envelope.correlation_id == "run-1"
    assert delivery.envelope.schema_version == 1
    event = delivery.event
    assert isinstance(event, events_pb2.CheckCompleted)
    assert event.verdict == verdict
    assert event.mode == S.MODE_BUILD and event.edition == "2021" and event.backend == "bwrap"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"source": ""}, "source"),
        ({"source": "   \n"}, "source"),
        ({"source": "x" * (300 * 1024)}, "source"),
        ({"source": "fn main() {}", "tests": "y" * (300 * 1024)}, "tests"),
        ({"source": "fn main() {}", "edition": "2018"}, "edition"),
        ({"source": "fn main() {}", "mode": 42}, "mode"),
        ({"source": "fn main() {}", "backend": "chroot"}, "backend"),
        ({"source": "fn main() {}", "limits": S.CheckLimits(cpu_seconds=-1)}, "limits.cpu_seconds"),
        ({"source": "fn main() {}", "limits": S.CheckLimits(memory_bytes=1 << 40)}, "limits.memory_bytes"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(sandbox, request_fields, field):
    stub, _, _ = sandbox
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(S.CheckRequest(**request_fields))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}:")
    # ...and the service keeps serving.
    ok = await stub.Check(S.CheckRequest(source='fn main() { println!("ok"); }\n'))
    assert ok.verdict.status == S.OK


async def test_non_utf8_source_is_invalid_argument(sandbox):
    stub, _, channel = sandbox
    raw = b"\x0a\x04\xff\xfe\xfd\xfc"  # field 1 (source), 4 bytes that are not UTF-8
    call = channel.unary_unary(
        "/nightshift.v1.Sandbox/Check",
        request_serializer=lambda data: data,
        response_deserializer=S.CheckResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(raw)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "source: is not valid UTF-8"
    ok = await stub.Check(S.CheckRequest(source="fn main() {}\n"))
    assert ok.verdict.status == S.OK


async def test_full_queue_is_resource_exhausted(nats_server, sandbox_config):
    config = replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url, workers=1, queue_size=1)
    service = await start(config)
    slow = S.CheckRequest(
        source="pub fn f() {}\n",
        tests="#[cfg(test)]\nmod tests {\n    #[test]\n    fn slow() {\n"
        "        std::thread::sleep(std::time::Duration::from_secs(3));\n    }\n}\n",
        limits=S.CheckLimits(wall_seconds=20),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = sandbox_pb2_grpc.SandboxStub(channel)
        calls = [asyncio.ensure_future(stub.Check(slow)) for _ in range(4)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    await service.stop(grace=5)
    exhausted = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert exhausted and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in exhausted)
    served = [r for r in results if not isinstance(r, Exception)]
    assert len(served) == 2 and all(r.verdict.status == S.OK for r in served)


async def test_health_and_reflection(sandbox):
    _, _, channel = sandbox
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
    assert {"nightshift.v1.Sandbox", "grpc.health.v1.Health"} <= names


async def test_graceful_stop_lets_in_flight_checks_finish(nats_server, sandbox_config):
    config = replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url)
    service = await start(config)
    request = S.CheckRequest(
        source="pub fn f() {}\n",
        tests="#[cfg(test)]\nmod tests {\n    #[test]\n    fn slow() {\n"
        "        std::thread::sleep(std::time::Duration::from_secs(2));\n    }\n}\n",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        call = asyncio.ensure_future(sandbox_pb2_grpc.SandboxStub(channel).Check(request))
        await asyncio.sleep(0.5)
        await service.stop(grace=30)
        reply = await call
    assert reply.verdict.status == S.OK


async def test_sigterm_finishes_in_flight_checks_then_exits(nats_server, tmp_path):
    """The real service process: SIGTERM lets a running check complete, then the process exits 0."""
    port = free_port()
    env = {
        **os.environ,
        "NIGHTSHIFT_SANDBOX_ADDR": f"127.0.0.1:{port}",
        "NIGHTSHIFT_NATS_URL": nats_server.url,
        "NIGHTSHIFT_SANDBOX_WORK_DIR": str(tmp_path / "work"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightshift_sandbox"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            request = S.CheckRequest(
                source="pub fn f() {}\n",
                tests="#[cfg(test)]\nmod tests {\n    #[test]\n    fn slow() {\n"
                "        std::thread::sleep(std::time::Duration::from_secs(2));\n    }\n}\n",
            )
            call = asyncio.ensure_future(sandbox_pb2_grpc.SandboxStub(channel).Check(request))
            await asyncio.sleep(0.7)
            proc.send_signal(signal.SIGTERM)
            reply = await call
        assert reply.verdict.status == S.OK
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
