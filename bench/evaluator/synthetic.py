"""Synthetic events for the evaluator bench: the day's episodes as the agent and the sandbox publish them,
and evaluation runs of koan outcomes for the report.

Everything is a pure function of a seed, so two runs of the bench project the same stream. An episode
is what one task publishes: TaskSubmitted, then per attempt a CheckCompleted (the sandbox) and an
AttemptRecorded (about 1 KB of prompt, half of that of completion), then EpisodeCompleted and, since
every task here belongs to an evaluation run, a KoanEvaluated.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass

from nightshift import events
from nightshift.v1 import agent_pb2, evaluator_pb2, events_pb2, sandbox_pb2

S = sandbox_pb2
FAMILIES = (
    "ownership",
    "borrowing",
    "lifetimes",
    "traits",
    "generics",
    "iterators",
    "errors",
    "closures",
    "patterns",
    "collections",
)
ERROR_CODES = ("E0382", "E0499", "E0502", "E0308", "E0277", "E0106", "E0425", "E0599", "E0384", "E0596")
FAILED_STATUSES = (S.COMPILE_ERROR, S.COMPILE_ERROR, S.COMPILE_ERROR, S.TEST_FAILED, S.TIMEOUT)
KOANS_PER_DAY = 60
EPISODES_PER_RUN = 600
MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
# Namespace of the bench's deterministic event ids.
BENCH_NAMESPACE = uuid.UUID("6a0c1e52-2f7d-4b8e-8d0a-5c3e9b1f4a27")
RUST_LINES = (
    "    let mut values = Vec::new();",
    "    for item in input.iter() {",
    "        values.push(item.clone());",
    "    }",
    "    let total: i64 = values.iter().map(|v| v.len() as i64).sum();",
    "    match lookup.get(&key) {",
    '        Some(found) => println!("{found}"),',
    "        None => return Err(Error::Missing(key.to_string())),",
    "    }",
    "    let first = &values[0];",
    '    values.push(String::from("next"));',
    '    println!("{first} {total}");',
)


@dataclass(frozen=True)
class SyntheticStream:
    """The envelopes to publish, in order, and the rows each table must hold once they are projected."""

    envelopes: list[events_pb2.EventEnvelope]
    types: dict[str, int]  # event type name -> count
    expected_rows: dict[str, int]  # table -> rows


def rust_text(rng: random.Random, size: int, header: str) -> str:
    """About `size` bytes of Rust-looking text starting with `header`."""
    lines = [header]
    length = len(header)
    while length < size:
        line = rng.choice(RUST_LINES)
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines)


def diagnostics_for(rng: random.Random, status: int) -> list[sandbox_pb2.Diagnostic]:
    if status != S.COMPILE_ERROR:
        return []
    out = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        code = rng.choice(ERROR_CODES)
        line, column = rng.randint(1, 40), rng.randint(1, 30)
        out.append(
            S.Diagnostic(
                code=code,
                level="error",
                message=f"error {code} in the koan",
                line=line,
                column=column,
                rendered=f"error[{code}]: error {code} in the koan\n --> src/main.rs:{line}:{column}",
            )
        )
    return out


def verdict_for(rng: random.Random, status: int, check_id: str) -> sandbox_pb2.Verdict:
    tests = [S.TestResult(name=f"tests::case_{i}", passed=status == S.OK or i > 0) for i in range(3)]
    return S.Verdict(
        status=status,
        diagnostics=diagnostics_for(rng, status),
        tests=tests if status in (S.OK, S.TEST_FAILED) else [],
        compile_seconds=round(rng.uniform(0.1, 0.4), 3),
        run_seconds=round(rng.uniform(0.0, 0.2), 3),
        total_seconds=round(rng.uniform(0.2, 0.7), 3),
        backend="bwrap",
        check_id=check_id,
        detail="cpu time limit of 10s reached" if status == S.TIMEOUT else "",
    )


def first_code(v: sandbox_pb2.Verdict) -> str:
    codes = [d.code for d in v.diagnostics if d.level == "error" and d.code]
    return codes[0] if codes else S.CheckStatus.Name(v.status)


def episode(rng: random.Random, index: int) -> list:
    """The events of one task, in the order they are published."""
    run_number = index // EPISODES_PER_RUN
    run_id = f"run-{run_number:04d}"
    koan_number = index % KOANS_PER_DAY
    koan_id = f"koan-{koan_number:03d}"
    family = FAMILIES[koan_number % len(FAMILIES)]
    repeat = (index % EPISODES_PER_RUN) // KOANS_PER_DAY
    task_id = f"task-{index:07d}"
    max_attempts = 3
    attempts = rng.choices((1, 2, 3), weights=(5, 3, 2))[0]
    passed = attempts < max_attempts or rng.random() < 0.4
    out: list = [
        events_pb2.TaskSubmitted(
            task_id=task_id,
            koan_set="frozen",
            family=family,
            request=agent_pb2.SubmitTaskRequest(
                koan_id=koan_id,
                max_attempts=max_attempts,
                adapter_id="none",
                model=MODEL,
                seed=7 + repeat,
                run_id=run_id,
                correlation_id=run_id,
                mode=S.MODE_TEST,
            ),
        )
    ]
    codes = []
    for number in range(1, attempts + 1):
        last = number == attempts
        status = S.OK if last and passed else rng.choice(FAILED_STATUSES)
        check_id = f"check-{index:07d}-{number}"
        v = verdict_for(rng, status, check_id)
        code = rust_text(rng, 400, f"// {koan_id} attempt {number}\nfn main() {{")
        out.append(
            events_pb2.CheckCompleted(
                check_id=check_id,
                mode=S.MODE_TEST,
                edition="2021",
                backend="bwrap",
                source_sha256=f"{index:07d}{number:02d}".ljust(64, "0"),
                source_bytes=len(code),
                has_tests=True,
                task_id=task_id,
                verdict=v,
            )
        )
        out.append(
            events_pb2.AttemptRecorded(
                task_id=task_id,
                koan_id=koan_id,
                run_id=run_id,
                adapter_id="none",
                model=MODEL,
                attempt=agent_pb2.Attempt(
                    number=number,
                    prompt=rust_text(rng, 1024, f"Fix the Rust koan {koan_id} ({family}). Attempt {number}."),
                    completion=f"```rust\n{code}\n```",
                    code=code,
                    verdict=v,
                    prompt_tokens=rng.randint(250, 400),
                    completion_tokens=rng.randint(80, 200),
                    generate_seconds=round(rng.uniform(1.0, 6.0), 3),
                    temperature=0.0 if number == 1 else 0.7,
                    seed=1000 + number,
                ),
            )
        )
        if status != S.OK:
            codes.append(first_code(v))
    out.append(
        events_pb2.EpisodeCompleted(
            task_id=task_id,
            koan_id=koan_id,
            passed=passed,
            steps=attempts,
            error_codes=codes,
            adapter_id="none",
            model=MODEL,
            run_id=run_id,
            state=agent_pb2.TASK_PASSED if passed else agent_pb2.TASK_FAILED,
            final_code=code,
            koan_set="frozen",
            family=family,
            first_error_code=codes[0] if codes else "",
            last_error_code=codes[-1] if codes else "",
            repeated_error=any(a == b for a, b in zip(codes, codes[1:], strict=False)),
            correlation_id=run_id,
        )
    )
    out.append(
        events_pb2.KoanEvaluated(
            run_id=run_id,
            koan_id=koan_id,
            family=family,
            repeat=repeat,
            passed=passed,
            attempts=attempts,
            passed_first_attempt=passed and attempts == 1,
            error_codes=codes,
            task_id=task_id,
        )
    )
    return out


def event_stream(total: int, seed: int = 0) -> SyntheticStream:
    """`total` events: whole episodes, the last one cut where the count is reached."""
    rng = random.Random(seed)
    envelopes: list[events_pb2.EventEnvelope] = []
    types: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    index = 0
    while len(envelopes) < total:
        for event in episode(rng, index):
            if len(envelopes) == total:
                break
            name = event.DESCRIPTOR.name
            event_id = str(uuid.uuid5(BENCH_NAMESPACE, f"{seed}/{len(envelopes)}"))
            envelopes.append(
                events.wrap(
                    event, correlation_id=f"bench-{seed}", causation_id=f"task-{index}", event_id=event_id
                )
            )
            types[name] += 1
            rows.update(table_rows(event))
        index += 1
    rows["projected_events"] = total
    return SyntheticStream(envelopes, dict(types), dict(rows))


def table_rows(event) -> dict[str, int]:
    """The rows one event of the mix adds, by table."""
    name = event.DESCRIPTOR.name
    if name == "CheckCompleted":
        return {"sandbox_checks": 1, "sandbox_check_diagnostics": len(event.verdict.diagnostics)}
    table = {
        "TaskSubmitted": "tasks",
        "AttemptRecorded": "attempts",
        "EpisodeCompleted": "episodes",
        "KoanEvaluated": "koan_evaluations",
    }[name]
    return {table: 1}


# --- evaluation runs for the report ------------------------------------------------------------


def evaluation_run(
    run_id: str, koans: int, repeats: int, seed: int, pass_rate: float
) -> tuple[events_pb2.EvaluationStarted, list[events_pb2.KoanEvaluated]]:
    """A finished run of `koans` x `repeats` koan runs over every family, as its events."""
    rng = random.Random(seed)
    koan_ids = [f"koan-{i:04d}" for i in range(koans)]
    started = events_pb2.EvaluationStarted(
        run_id=run_id,
        request=evaluator_pb2.StartEvaluationRequest(
            koan_set="frozen", adapter_id="none", repeats=repeats, seed=11, max_attempts=3, model=MODEL
        ),
        koan_ids=koan_ids,
    )
    evaluated = []
    for repeat in range(repeats):
        for i, koan_id in enumerate(koan_ids):
            attempts = rng.choices((1, 2, 3), weights=(5, 3, 2))[0]
            passed = rng.random() < pass_rate
            failed = attempts - 1 if passed else attempts
            codes = [rng.choice((*ERROR_CODES, "TEST_FAILED", "TIMEOUT")) for _ in range(failed)]
            evaluated.append(
                events_pb2.KoanEvaluated(
                    run_id=run_id,
                    koan_id=koan_id,
                    family=FAMILIES[i % len(FAMILIES)],
                    repeat=repeat,
                    passed=passed,
                    attempts=attempts,
                    passed_first_attempt=passed and attempts == 1,
                    error_codes=codes,
                    task_id=f"{run_id}-{koan_id}-{repeat}",
                )
            )
    return started, evaluated
