"""The agent through its gRPC API versus llama.cpp called directly, and the fix loop's pass@1 vs pass@k.

    .venv/bin/python bench/agent/run.py [--set smoke] [--max-attempts 3] [--direct 8] [--model M]

Starts a real nats-server, Sandbox and Agent in this process and runs every koan of the set through
`SubmitTask` (greedy first attempt, seeded sampling after). Right after each of the first `--direct` tasks
ends, its first-attempt prompt goes through llama-cpp-python's own `create_chat_completion` (greedy, same
model, threads and token cap) on a second instance whose cache is reset before each call: the baseline
runs on the same prompts, in the same run, interleaved with the agent, so machine load hits both alike.
Prompt evaluation (tokens/s until the first token) and decoding (tokens/s after it) are compared
separately, as ratios agent / direct of the medians. Prints a table and writes bench/results/agent.json
(or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from nightshift_agent.runtime import Generation
from nightshift_agent.server import start as start_agent
from nightshift_sandbox.config import SandboxConfig
from nightshift_sandbox.server import start as start_sandbox
from rich.console import Console
from rich.table import Table
from runtime import direct_completion, direct_llama, generation_rates  # bench/agent/runtime.py

A = agent_pb2


def agent_rates(attempt: agent_pb2.Attempt) -> dict:
    """Prompt and decode figures of one recorded attempt, by the runtime's own definitions."""
    return generation_rates(
        Generation(
            text=attempt.completion,
            prompt_tokens=attempt.prompt_tokens,
            completion_tokens=attempt.completion_tokens,
            seconds=attempt.generate_seconds,
            finish_reason="",
            prompt_seconds=attempt.prompt_seconds,
            reused_prompt_tokens=attempt.reused_prompt_tokens,
        )
    )


def direct_rates(llama, attempt: agent_pb2.Attempt, max_tokens: int) -> dict:
    """The attempt's prompt through create_chat_completion, greedy, timed as in runtime.py."""
    return direct_completion(llama, messages_for(attempt.prompt), max_tokens, attempt.prompt_tokens)


async def run_agent(
    koan_ids: list[str], max_attempts: int, model: str, n_direct: int, console: Console
) -> tuple[list, float, list[dict]]:
    """Every koan through the agent; the first `n_direct` first attempts replayed directly in between.

    Returns the tasks, the agent's wall time (the direct calls excluded) and the paired measurements."""
    config = AgentConfig()
    direct = direct_llama(ModelStore().resolve(model), config) if n_direct else None
    pairs: list[dict] = []
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
        wall = 0.0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                for koan_id in koan_ids:
                    started = time.perf_counter()
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
                    wall += time.perf_counter() - started
                    tasks.append(task)
                    statuses = [sandbox_pb2.CheckStatus.Name(a.verdict.status) for a in task.attempts]
                    line = f"{koan_id}: {A.TaskState.Name(task.state)} {statuses}"
                    if direct is not None and len(pairs) < n_direct and task.attempts:
                        first = task.attempts[0]
                        mine = agent_rates(first)
                        theirs = await asyncio.to_thread(direct_rates, direct, first, first.completion_tokens)
                        pairs.append({"koan_id": koan_id, "agent": mine, "direct": theirs})
                        line += "  decode {:.1f} vs {:.1f} tok/s, prompt {:.0f} vs {:.0f}".format(
                            mine["decode_tokens_per_second"],
                            theirs["decode_tokens_per_second"],
                            mine["prompt_tokens_per_second"],
                            theirs["prompt_tokens_per_second"],
                        )
                    console.print(line, highlight=False)
        finally:
            await agent.stop(grace=5)
            await sandbox.stop(grace=5)
            nats.stop()
    return tasks, wall, pairs


def _median(pairs: list[dict], side: str, key: str) -> float:
    return statistics.median(p[side][key] for p in pairs) if pairs else 0.0


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
    tasks, wall, pairs = asyncio.run(run_agent(koans, args.max_attempts, args.model, args.direct, console))
    attempts = [a for t in tasks for a in t.attempts]
    passed_at = [
        next((i + 1 for i, a in enumerate(t.attempts) if a.verdict.status == sandbox_pb2.OK), None)
        for t in tasks
    ]
    n = len(tasks)
    summary = {
        "command": f"bench/agent/run.py --set {args.set} --max-attempts {args.max_attempts} "
        f"--direct {args.direct} --model {args.model}",
        "model": args.model,
        "koans": n,
        "pass_at_1": sum(1 for p in passed_at if p == 1) / n,
        f"pass_at_{args.max_attempts}": sum(1 for p in passed_at if p) / n,
        "median_attempts_to_pass": statistics.median([p for p in passed_at if p]) if any(passed_at) else None,
        "attempts": len(attempts),
        "attempts_per_minute": len(attempts) / (wall / 60),
        "agent_decode_tokens_per_second_median": statistics.median(
            agent_rates(a)["decode_tokens_per_second"] for a in attempts
        ),
        "agent_prompt_tokens_per_second_median": statistics.median(
            agent_rates(a)["prompt_tokens_per_second"] for a in attempts
        ),
        "reused_prompt_token_share": sum(a.reused_prompt_tokens for a in attempts)
        / max(sum(a.prompt_tokens for a in attempts), 1),
        "first_attempts_compared": len(pairs),
        "first_attempt_decode_tokens_per_second_agent": _median(pairs, "agent", "decode_tokens_per_second"),
        "first_attempt_decode_tokens_per_second_direct": _median(pairs, "direct", "decode_tokens_per_second"),
        "first_attempt_prompt_tokens_per_second_agent": _median(pairs, "agent", "prompt_tokens_per_second"),
        "first_attempt_prompt_tokens_per_second_direct": _median(pairs, "direct", "prompt_tokens_per_second"),
    }
    if pairs:
        summary["decode_agent_vs_direct"] = (
            summary["first_attempt_decode_tokens_per_second_agent"]
            / summary["first_attempt_decode_tokens_per_second_direct"]
        )
        summary["prompt_agent_vs_direct"] = (
            summary["first_attempt_prompt_tokens_per_second_agent"]
            / summary["first_attempt_prompt_tokens_per_second_direct"]
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
    out.write_text(json.dumps({**summary, "pairs": pairs, "passed_at": passed_at}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
