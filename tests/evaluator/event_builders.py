"""Builders of every event type and a realistic mix of them: one cycle's day, night and dawn.

The mix is small enough to compute every view by hand; the expected values in the tests
that use it follow from the comments here.
"""

from __future__ import annotations

import asyncio

import grpc
from evaluator_support import check_completed, diagnostic, plain_rows, query
from nightshift import events
from nightshift.v1 import agent_pb2, evaluator_pb2, evaluator_pb2_grpc, events_pb2, sandbox_pb2, trainer_pb2

S = sandbox_pb2


def verdict(status: int, *codes: str, tests: tuple[tuple[str, bool], ...] = ()) -> sandbox_pb2.Verdict:
    return S.Verdict(
        status=status,
        diagnostics=[diagnostic(c) for c in codes],
        tests=[S.TestResult(name=n, passed=p) for n, p in tests],
        total_seconds=0.5,
        check_id=f"check-{status}-{'-'.join(codes)}",
    )


def task_submitted(task_id: str, koan_id: str, family: str, run_id: str = "r1") -> events_pb2.TaskSubmitted:
    return events_pb2.TaskSubmitted(
        task_id=task_id,
        koan_set="frozen",
        family=family,
        request=agent_pb2.SubmitTaskRequest(
            koan_id=koan_id,
            max_attempts=3,
            adapter_id="none",
            model="qwen-0.5b",
            seed=7,
            run_id=run_id,
            correlation_id="cycle-1",
            mode=S.MODE_TEST,
        ),
    )


def attempt(
    task_id: str, koan_id: str, number: int, v: sandbox_pb2.Verdict, run_id: str = "r1", prompt: str = ""
) -> events_pb2.AttemptRecorded:
    return events_pb2.AttemptRecorded(
        task_id=task_id,
        koan_id=koan_id,
        run_id=run_id,
        adapter_id="",
        model="qwen-0.5b",
        attempt=agent_pb2.Attempt(
            number=number,
            prompt=prompt or f"fix {koan_id} (attempt {number})",
            completion=f"```rust\nfn main() {{}} // {number}\n```",
            code=f"fn main() {{}} // {number}",
            verdict=v,
            prompt_tokens=100 + number,
            completion_tokens=20 * number,
            generate_seconds=0.5 * number,
            prompt_seconds=0.1 * number,
            reused_prompt_tokens=64 * (number - 1),
            resamples=number - 1,
            resample_seconds=0.75 * (number - 1),
            temperature=0.0 if number == 1 else 0.7,
            seed=1000 + number,
        ),
    )


def episode(
    task_id: str, koan_id: str, family: str, passed: bool, codes: list[str], run_id: str = "r1"
) -> events_pb2.EpisodeCompleted:
    return events_pb2.EpisodeCompleted(
        task_id=task_id,
        koan_id=koan_id,
        passed=passed,
        steps=len(codes) + (1 if passed else 0),
        error_codes=codes,
        model="qwen-0.5b",
        run_id=run_id,
        state=agent_pb2.TASK_PASSED if passed else agent_pb2.TASK_FAILED,
        final_code="fn main() {}",
        koan_set="frozen",
        family=family,
        first_error_code=codes[0] if codes else "",
        last_error_code=codes[-1] if codes else "",
        repeated_error=any(a == b for a, b in zip(codes, codes[1:], strict=False)),
        correlation_id="cycle-1",
    )


