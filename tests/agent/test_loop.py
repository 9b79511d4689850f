"""The fix loop against a real Sandbox service (real nats-server, real rustc) with scripted answers.

The model is replaced by a generator that returns canned answers in order: the loop's behaviour
(history, decoding schedule, test re-attachment, budget, stopping) is what is tested here; the real
model runtime has its own tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from nightshift.corpus import Corpus
from nightshift.v1 import sandbox_pb2, sandbox_pb2_grpc
from nightshift_agent.extract import CUT_OFF, NO_PROGRAM
from nightshift_agent.loop import (
    DEFAULT_RETRY_TEMPERATURE,
    MAX_TEMPERATURE,
    RESAMPLE_TEMPERATURE_STEP,
    FixTask,
    Generation,
    attempt_decoding,
    derive_seed,
    program_key,
    run_fix_loop,
)
from nightshift_agent.prompts import (
    build_prompt,
    completion_cap,
    count_prompt_tokens,
    estimate_tokens,
    render_task,
)
from nightshift_sandbox.server import start

S = sandbox_pb2
KOAN = Corpus.load().get("move-009")
TASK = FixTask.from_koan(KOAN, task_id="task-1", correlation_id="run-1")
# Still E0382, but not the broken program verbatim, so the history shows its code.
STILL_MOVED = KOAN.broken.replace("heading_len", "title_len")
OWN_PASSING_TESTS = (
    "#[cfg(test)]\nmod tests {\n    #[test]\n    fn it_works() {\n        assert!(true);\n    }\n}\n"
)


def fenced(code: str, prose: str = "Here is the corrected program:") -> str:
    return f"{prose}\n\n```rust\n{code.strip()}\n```\n"


class ScriptedGenerator:
    """Returns the given answers in order (the last one repeats) and records every call."""

    def __init__(self, *answers: str | Generation):
        self.answers = list(answers)
        self.calls: list[dict] = []

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def generate(self, messages, *, max_tokens, temperature, seed):
        self.calls.append(
            {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        )
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, Generation):
            return answer
        return Generation(
            text=answer,
            prompt_tokens=count_prompt_tokens(messages, self.count_tokens),
            completion_tokens=self.count_tokens(answer),
            seconds=0.01,
            finish_reason="stop",
            prompt_seconds=0.004,
            reused_prompt_tokens=16 * (len(self.calls) - 1),
        )


@pytest.fixture
async def sandbox(nats_server, sandbox_config):
    config = replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url)
    service = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    yield sandbox_pb2_grpc.SandboxStub(channel)
    await channel.close()
    await service.stop(grace=5)


async def test_wrong_then_right_passes_in_two_steps_with_the_history_in_the_second_prompt(sandbox):
    generator = ScriptedGenerator(fenced(STILL_MOVED), fenced(KOAN.fix))
    recorded = []

    async def on_attempt(attempt):
        recorded.append(attempt)

    result = await run_fix_loop(TASK, generator, sandbox, seed=42, on_attempt=on_attempt)

    assert result.passed and result.steps == 2
    assert recorded == result.attempts
    first, second = result.attempts
    assert [first.number, second.number] == [1, 2]
    assert first.verdict.status == S.COMPILE_ERROR
    assert [d.code for d in first.verdict.diagnostics if d.level == "error"] == ["E0382"]
    assert second.verdict.status == S.OK and second.verdict.check_id
    assert result.error_codes == ["E0382"] and not result.repeated_error
    assert result.final_code == second.code == KOAN.fix.strip() + "\n"

    assert [a.temperature for a in result.attempts] == [0.0, DEFAULT_RETRY_TEMPERATURE]
    assert [c["temperature"] for c in generator.calls] == [0.0, DEFAULT_RETRY_TEMPERATURE]
    assert [a.seed for a in result.attempts] == [derive_seed(42, 1), derive_seed(42, 2)]
    assert [c["seed"] for c in generator.calls] == [a.seed for a in result.attempts]
    cap = completion_cap(estimate_tokens(KOAN.broken))
    assert all(c["max_tokens"] == cap for c in generator.calls)

    # The recorded prompt is the user message as sent; attempt 2's holds attempt 1 and its error.
    for attempt, call in zip(result.attempts, generator.calls, strict=True):
        assert call["messages"][-1] == {"role": "user", "content": attempt.prompt}
        assert attempt.prompt.startswith(render_task(TASK))
        assert attempt.prompt_tokens == count_prompt_tokens(call["messages"], estimate_tokens)
        assert attempt.completion_tokens > 0 and attempt.generate_seconds > 0
        # where the generation time went is recorded with it
        assert attempt.prompt_seconds == 0.004
        assert attempt.reused_prompt_tokens == 16 * (attempt.number - 1)
    assert "Attempt 1" not in first.prompt
    history = second.prompt[len(render_task(TASK)) :]
    assert "Attempt 1:\n```rust\n" + first.code in history
    assert "error[E0382]: borrow of moved value: `report`" in history
    assert "/tmp/" not in second.prompt and "/sandbox/" not in second.prompt
    assert first.completion == fenced(STILL_MOVED)


async def test_an_answer_without_code_is_a_failed_attempt_and_the_loop_goes_on(sandbox):
    generator = ScriptedGenerator("I am not sure how to fix this program.", fenced(KOAN.fix))
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=3)

    assert result.passed and result.steps == 2
    failed = result.attempts[0]
    assert failed.code == ""
    assert failed.verdict.status == S.COMPILE_ERROR
    assert failed.verdict.detail == NO_PROGRAM
    assert not failed.verdict.check_id  # never sent to the sandbox
    assert result.error_codes == ["COMPILE_ERROR"]
    assert "Attempt 1:\n(no program in the answer)\nResult: does not compile: " + NO_PROGRAM in (
        result.attempts[1].prompt
    )


async def test_a_cut_off_answer_is_a_failed_attempt(sandbox):
    cut = Generation(
        text="```rust\n" + KOAN.fix[:200],
        prompt_tokens=10,
        completion_tokens=64,
        seconds=1.0,
        finish_reason="length",
    )
    result = await run_fix_loop(TASK, ScriptedGenerator(cut, fenced(KOAN.fix)), sandbox)
    assert result.passed and result.steps == 2
    assert result.attempts[0].verdict.detail == CUT_OFF
    assert result.attempts[0].completion == cut.text


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        pytest.param(fenced(KOAN.decoys[0].source), S.TEST_FAILED, id="tests deleted"),
        pytest.param(fenced(KOAN.decoys[0].source + "\n" + OWN_PASSING_TESTS), S.TEST_FAILED, id="own tests"),
        pytest.param(
            fenced(KOAN.fix.split("pub fn publish")[0] + "\n" + OWN_PASSING_TESTS),
            S.COMPILE_ERROR,
            id="tested function removed",
        ),
    ],
)
async def test_a_model_cannot_pass_by_changing_the_tests(sandbox, answer, status):
    result = await run_fix_loop(TASK, ScriptedGenerator(answer), sandbox, max_attempts=2)

    assert not result.passed and result.steps == 2
    verdict = result.attempts[0].verdict
    assert verdict.status == status
    assert "it_works" not in result.attempts[0].code
    assert "it_works" not in {t.name for t in verdict.tests}
    if status == S.TEST_FAILED:
        assert {t.name: t.passed for t in verdict.tests} == {
            "tests::renders_rows_with_one_decimal": True,
            "tests::reports_heading_length": False,
        }
        assert "tests::reports_heading_length: panicked at line 20 of the tests" in result.attempts[1].prompt
    else:
        assert result.error_codes == ["E0425", "E0425"] and result.repeated_error
        # The error lies in the task's tests; rustc's rendering shows the offending test line.
        assert "cannot find function `publish`" in result.attempts[1].prompt
        assert "publish(sample()).1" in result.attempts[1].prompt


@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_max_attempts_is_respected(sandbox, max_attempts):
    generator = ScriptedGenerator(fenced(STILL_MOVED))
    seen = []

    async def on_attempt(attempt):
        seen.append(attempt.number)

    result = await run_fix_loop(
        TASK, generator, sandbox, max_attempts=max_attempts, seed=7, on_attempt=on_attempt, max_resamples=0
    )

    assert not result.passed
    assert result.steps == len(generator.calls) == max_attempts
    assert seen == list(range(1, max_attempts + 1))
    assert result.error_codes == ["E0382"] * max_attempts
    assert result.final_code == STILL_MOVED.strip() + "\n"
    assert [(a.temperature, a.seed) for a in result.attempts] == [
        attempt_decoding(n, 7) for n in range(1, max_attempts + 1)
    ]


async def test_max_attempts_must_be_positive(sandbox):
    with pytest.raises(ValueError, match="max_attempts"):
        await run_fix_loop(TASK, ScriptedGenerator(""), sandbox, max_attempts=0)


def test_the_seed_schedule_is_reproducible_and_differs_per_attempt():
    assert attempt_decoding(1, 5) == (0.0, derive_seed(5, 1))
    assert [derive_seed(5, n) for n in range(1, 6)] == [derive_seed(5, n) for n in range(1, 6)]
    assert len({derive_seed(5, n) for n in range(1, 6)} | {derive_seed(6, 2)}) == 6
    assert all(0 <= derive_seed(s, n) < 2**31 for s in (0, 2**64 - 1) for n in (1, 99))


async def test_the_token_budget_keeps_long_histories_within_the_context(sandbox):
    # Five long, different, wrong answers: the full history would not fit the context.
    answers = [fenced(STILL_MOVED.replace("out", f"output_number_{n}")) for n in range(5)]
    generator = ScriptedGenerator(*answers)
    cap = completion_cap(estimate_tokens(KOAN.broken))
    context = cap + 1100
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=5, context_tokens=context)

    assert result.steps == 5 and not result.passed
    for attempt, call in zip(result.attempts, generator.calls, strict=True):
        assert count_prompt_tokens(call["messages"], estimate_tokens) <= context - cap
        assert attempt.prompt.startswith(render_task(TASK))
    unbounded = build_prompt(TASK, result.attempts[:4])
    assert unbounded.tokens > context - cap
    last = result.attempts[-1].prompt
    assert "Attempt 1:\n(code not shown)" in last
    assert "Attempt 4:\n```rust\n" + result.attempts[3].code in last


async def test_busy_sandbox_is_retried(sandbox):
    class BusyOnce:
        def __init__(self):
            self.calls = 0

        async def Check(self, request):  # noqa: N802 - the gRPC method name
            self.calls += 1
            if self.calls == 1:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(), "queue full"
                )
            return await sandbox.Check(request)

    busy = BusyOnce()
    result = await run_fix_loop(TASK, ScriptedGenerator(fenced(KOAN.fix)), busy)
    assert result.passed and busy.calls == 2


async def test_cancellation_propagates_and_reports_no_partial_attempt(sandbox):
    started = asyncio.Event()

    class Slow(ScriptedGenerator):
        async def generate(self, messages, **kwargs):
            if self.calls:
                started.set()
                await asyncio.Event().wait()
            return await super().generate(messages, **kwargs)

    recorded = []

    async def on_attempt(attempt):
        recorded.append(attempt.number)

    generator = Slow(fenced(STILL_MOVED))
    task = asyncio.create_task(run_fix_loop(TASK, generator, sandbox, on_attempt=on_attempt))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorded == [1]


async def test_a_resumed_episode_continues_from_its_recorded_attempts(sandbox):
    interrupted = await run_fix_loop(
        TASK, ScriptedGenerator(fenced(STILL_MOVED)), sandbox, max_attempts=1, seed=3
    )
    generator = ScriptedGenerator(fenced(KOAN.fix))
    reported = []

    async def on_attempt(attempt):
        reported.append(attempt.number)

    result = await run_fix_loop(
        TASK,
        generator,
        sandbox,
        max_attempts=3,
        seed=3,
        on_attempt=on_attempt,
        previous_attempts=interrupted.attempts,
    )

    assert result.passed and result.steps == 2 and reported == [2]
    assert result.error_codes == ["E0382"]
    resumed = result.attempts[1]
    assert (resumed.number, resumed.temperature, resumed.seed) == (2, *attempt_decoding(2, 3))
    assert "Attempt 1:\n```rust\n" + STILL_MOVED.strip() in resumed.prompt

    again = ScriptedGenerator(fenced(KOAN.fix))
    finished = await run_fix_loop(TASK, again, sandbox, previous_attempts=result.attempts)
    assert finished.passed and finished.steps == 2 and not again.calls


async def test_a_retry_that_repeats_a_failed_program_is_sampled_again_hotter(sandbox):
    generator = ScriptedGenerator(fenced(STILL_MOVED), fenced(STILL_MOVED + "\n\n"), fenced(KOAN.fix))
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=2, seed=9, max_resamples=2)

    assert result.passed and result.steps == 2
    first, second = result.attempts
    assert first.resamples == 0 and first.resample_seconds == 0
    # the repeat (trailing blank lines aside) was discarded without a sandbox call; the next answer stands
    assert second.resamples == 1 and second.resample_seconds == pytest.approx(0.01)
    hotter = DEFAULT_RETRY_TEMPERATURE + RESAMPLE_TEMPERATURE_STEP
    assert [(c["temperature"], c["seed"]) for c in generator.calls] == [
        (0.0, derive_seed(9, 1)),
        (DEFAULT_RETRY_TEMPERATURE, derive_seed(9, 2)),
        (hotter, derive_seed(9, 2, 1)),
    ]
    assert (second.temperature, second.seed) == (hotter, derive_seed(9, 2, 1))
    assert second.completion == fenced(KOAN.fix)
    # the discarded answer used the same prompt
    assert generator.calls[1]["messages"] == generator.calls[2]["messages"]


async def test_a_retry_returning_the_broken_input_unchanged_is_a_repeat_but_attempt_one_is_kept(sandbox):
    generator = ScriptedGenerator(fenced(KOAN.broken), fenced(KOAN.broken), fenced(KOAN.fix))
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=2, max_resamples=1)

    first, second = result.attempts
    assert first.resamples == 0 and program_key(first.code) == program_key(KOAN.broken)
    assert first.verdict.status == S.COMPILE_ERROR  # the greedy first answer is judged as it is
    assert second.resamples == 1 and second.verdict.status == S.OK


async def test_resampling_stops_at_its_cap_and_the_last_answer_is_judged(sandbox):
    generator = ScriptedGenerator(fenced(STILL_MOVED))
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=3, max_resamples=2, seed=4)

    assert not result.passed and result.steps == 3
    assert len(generator.calls) == 1 + 2 * 3
    assert [a.resamples for a in result.attempts] == [0, 2, 2]
    assert all(a.verdict.status == S.COMPILE_ERROR and a.verdict.check_id for a in result.attempts)
    temperatures = [c["temperature"] for c in generator.calls]
    assert temperatures[1:4] == [attempt_decoding(2, 4, resample=r)[0] for r in range(3)]
    assert max(temperatures) <= MAX_TEMPERATURE


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("fn main() {}\n", "fn main() {}", True),
        ("\n\nfn main() {}   \n\n", "fn main() {}", True),
        ("fn main() {\n    x();  \n}", "fn main() {\n    x();\n}", True),
        ("fn main() {\n    x();\n}", "fn main() {\n  x();\n}", False),  # indentation is kept
        ("fn main() { x(); }", "fn main() { y(); }", False),
    ],
)
def test_program_key_ignores_trailing_whitespace_only(a, b, same):
    assert (program_key(a) == program_key(b)) is same


def test_resample_seeds_differ_from_the_attempt_seeds_and_each_other():
    seeds = {derive_seed(3, n, r) for n in range(2, 6) for r in range(3)}
    assert len(seeds) == 12
    assert derive_seed(3, 2, 0) == derive_seed(3, 2)


async def test_resampling_is_off_by_default(sandbox):
    generator = ScriptedGenerator(fenced(STILL_MOVED))
    result = await run_fix_loop(TASK, generator, sandbox, max_attempts=2)
    assert len(generator.calls) == 2 and [a.resamples for a in result.attempts] == [0, 0]
