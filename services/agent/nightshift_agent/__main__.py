"""`nightshift-agent`: run the agent service until SIGTERM."""

from __future__ import annotations

import argparse

from nightshift.config import ConfigError
from nightshift.grpcserver import run_service, serve_until_signal
from nightshift.log import configure_logging

from nightshift_agent.config import AgentConfig
from nightshift_agent.server import start

ENV_HELP = """environment:
  NIGHTSHIFT_AGENT_ADDR         listen address (default 127.0.0.1:50062)
  NIGHTSHIFT_SANDBOX_ADDR       the sandbox that judges every attempt (default 127.0.0.1:50061)
  NIGHTSHIFT_NATS_URL           NATS JetStream URL (default nats://127.0.0.1:4222)
  NIGHTSHIFT_MODEL              model name (default qwen2.5-coder-0.5b-instruct-q4_k_m)
  NIGHTSHIFT_MODEL_PATH         explicit GGUF file for that model (checked against its sha256)
  NIGHTSHIFT_ADAPTERS_DIR       LoRA adapters, <dir>/<adapter id>/adapter.gguf (default <data-dir>/adapters)
  NIGHTSHIFT_CORPUS_DIR         the koan corpus (default: the checkout's corpus/)
  NIGHTSHIFT_AGENT_N_CTX        context size (default 4096)
  NIGHTSHIFT_AGENT_THREADS      llama.cpp threads (default: number of CPUs)
  NIGHTSHIFT_AGENT_MAX_ATTEMPTS attempts per task unless a request says otherwise (default 5)
  NIGHTSHIFT_AGENT_MAX_RESAMPLES
                                a retry that repeats a program known to fail is sampled again,
                                hotter, at most this many times (default 0: off)
  NIGHTSHIFT_AGENT_QUEUE        tasks allowed to wait for the model (default 32)
  NIGHTSHIFT_AGENT_MAX_LOADED   model instances kept loaded, keyed by (model, adapter) (default 2)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nightshift-agent",
        description="Fix Rust programs with a local model, attempt by attempt (gRPC nightshift.v1.Agent).",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    log = configure_logging("agent")
    try:
        config = AgentConfig.from_env()
    except ConfigError as exc:
        parser.error(str(exc))

    async def run() -> None:
        agent = await start(config)
        log.info(
            "agent listening on %s:%d (model %s)", config.addr.rsplit(":", 1)[0], agent.port, config.model
        )
        await serve_until_signal(agent.server, on_stop=agent.close_backends)

    return run_service("agent", run)


if __name__ == "__main__":
    raise SystemExit(main())