def day_events() -> list:
    """Three tasks of run r1.

    t1 (k1, ownership): E0382+E0499, E0382, OK -> passes at attempt 3; repeat error E0382 at 2.
    t2 (k2, traits): TEST_FAILED, TEST_FAILED, TIMEOUT -> fails; repeat error TEST_FAILED at 2.
    t3 (k3, ownership): OK at once.
    """
    test_fail = (("tests::a", True), ("tests::b", False))
    return [
        task_submitted("t1", "k1", "ownership"),
        attempt("t1", "k1", 1, verdict(S.COMPILE_ERROR, "E0382", "E0382", "E0499")),
        attempt("t1", "k1", 2, verdict(S.COMPILE_ERROR, "E0382")),
        attempt("t1", "k1", 3, verdict(S.OK, tests=(("tests::a", True),))),
        episode("t1", "k1", "ownership", True, ["E0382", "E0382"]),
        task_submitted("t2", "k2", "traits"),
        attempt("t2", "k2", 1, verdict(S.TEST_FAILED, tests=test_fail)),
        attempt("t2", "k2", 2, verdict(S.TEST_FAILED, tests=test_fail)),
        attempt("t2", "k2", 3, verdict(S.TIMEOUT)),
        episode("t2", "k2", "traits", False, ["TEST_FAILED", "TEST_FAILED", "TIMEOUT"]),
        task_submitted("t3", "k3", "ownership"),
        attempt("t3", "k3", 1, verdict(S.OK)),
        episode("t3", "k3", "ownership", True, []),
    ]


def job_requested(job_id: str) -> events_pb2.TrainingJobRequested:
    return events_pb2.TrainingJobRequested(
        job_id=job_id,
        mix=trainer_pb2.MixSpec(recipe="replay", parameters={"replay_ratio": "1.0"}, base_adapter_id=""),
        preset="cpu-lora",
        preset_fields={"max_steps": "20", "learning_rate": "1e-4"},
        example_ids=["e1", "e2", "e3"],
        data_hash=f"hash-{job_id}",
        excluded_count=2,
        excluded_by_reason={"frozen": 2},
        model="qwen-0.5b",
        seed=11,
    )


def night_events() -> list:
    """j1 completes (adapter a1), j2 fails, j3 is cancelled, j4 stays queued."""
    return [
        job_requested("j1"),
        events_pb2.TrainingJobStarted(job_id="j1", device="cpu"),
        events_pb2.TrainingJobProgressed(
            job_id="j1", progress=trainer_pb2.JobProgress(step=5, total_steps=20, loss=1.5)
        ),
        events_pb2.TrainingJobProgressed(
            job_id="j1",
            progress=trainer_pb2.JobProgress(
                step=10, total_steps=20, loss=1.25, tokens_per_second=50.0, eta_seconds=30.0
            ),
        ),
        events_pb2.TrainingJobCompleted(
            job_id="j1", adapter_id="a1", train_seconds=60.0, train_tokens=12345, final_loss=1.0
        ),
        job_requested("j2"),
        events_pb2.TrainingJobStarted(job_id="j2", device="cpu"),
        events_pb2.TrainingJobFailed(job_id="j2", error="out of memory"),
        job_requested("j3"),
        events_pb2.TrainingJobCancelled(job_id="j3", reason="asked by the user"),
        job_requested("j4"),
    ]


def adapter(adapter_id: str, verified: bool = True) -> events_pb2.AdapterTrained:
    a = trainer_pb2.Adapter(
        adapter_id=adapter_id,
        state=trainer_pb2.ADAPTER_CANDIDATE,
        model="qwen-0.5b",
        gguf_path=f"/adapters/{adapter_id}.gguf",
        job_id="j1",
        sha256=f"sha-{adapter_id}",
        recipe="replay",
        data_hash="hash-j1",
        preset="cpu-lora",
        metrics={"final_loss": 1.0, "train_seconds": 60.0},
    )
    if verified:
        a.verification.CopyFrom(
            trainer_pb2.AdapterVerification(
                passed=True,
                tolerance=0.05,
                max_abs_diff=0.01,
                adapter_effect=0.5,
                reference_effect=0.49,
                prompt="fn main() {",
                detail="ok",
            )
        )
    return events_pb2.AdapterTrained(adapter=a)


