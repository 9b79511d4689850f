"""Training throughput and memory of the trainer, as a ratio against a minimal hand-written PEFT loop.

    .venv/bin/python bench/trainer/run.py [--steps 10] [--examples 40] [--only nightshift|baseline]
                                          [--rounds 1] [--threads N] [--set FIELD=VALUE ...]
                                          [--out bench/results/trainer.json]

Both modes train the `cpu-lora` preset's adapter (LoRA r/alpha/dropout on q/k/v/o, AdamW, batch x
accumulation, max_seq_len; `--steps` overrides max_steps) on the real 0.5B GGUF, dequantised by
transformers to the preset's dtype (`auto`: bf16 where the CPU computes it natively, else float32),
with the same SFT examples seen in the same order: reference fixes of train-split corpus koans, the
prompt being the user message the agent sends for a first attempt and the completion
`nightshift.chat.answer_for(koan.fix)`.

  * nightshift: `nightshift_trainer.training.train_adapter` (loss at the answer positions only,
    checkpoints, progress reports, gradient clipping);
  * baseline: the plainest PEFT loop: `get_peft_model` with the same LoraConfig, the chat template
    applied, labels masked to the completion, `model(..., labels=labels).loss`, `backward()`, AdamW step.

Each mode runs in a fresh process, one after the other, each under an exclusive lock on
/tmp/nightshift-model.lock (taken here, so do not wrap this command in flock(1); `--no-lock` when the
caller holds the lock already), so the peak RSS is that mode's own. Tokens/s counts the prompt and
answer tokens fed to the model per second of training (model load excluded). The goal (tokens/s of
nightshift at least 0.9x the baseline's) is reported, not asserted. On a CPU shared with other work the
numbers swing by 2x from run to run: "cores used" shows how much of the CPU each mode actually got, and
`--rounds N` alternates the modes N times and keeps each mode's fastest round. Prints a table and writes
bench/results/trainer.json. A 100-step run (`--steps 100 --only nightshift`) is the issue's job wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nightshift.chat import answer_for, messages_for
from nightshift.corpus import Corpus
from nightshift.models import ModelStore
from nightshift_agent.prompts import FixTask, build_prompt
from nightshift_cli.rpc import CliError
from nightshift_cli.trainer import parse_pairs
from nightshift_trainer.examples import Example, make_example
from nightshift_trainer.presets import Preset, PresetError, resolve_preset
from rich.console import Console
from rich.table import Table

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
PRESET = "cpu-lora"
MODES = ("baseline", "nightshift")
BASELINE = "baseline"
GOAL_TOKENS_PER_SECOND_RATIO = 0.9
LOCK_PATH = Path("/tmp/nightshift-model.lock")
IGNORE = -100
GIB = 1024**3


# --- the data, the same in every process -----------------------------------------------------------


def build_examples(count: int) -> list[Example]:
    """SFT examples from the first `count` train-split koans: the agent's first-attempt user message
    with the broken program, and the reference fix as the answer."""
    koans = Corpus.load().koans("train")
    if count < 1 or count > len(koans):
        raise SystemExit(f"--examples: must be between 1 and {len(koans)} (train-split koans), got {count}")
    return [
        make_example(
            koan_id=koan.id,
            prompt=build_prompt(FixTask.from_koan(koan)).user,
            completion=answer_for(koan.fix),
            origin="reference",
        )
        for koan in koans[:count]
    ]


def bench_preset(steps: int, settings: Sequence[str] = ()) -> Preset:
    """The cpu-lora preset with --steps and each --set FIELD=VALUE applied (PresetError names a bad one)."""
    try:
        overrides = {"max_steps": str(steps), **parse_pairs(list(settings), "--set")}
    except CliError as exc:
        raise SystemExit(str(exc)) from None
    return resolve_preset(PRESET, overrides, cuda=False)


# --- the two training modes (each runs in its own process) ----------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_nightshift(model_path: Path, examples: Sequence[Example], preset: Preset) -> dict:
    """One `train_adapter` run in a scratch work directory; the model load timed on its own."""
    from nightshift_trainer import training

    load_seconds: list[float] = []
    loaded_at: list[tuple[float, float]] = []  # (wall clock, CPU seconds) when the load finished
    load_base = training.load_base

    # train_adapter loads the model itself: timing its loader separates the load from the rest
    def timed_load_base(*args, **kwargs):
        started = time.perf_counter()
        loaded = load_base(*args, **kwargs)
        load_seconds.append(time.perf_counter() - started)
        loaded_at.append((time.perf_counter(), cpu_seconds()))
        return loaded

    def report(progress: training.Progress) -> None:
        print(
            f"  nightshift step {progress.step}/{progress.total_steps} loss {progress.loss:.4f} "
            f"{progress.tokens_per_second:.0f} tokens/s",
            flush=True,
        )

    training.load_base = timed_load_base
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-trainer-") as work_dir:
        started = time.perf_counter()
        result = training.train_adapter(
            model_path=model_path,
            examples=examples,
            preset=preset,
            work_dir=Path(work_dir),
            on_progress=report,
        )
        call_seconds = time.perf_counter() - started
        wall_at_load, cpu_at_load = loaded_at[-1]
        cores = (cpu_seconds() - cpu_at_load) / (time.perf_counter() - wall_at_load)
    return {
        "load_seconds": sum(load_seconds),
        "cores_while_training": cores,
        "train_seconds": result.train_seconds,
        "call_seconds": call_seconds,
        "steps": result.steps,
        "tokens": result.train_tokens,
        "final_loss": result.final_loss,
        "examples_used": result.examples_used,
        "examples_truncated": result.examples_truncated,
    }


def tokenize_for_baseline(tokenizer, example: Example, max_seq_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of the chat-templated conversation, labels masked to the completion."""
    messages = messages_for(example.prompt)
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    answered = [*messages, {"role": "assistant", "content": example.completion}]
    ids = tokenizer.apply_chat_template(answered, tokenize=True, return_dict=False)
    labels = [IGNORE] * len(prompt) + ids[len(prompt) :]
    return ids[:max_seq_len], labels[:max_seq_len]


