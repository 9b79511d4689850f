"""`nightshift-sandbox`: run the sandbox service until SIGTERM."""

from __future__ import annotations

import argparse

from nightshift.config import ConfigError
from nightshift.grpcserver import run_service, serve_until_signal
from nightshift.log import configure_logging

from nightshift_sandbox.config import SandboxConfig
from nightshift_sandbox.server import start

ENV_HELP = """environment:
  NIGHTSHIFT_SANDBOX_ADDR         listen address (default 127.0.0.1:50061)
  NIGHTSHIFT_NATS_URL             NATS JetStream URL (default nats://127.0.0.1:4222)
  NIGHTSHIFT_SANDBOX_BACKEND      bwrap (default) or docker
  NIGHTSHIFT_SANDBOX_WORKERS      concurrent checks (default: number of CPUs)
  NIGHTSHIFT_SANDBOX_QUEUE        checks allowed to wait beyond that (default 16)
  NIGHTSHIFT_SANDBOX_WORK_DIR     where per-check temp dirs go (default /tmp/nightshift-sandbox)
  NIGHTSHIFT_RUST_SYSROOT         toolchain to mount read-only (default: rustc --print sysroot)
  NIGHTSHIFT_SANDBOX_CPU_SECONDS, _WALL_SECONDS, _MEMORY_MB, _MAX_PROCESSES, _OUTPUT_KB
                                  default limits for running a program's tests
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nightshift-sandbox",
        description="Compile and test untrusted Rust in isolation (gRPC nightshift.v1.Sandbox).",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    log = configure_logging("sandbox")
    try:
        config = SandboxConfig.from_env()
    except ConfigError as exc:
        parser.error(str(exc))

    async def run() -> None:
        service = await start(config)
        log.info(
            "sandbox listening on %s (backend %s)",
            f"{config.addr.rsplit(':', 1)[0]}:{service.port}",
            config.backend,
        )
        await serve_until_signal(service.server, on_stop=service.close_backends)

    return run_service("sandbox", run)


if __name__ == "__main__":
    raise SystemExit(main())