def adapter_events() -> list:
    """a1 promoted, a2 promoted over a1, a3 rejected, then rolled back from a2 to a1.

    Final states: a1 champion, a2 retired, a3 rejected; the champion of qwen-0.5b is a1.
    """
    return [
        adapter("a1"),
        adapter("a2", verified=False),
        adapter("a3"),
        events_pb2.AdapterPromoted(
            adapter_id="a1", reason="gate d1", gate_decision_id="d1", model="qwen-0.5b"
        ),
        events_pb2.AdapterPromoted(
            adapter_id="a2",
            previous_champion_id="a1",
            reason="gate d2",
            gate_decision_id="d2",
            model="qwen-0.5b",
        ),
        events_pb2.AdapterRejected(adapter_id="a3", reason="2 regressions", gate_decision_id="d3"),
        events_pb2.AdapterRolledBack(
            from_adapter_id="a2", to_adapter_id="a1", reason="worse in use", model="qwen-0.5b"
        ),
    ]


def koan_evaluated(
    run_id: str, koan_id: str, family: str, repeat: int, passed: bool, first: bool, attempts: int
) -> events_pb2.KoanEvaluated:
    return events_pb2.KoanEvaluated(
        run_id=run_id,
        koan_id=koan_id,
        family=family,
        repeat=repeat,
        passed=passed,
        attempts=attempts,
        passed_first_attempt=first,
        error_codes=[] if first else ["E0382"],
        task_id=f"{run_id}-{koan_id}-{repeat}",
    )


def cycle_request() -> evaluator_pb2.StartCycleRequest:
    return evaluator_pb2.StartCycleRequest(
        cycles=2,
        recipe="replay",
        preset="cpu-lora",
        model="qwen-0.5b",
        repeats=3,
        quick=True,
        overrides={"max_steps": "20"},
        recipe_parameters={"replay_ratio": "1.0"},
        max_attempts=3,
        seed=5,
        day_set="smoke",
        policy={"max_regressions": "0"},
    )


def dawn_events() -> list:
    """Run r2 over k1, k2, k3 with 3 repeats, its summary, a gate decision and the cycle's phases
    (the dawn of round 1 of cycle run cycle-1, which is then done).

    Majority over repeats: k1 pass (2 of 3), first attempt 1 of 3 -> no; k2 fail (1 of 3);
    k3 pass, first attempt 3 of 3. So r2: 3 koans, 2 passed, pass_at_1 1/3;
    ownership (k1, k3) 2/2, traits (k2) 0/1.
    """
    evaluated = [
        koan_evaluated("r2", "k1", "ownership", 1, True, True, 1),
        koan_evaluated("r2", "k1", "ownership", 2, True, False, 2),
        koan_evaluated("r2", "k1", "ownership", 3, False, False, 3),
        koan_evaluated("r2", "k2", "traits", 1, False, False, 3),
        koan_evaluated("r2", "k2", "traits", 2, False, False, 3),
        koan_evaluated("r2", "k2", "traits", 3, True, False, 2),
        koan_evaluated("r2", "k3", "ownership", 1, True, True, 1),
        koan_evaluated("r2", "k3", "ownership", 2, True, True, 1),
        koan_evaluated("r2", "k3", "ownership", 3, True, True, 1),
    ]
    summary = evaluator_pb2.EvaluationSummary(
        run_id="r2",
        koan_set="frozen",
        adapter_id="a1",
        requested_adapter="champion",
        total=3,
        passed=2,
        pass_rate=2 / 3,
        pass_at_1=1 / 3,
        pass_rate_low=0.2,
        pass_rate_high=0.94,
        median_attempts=2.0,
        mean_attempts=17 / 9,
        repeat_error_rate=0.25,
        families=[
            evaluator_pb2.FamilyRate(family="ownership", passed=2, total=2, pass_rate=1.0),
            evaluator_pb2.FamilyRate(family="traits", passed=0, total=1, pass_rate=0.0),
        ],
        finished=True,
        model="qwen-0.5b",
        repeats=3,
        seed=5,
        max_attempts=3,
        evaluated=9,
        expected=9,
        error_codes={"E0382": 6},
        correlation_id="cycle-1",
        pass_rate_mean=0.7,
        pass_at_1_low=0.06,
        pass_at_1_high=0.79,
    )
    decision = evaluator_pb2.GateDecision(
        decision_id="d1",
        adapter_id="a1",
        promote=True,
        reason="no regressions",
        regressions=0,
        gains=1,
        heldout_delta=0.0,
        reasons=["0 regressions", "1 gain"],
        candidate_run_id="r2",
        champion_run_id="r1",
        candidate_pass_rate=2 / 3,
        champion_pass_rate=1 / 3,
        sign_test_p=1.0,
        policy={"max_regressions": "0"},
        correlation_id="cycle-1",
    )
    return [
        events_pb2.CyclePhaseStarted(cycle_id="cycle-1", cycle=1, phase="dawn", request=cycle_request()),
        events_pb2.EvaluationStarted(
            run_id="r2",
            request=evaluator_pb2.StartEvaluationRequest(
                koan_set="frozen", adapter_id="champion", repeats=3, seed=5, max_attempts=3, model="qwen-0.5b"
            ),
            koan_ids=["k1", "k2", "k3"],
        ),
        *evaluated,
        events_pb2.EvaluationCompleted(summary=summary),
        events_pb2.GateDecided(decision=decision),
        events_pb2.CyclePhaseCompleted(
            cycle_id="cycle-1",
            cycle=1,
            phase="dawn",
            run_ids=["r2"],
            adapter_id="a1",
            seconds=42.5,
            round=evaluator_pb2.CycleRound(
                cycle=1,
                day_run_id="r1",
                job_id="j1",
                adapter_id="a1",
                candidate_frozen_run_id="r2",
                champion_frozen_run_id="r1",
                decision=decision,
                phase_seconds={"day": 10.0, "night": 20.0, "dawn": 42.5},
            ),
        ),
        # "done" ends the cycle run, so the evaluator's cycle saga has nothing to resume.
        events_pb2.CyclePhaseCompleted(cycle_id="cycle-1", cycle=1, phase="done", seconds=72.5),
    ]


