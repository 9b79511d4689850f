"""The agent through its gRPC API versus llama.cpp called directly, and the fix loop's pass@1 vs pass@k.

    .venv/bin/python bench/agent/run.py [--set smoke] [--max-attempts 3] [--direct 8]

Starts a real nats-server, Sandbox and Agent in this process, runs every koan of the set through
`SubmitTask` (greedy first attempt, seeded sampling after), then replays up to `--direct` of the recorded
prompts through llama-cpp-python's own `create_chat_completion` on a fresh instance (no prefix cache,
same model, threads and token cap): tokens/s of the agent as a ratio of that baseline. Prints a table
and writes bench/results/agent.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from nightshift.chat import messages_for
from nightshift.corpus import Corpus
from nightshift.models import DEFAULT_MODEL, ModelStore
from nightshift.natsserver import NatsServer
from nightshift.v1 import agent_pb2, agent_pb2_grpc, sandbox_pb2
from nightshift_agent.config import AgentConfig
from nightshift_agent.server import start as start_agent
from nightshift_sandbox.config import SandboxConfig
from nightshift_sandbox.server import start as start_sandbox
from rich.console import Console
from rich.table import Table

A = agent_pb2


async def run_agent(
    koan_ids: list[str], max_attempts: int, model: str, console: Console
) -> tuple[list, float]:
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        sysroot = subprocess.run(
            ["rustc", "--print", "sysroot"], capture_output=True, text=True
        ).stdout.strip()
        sandbox = await start_sandbox(
            SandboxConfig(
                addr="127.0.0.1:0", nats_url=nats.url, sysroot=sysroot, work_root=Path(tmp) / "work"
            )
        )
        agent = await start_agent(
            AgentConfig(
                addr="127.0.0.1:0",
                nats_url=nats.url,
                sandbox_addr=f"127.0.0.1:{sandbox.port}",
                adapters_dir=Path(tmp) / "adapters",
                model=model,
            )
        )
        tasks = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                started = time.perf_counter()
                for koan_id in koan_ids:
                    task_id = (
                        await stub.SubmitTask(
                            A.SubmitTaskRequest(
                                koan_id=koan_id, max_attempts=max_attempts, seed=0, adapter_id="none"
                            )
                        )
                    ).task_id
                    async for update in stub.WatchTask(A.WatchTaskRequest(task_id=task_id)):
                        if update.HasField("task"):
                            task = update.task
                    tasks.append(task)
                    statuses = [sandbox_pb2.CheckStatus.Name(a.verdict.status) for a in task.attempts]
                    console.print(f"{koan_id}: {A.TaskState.Name(task.state)} {statuses}", highlight=False)
                wall = time.perf_counter() - started
        finally:
            await agent.stop(grace=5)
            await sandbox.stop(grace=5)
            nats.stop()
    return tasks, wall


def run_direct(model_path: Path, attempts: list, n_ctx: int) -> list[dict]:
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(model_path),
        n_ctx=n_ctx,
        n_threads=os.cpu_count() or 2,
        n_threads_batch=os.cpu_count() or 2,
        verbose=False,
    )
    out = []
    for attempt in attempts:
        llama.reset()
        started = time.perf_counter()
        reply = llama.create_chat_completion(
            messages=messages_for(attempt.prompt),
            temperature=0.0,
            max_tokens=max(attempt.completion_tokens, 1),
        )
        seconds = time.perf_counter() - started
        tokens = reply["usage"]["completion_tokens"]
        out.append({"completion_tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="smoke")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--direct", type=int, default=8, help="first attempts replayed directly (default 8)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "agent.json"))
    args = parser.parse_args()
    console = Console()
    koans = [k.id for k in Corpus.load().koans(args.set)]
    tasks, wall = asyncio.run(run_agent(koans, args.max_attempts, args.model, console))

    attempts = [a for t in tasks for a in t.attempts]
    agent_tps = [a.completion_tokens / a.generate_seconds for a in attempts if a.generate_seconds > 0]
    first = [t.attempts[0] for t in tasks if t.attempts][: args.direct]
    direct = run_direct(ModelStore().resolve(args.model), first, AgentConfig().n_ctx)
    agent_first_tps = [a.completion_tokens / a.generate_seconds for a in first]
    passed_at = [
        next((i + 1 for i, a in enumerate(t.attempts) if a.verdict.status == sandbox_pb2.OK), None)
        for t in tasks
    ]
    n = len(tasks)
    summary = {
        "command": f"bench/agent/run.py --set {args.set} --max-attempts {args.max_attempts} "
        f"--direct {args.direct}",
        "model": args.model,
        "koans": n,
        "pass_at_1": sum(1 for p in passed_at if p == 1) / n,
        f"pass_at_{args.max_attempts}": sum(1 for p in passed_at if p) / n,
        "median_attempts_to_pass": statistics.median([p for p in passed_at if p]) if any(passed_at) else None,
        "attempts": len(attempts),
        "attempts_per_minute": len(attempts) / (wall / 60),
        "agent_tokens_per_second_median": statistics.median(agent_tps),
        "first_attempts_compared": len(first),
        "agent_first_attempt_tokens_per_second_median": statistics.median(agent_first_tps),
        "direct_tokens_per_second_median": statistics.median(d["tokens_per_second"] for d in direct),
    }
    summary["agent_vs_direct"] = (
        summary["agent_first_attempt_tokens_per_second_median"] / summary["direct_tokens_per_second_median"]
    )
    table = Table(title=f"agent on {args.set} ({n} koans, {args.model})")
    table.add_column("metric")
    table.add_column("value")
    for key, value in summary.items():
        if key != "command":
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "direct": direct, "passed_at": passed_at}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
