"""The agent's runtime (LlamaGenerator) versus llama-cpp-python's create_chat_completion, no services.

    .venv/bin/python bench/agent/runtime.py [--set frozen] [--koans 4] [--model M] [--in-thread]
                                            [--out FILE]

For each of the first `--koans` koans of the set, the first-attempt prompt goes through the agent's
`LlamaGenerator.generate` (greedy) and then through a second, plain `Llama` instance's
`create_chat_completion` (greedy, streamed, cache reset before each call), alternately, so both see the
same machine load. Prompt evaluation (tokens/s until the first token) and decoding (tokens/s after it)
are reported separately, with the ratios agent / direct of the medians. It takes about 30 s a koan on
the 0.5B here and loads no gRPC service, so it also compares llama.cpp builds: run it once per build
(e.g. `PYTHONPATH=/path/to/unpacked/wheel`) and compare the `direct` columns; `build` in the JSON
records llama.cpp's own system info line. `--in-thread` calls the agent's generate from a worker
thread, as the service does (asyncio.to_thread), while the direct calls stay on the main thread: with
a build whose CPU backend uses OpenMP, decoding from a worker thread measured 1.4x slower here, which is
why deploy/scripts/build-llama-wheel.sh turns OpenMP off. Writes bench/results/agent-runtime.json (or
--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nightshift.corpus import Corpus
from nightshift.models import DEFAULT_MODEL, ModelStore
from nightshift_agent.config import AgentConfig
from nightshift_agent.prompts import FixTask, build_prompt, completion_cap
from nightshift_agent.runtime import Generation, LlamaGenerator
from rich.console import Console
from rich.table import Table


def direct_completion(llama, messages: list[dict], max_tokens: int, prompt_tokens: int) -> dict:
    """Greedy create_chat_completion from a cold cache, timed to the first streamed chunk and to the end."""
    llama.reset()
    started = time.perf_counter()
    first = None
    for _ in llama.create_chat_completion(
        messages=messages, temperature=0.0, max_tokens=max_tokens, stream=True
    ):
        if first is None:
            first = time.perf_counter()
    finished = time.perf_counter()
    first = first or finished
    steps = max(llama.n_tokens - prompt_tokens, 0)  # every token after the first cost one decode step
    return {
        "prompt_tokens": prompt_tokens,
        "prompt_seconds": first - started,
        "prompt_tokens_per_second": prompt_tokens / (first - started),
        "completion_tokens": steps + 1,
        "decode_seconds": finished - first,
        "decode_tokens_per_second": steps / (finished - first) if finished > first else 0.0,
    }


def direct_llama(model_path: Path, config: AgentConfig):
    """A plain llama-cpp-python instance with the agent's context size and threads."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(model_path),
        n_ctx=config.n_ctx,
        n_threads=config.n_threads,
        n_threads_batch=config.n_threads,
        verbose=False,
    )


def generation_rates(g: Generation) -> dict:
    """Prompt and decode figures of one agent generation (Generation's own rate definitions)."""
    return {
        "prompt_tokens": g.prompt_tokens,
        "reused_prompt_tokens": g.reused_prompt_tokens,
        "prompt_seconds": g.prompt_seconds,
        "prompt_tokens_per_second": g.prompt_tokens_per_second,
        "completion_tokens": g.completion_tokens,
        "decode_seconds": g.seconds - g.prompt_seconds,
        "decode_tokens_per_second": g.completion_tokens_per_second,
    }


def agent_completion(generator: LlamaGenerator, messages: list[dict], max_tokens: int) -> dict:
    return generation_rates(generator.generate(messages, max_tokens=max_tokens, temperature=0.0, seed=1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="frozen")
    parser.add_argument("--koans", type=int, default=4, help="first-attempt prompts compared (default 4)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--in-thread", action="store_true", help="run the agent's generate in a worker thread, as the service"
    )
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "agent-runtime.json"))
    args = parser.parse_args()
    import llama_cpp

    console = Console()
    config = AgentConfig()
    path = ModelStore().resolve(args.model)
    generator = LlamaGenerator(path, n_ctx=config.n_ctx, n_threads=config.n_threads)
    direct = direct_llama(path, config)
    worker = ThreadPoolExecutor(max_workers=1) if args.in_thread else None
    pairs = []
    for koan in Corpus.load().koans(args.set)[: args.koans]:
        task = FixTask.from_koan(koan)
        prompt = build_prompt(task, count_tokens=generator.count_tokens)
        cap = completion_cap(generator.count_tokens(task.source))
        if worker is not None:
            mine = worker.submit(agent_completion, generator, prompt.messages, cap).result()
        else:
            mine = agent_completion(generator, prompt.messages, cap)
        theirs = direct_completion(direct, prompt.messages, mine["completion_tokens"], mine["prompt_tokens"])
        pairs.append({"koan_id": koan.id, "agent": mine, "direct": theirs})
        console.print(
            f"{koan.id}: prompt {mine['prompt_tokens']} tokens, agent {mine['prompt_tokens_per_second']:.0f} "
            f"vs direct {theirs['prompt_tokens_per_second']:.0f} tok/s; decode "
            f"{mine['decode_tokens_per_second']:.1f} vs {theirs['decode_tokens_per_second']:.1f} tok/s",
            highlight=False,
        )

    def median(side: str, key: str) -> float:
        return statistics.median(p[side][key] for p in pairs)

    summary = {
        "command": f"bench/agent/runtime.py --set {args.set} --koans {args.koans} --model {args.model}"
        + (" --in-thread" if args.in_thread else ""),
        "model": args.model,
        "agent_in_thread": args.in_thread,
        "threads": config.n_threads,
        "build": llama_cpp.llama_print_system_info().decode().strip(),
        "koans": len(pairs),
    }
    for phase in ("prompt", "decode"):
        for side in ("agent", "direct"):
            summary[f"{phase}_tokens_per_second_{side}"] = median(side, f"{phase}_tokens_per_second")
        summary[f"{phase}_agent_vs_direct"] = (
            summary[f"{phase}_tokens_per_second_agent"] / summary[f"{phase}_tokens_per_second_direct"]
        )
    table = Table(title=f"agent runtime vs llama.cpp direct ({len(pairs)} {args.set} prompts, {args.model})")
    table.add_column("metric")
    table.add_column("value")
    for key, value in summary.items():
        if key not in ("command", "build"):
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"llama.cpp: {summary['build']}", highlight=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "pairs": pairs}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