def pad_batch(batch: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded input ids, attention mask and labels as tensors."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
    labels = torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in batch])
    return ids, mask, labels


def train_baseline(model_path: Path, examples: Sequence[Example], preset: Preset) -> dict:
    """The minimal PEFT training loop: forward with labels, backward, AdamW step."""
    import torch
    from nightshift_trainer.training import example_order
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        model_path.parent, gguf_file=model_path.name, dtype=getattr(torch, preset.dtype)
    )
    load_seconds = time.perf_counter() - started
    wall_at_load, cpu_at_load = time.perf_counter(), cpu_seconds()

    torch.manual_seed(preset.seed)
    config = LoraConfig(
        r=preset.lora_r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules=list(preset.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    data = [tokenize_for_baseline(tokenizer, example, preset.max_seq_len) for example in examples]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=preset.learning_rate,
        weight_decay=preset.weight_decay,
    )

    model.train()
    tokens, losses = 0, []
    started = time.perf_counter()
    for step in range(preset.max_steps):
        # the same examples at every step as nightshift, so both modes train on identical sequences
        order = example_order(len(data), step, preset.examples_per_step, preset.seed)
        step_loss = 0.0
        for micro in range(preset.gradient_accumulation):
            batch = [data[i] for i in order[micro * preset.batch_size : (micro + 1) * preset.batch_size]]
            ids, mask, labels = pad_batch(batch, tokenizer.pad_token_id)
            loss = (
                model(input_ids=ids, attention_mask=mask, labels=labels).loss / preset.gradient_accumulation
            )
            loss.backward()
            step_loss += loss.item()
            tokens += int(mask.sum())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(step_loss)
        if (step + 1) % preset.log_every == 0 or step + 1 == preset.max_steps:
            elapsed = time.perf_counter() - started
            print(
                f"  baseline step {step + 1}/{preset.max_steps} loss {step_loss:.4f} "
                f"{tokens / elapsed:.0f} tokens/s",
                flush=True,
            )
    train_seconds = time.perf_counter() - started
    cores = (cpu_seconds() - cpu_at_load) / (time.perf_counter() - wall_at_load)
    tail = losses[-preset.log_every :]
    lengths = [len(ids) for ids, _ in data]
    return {
        "load_seconds": load_seconds,
        "cores_while_training": cores,
        "train_seconds": train_seconds,
        "steps": preset.max_steps,
        "tokens": tokens,
        "final_loss": sum(tail) / len(tail),
        "examples_used": len(data),
        "sequence_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
    }


def child_main(args: argparse.Namespace) -> int:
    """Entry point of one mode's process: train, then write the measurements to --result-file."""
    import torch

    torch.set_num_threads(args.threads)
    model_path = ModelStore().resolve(MODEL)
    examples = build_examples(args.examples)
    preset = bench_preset(args.steps, args.set)
    train = train_nightshift if args.child == "nightshift" else train_baseline
    result = train(model_path, examples, preset)
    result["threads"] = torch.get_num_threads()
    Path(args.result_file).write_text(json.dumps(result))
    return 0


# --- the driver -----------------------------------------------------------------------------------


@contextlib.contextmanager
def model_lock(enabled: bool, console: Console) -> Iterator[None]:
    """Hold /tmp/nightshift-model.lock exclusively, so no other model runs on the machine meanwhile."""
    if not enabled:
        yield
        return
    with LOCK_PATH.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"waiting for {LOCK_PATH} (another model is running)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Train in a fresh process; its wall time and peak RSS come from the kernel's accounting."""
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-trainer-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            mode,
            "--result-file",
            str(result_file),
            "--steps",
            str(args.steps),
            "--examples",
            str(args.examples),
            "--threads",
            str(args.threads),
            *(part for item in args.set for part in ("--set", item)),
        ]
        load_average = os.getloadavg()[0]
        started = time.perf_counter()
        process = subprocess.Popen(command)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over both modes)
        _, status, usage = os.wait4(process.pid, 0)
        process_seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"{mode}: the training process exited with status {process.returncode}")
        result = json.loads(result_file.read_text())
    result["process_seconds"] = process_seconds
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux reports kilobytes
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["load_average_at_start"] = load_average
    result["tokens_per_second"] = result["tokens"] / result["train_seconds"]
    result["seconds_per_step"] = result["train_seconds"] / result["steps"]
    return result