def sandbox_events() -> list:
    return [
        check_completed("c1", S.OK, tests=(("t::a", True),), task_id="t3"),
        check_completed("c2", S.COMPILE_ERROR, diagnostics=(diagnostic("E0382"), diagnostic("E0499"))),
    ]


def event_mix() -> list:
    """Every event type of the design at least once, in the order a cycle would publish them."""
    return [*sandbox_events(), *day_events(), *night_events(), *adapter_events(), *dawn_events()]


# Rows each table holds once the mix is projected.
MIX_COUNTS = {
    "sandbox_checks": 2,
    "sandbox_check_diagnostics": 2,
    "tasks": 3,
    "attempts": 7,
    "episodes": 3,
    "training_jobs_requested": 4,
    "training_job_events": 7,
    "adapters": 3,
    "adapter_events": 4,
    "evaluation_runs": 1,
    "koan_evaluations": 9,
    "evaluation_summaries": 1,
    "gate_decisions": 1,
    "cycle_phases": 3,
    "cycle_requests": 1,
    "cycle_rounds": 1,
}


async def publish(bus, items: list, correlation_id: str = "cycle-1") -> list[events_pb2.EventEnvelope]:
    return [await bus.publish(e, correlation_id=correlation_id, causation_id="test") for e in items]


async def stream_ends(bus) -> dict[str, int]:
    """The last sequence of every stream."""
    return {stream: await bus.stream_last_sequence(stream) for stream in events.STREAMS}


async def wait_until_projected(
    stub: evaluator_pb2_grpc.EvaluatorStub, ends: dict[str, int], within_seconds: float = 60.0
) -> None:
    """Poll projection_positions until every stream with events is projected up to `ends`."""
    wanted = {s: n for s, n in ends.items() if n > 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    positions: dict[str, int] = {}
    while loop.time() < deadline:
        try:
            rows = plain_rows(
                await query(
                    stub,
                    "SELECT stream, last_sequence FROM projection_positions WHERE consumer = 'projection'",
                )
            )
            positions = dict(rows)
        except grpc.aio.AioRpcError:
            positions = {}
        if all(positions.get(s, 0) >= n for s, n in wanted.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"positions {positions}, expected {wanted}")