def ratios_against_baseline(results: dict[str, dict]) -> dict[str, float]:
    """nightshift / baseline for the throughput, the step time and the peak memory."""
    if BASELINE not in results or "nightshift" not in results:
        return {}
    ours, base = results["nightshift"], results[BASELINE]
    return {
        "tokens_per_second": ours["tokens_per_second"] / base["tokens_per_second"],
        "seconds_per_step": ours["seconds_per_step"] / base["seconds_per_step"],
        "peak_rss": ours["peak_rss_bytes"] / base["peak_rss_bytes"],
    }


def results_table(results: dict[str, dict], preset: Preset, examples: int, rounds: int) -> Table:
    best = f", best of {rounds} rounds" if rounds > 1 else ""
    title = (
        f"LoRA training on {MODEL} ({PRESET}: r {preset.lora_r}, batch {preset.batch_size} x "
        f"{preset.gradient_accumulation}, {preset.dtype}, {preset.max_steps} steps, "
        f"{examples} examples{best})"
    )
    table = Table(title=title)
    columns = (
        "mode",
        "load s",
        "train s",
        "s/step",
        "tokens",
        "tokens/s",
        "tokens/s vs baseline",
        "peak RSS GiB",
    )
    for column in (*columns, "process s", "cores used (training)", "final loss"):
        table.add_column(column)
    base = results.get(BASELINE)
    for mode, r in results.items():
        ratio = f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}x" if base else "-"
        table.add_row(
            mode,
            f"{r['load_seconds']:.1f}",
            f"{r['train_seconds']:.1f}",
            f"{r['seconds_per_step']:.2f}",
            str(r["tokens"]),
            f"{r['tokens_per_second']:.0f}",
            ratio,
            f"{r['peak_rss_bytes'] / GIB:.2f}",
            f"{r['process_seconds']:.1f}",
            f"{r['cores_while_training']:.2f} of {r['threads']}",
            f"{r['final_loss']:.4f}",
        )
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per mode (default 10)")
    parser.add_argument(
        "--examples", type=int, default=40, help="train-split koans to build examples from (default 40)"
    )
    parser.add_argument("--only", choices=MODES, help="run one mode only (no ratio then)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate the modes this many times and keep each one's fastest round (default 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads in each mode (default: all)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="preset override for both modes, e.g. dtype=float32 or batch_size=4 (repeatable)",
    )
    parser.add_argument("--no-lock", action="store_true", help="the caller holds the model lock already")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "trainer.json"))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps: must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds: must be at least 1")
    if args.threads < 1:
        parser.error("--threads: must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        return child_main(args)
    console = Console()
    if not console.is_terminal:  # a log file gets the whole table rather than 80 columns of it
        console.width = max(console.width, 150)
    try:
        preset = bench_preset(args.steps, args.set)
    except PresetError as exc:
        raise SystemExit(f"--set {exc}") from None
    build_examples(args.examples)  # refuses a bad --examples before any model loads
    model_path = ModelStore().resolve(MODEL)
    modes = (args.only,) if args.only else MODES
    console.print(f"{MODEL} at {model_path}; {args.threads} torch threads; modes run one after the other")
    rounds: dict[str, list[dict]] = {mode: [] for mode in modes}
    for round_index in range(args.rounds):
        # alternate which mode goes first, so neither always meets the same neighbours on the CPU
        for mode in modes if round_index % 2 == 0 else modes[::-1]:
            with model_lock(not args.no_lock, console):
                console.print(f"{mode}: training {args.steps} steps in a fresh process")
                rounds[mode].append(run_mode(mode, args))
    # other work on a shared CPU only ever slows a run down: each mode's fastest round is its own speed
    results = {mode: max(runs, key=lambda r: r["tokens_per_second"]) for mode, runs in rounds.items()}
    console.print(results_table(results, preset, args.examples, args.rounds))
    ratios = ratios_against_baseline(results)
    goal = None
    if ratios:
        met = ratios["tokens_per_second"] >= GOAL_TOKENS_PER_SECOND_RATIO
        goal = {"tokens_per_second_ratio_at_least": GOAL_TOKENS_PER_SECOND_RATIO, "met": met}
        console.print(
            f"tokens/s nightshift / baseline = {ratios['tokens_per_second']:.2f} "
            f"(goal >= {GOAL_TOKENS_PER_SECOND_RATIO}: {'met' if met else 'not met'}); "
            f"peak RSS ratio {ratios['peak_rss']:.2f}"
        )
    if "nightshift" in results:
        console.print(
            f"wall time of a {args.steps}-step {PRESET} train_adapter call: "
            f"{results['nightshift']['call_seconds']:.1f}s "
            f"({results['nightshift']['process_seconds']:.1f}s with the process start)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["bench/trainer/run.py", *sys.argv[1:]]),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "model": {"name": MODEL, "path": str(model_path), "bytes": model_path.stat().st_size},
                "preset": preset.as_fields(),
                "examples": args.examples,
                "threads": args.threads,
                "rounds": args.rounds,
                "modes": results,
                "all_rounds": rounds,
                "ratios_nightshift_over_baseline": ratios,
                "goal": goal,
            },
            indent=2,
        )
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
