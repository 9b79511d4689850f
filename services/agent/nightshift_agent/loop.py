"""The fix loop: prompt, generate, extract, check in the sandbox; up to N attempts, stop at the first pass.

Decoding schedule (reproducible for a given task seed): attempt 1 is greedy (temperature 0), so a
model's first answer is its single best guess; later attempts sample at `retry_temperature` with a
seed derived from (task seed, attempt number), so retries explore instead of repeating the greedy
answer, and a rerun with the same seed replays the same episode.

A small model is confident enough about code it has seen that sampling alone often returns the very
program that already failed (on the 0.5B and the frozen set, 55 % of the retries did). Such an answer
is known to fail, so with `max_resamples` > 0 a retry whose program repeats the broken input or an
earlier attempt's program is sampled again, hotter and with its own derived seed, up to that many
times; the attempt records how many answers it discarded and what they cost. It is off by default:
measured on the 0.5B's frozen set (docs/results.md), two resamples took the repeat-error rate from
73 % to 46 % but passed one koan more (17 vs 16 of 60) for 38 % more wall time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from nightshift.v1 import agent_pb2, sandbox_pb2

from nightshift_agent.extract import ExtractionError, extract_program
from nightshift_agent.prompts import FixTask, build_prompt, completion_cap, error_codes
from nightshift_agent.runtime import Generation

S = sandbox_pb2
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_TEMPERATURE = 0.7
DEFAULT_MAX_RESAMPLES = 0  # off: on the 0.5B's frozen run, 2 resamples cost 38 % more time for 1 koan
RESAMPLE_TEMPERATURE_STEP = 0.3  # each resample of a repeated program samples this much hotter
MAX_TEMPERATURE = 1.3
DEFAULT_CONTEXT_TOKENS = 4096
# A busy or restarting sandbox is waited for; any other RPC error ends the episode.
_RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
_CHECK_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0)

__all__ = [
    "EpisodeResult",
    "FixTask",
    "Generation",
    "Generator",
    "SandboxClient",
    "attempt_decoding",
    "derive_seed",
    "first_error_code",
    "program_key",
    "run_fix_loop",
]


class Generator(Protocol):
    async def generate(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float, seed: int
    ) -> Generation: ...

    def count_tokens(self, text: str) -> int: ...


class SandboxClient(Protocol):
    """The Sandbox gRPC stub (sandbox_pb2_grpc.SandboxStub on an aio channel) or anything alike."""

    def Check(self, request: sandbox_pb2.CheckRequest) -> Awaitable[sandbox_pb2.CheckResponse]: ...


OnAttempt = Callable[[agent_pb2.Attempt], Awaitable[None]]


@dataclass
class EpisodeResult:
    passed: bool
    attempts: list[agent_pb2.Attempt] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)  # first error code of each failed attempt
    final_code: str = ""  # the passing program, else the last program the model produced

    @property
    def steps(self) -> int:
        return len(self.attempts)

    @property
    def first_error_code(self) -> str:
        return self.error_codes[0] if self.error_codes else ""

    @property
    def last_error_code(self) -> str:
        return self.error_codes[-1] if self.error_codes else ""

    @property
    def repeated_error(self) -> bool:
        """The same error code on two consecutive failed attempts."""
        return any(a == b for a, b in zip(self.error_codes, self.error_codes[1:], strict=False))


def derive_seed(seed: int, attempt: int, resample: int = 0) -> int:
    """The sampling seed of one attempt (and of its n-th resample): stable across runs and platforms,
    fits llama.cpp's uint32."""
    key = f"{seed}:{attempt}" if resample == 0 else f"{seed}:{attempt}:{resample}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def attempt_decoding(
    attempt: int, seed: int, retry_temperature: float = DEFAULT_RETRY_TEMPERATURE, resample: int = 0
) -> tuple[float, int]:
    """(temperature, seed) of attempt `attempt` (1-based): greedy first, then seeded sampling; the
    n-th resample of a retry samples n steps hotter (capped) with its own seed."""
    if attempt == 1:
        return 0.0, derive_seed(seed, attempt)
    temperature = min(retry_temperature + resample * RESAMPLE_TEMPERATURE_STEP, MAX_TEMPERATURE)
    return temperature, derive_seed(seed, attempt, resample)


def program_key(code: str) -> str:
    """A program with trailing whitespace and blank edges removed: equal keys, equal programs."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def first_error_code(verdict: sandbox_pb2.Verdict) -> str:
    """The attempt's error code: rustc's first error code, else the status name (TEST_FAILED, ...)."""
    codes = error_codes(verdict)
    return codes[0] if codes else S.CheckStatus.Name(verdict.status)


def check_request(task: FixTask, code: str) -> sandbox_pb2.CheckRequest:
    """The candidate and, separately, the task's own tests: the sandbox re-attaches them."""
    return S.CheckRequest(
        source=code,
        tests=task.tests,
        edition=task.edition,
        mode=task.mode,
        task_id=task.task_id,
        correlation_id=task.correlation_id,
    )


async def run_fix_loop(
    task: FixTask,
    generator: Generator,
    sandbox: SandboxClient,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    seed: int = 0,
    on_attempt: OnAttempt | None = None,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    retry_temperature: float = DEFAULT_RETRY_TEMPERATURE,
    previous_attempts: Sequence[agent_pb2.Attempt] = (),
    max_resamples: int = DEFAULT_MAX_RESAMPLES,
) -> EpisodeResult:
    """Fix `task` in up to `max_attempts` attempts; `on_attempt` is awaited after each new one.

    `previous_attempts` are those an interrupted episode already recorded (a task resumed after a
    restart): they count towards `max_attempts`, form the history, and are not reported again; the
    numbering and the seed schedule continue from them, so a resumed episode is the one it would
    have been without the interruption.

    The prompt budget is the context minus the completion cap. An answer without a usable program is
    a failed attempt (COMPILE_ERROR with the reason as detail) and costs no sandbox call. A retry whose
    program repeats the input or an earlier attempt's is sampled again (module docstring), at most
    `max_resamples` times; the last answer stands whatever it is.
    Cancellation propagates; an attempt is reported only once it is complete.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    max_tokens = completion_cap(generator.count_tokens(task.source))
    budget = max(context_tokens - max_tokens, 0)
    result = EpisodeResult(passed=False)
    for earlier in previous_attempts:
        _record(result, earlier)
    if result.passed:
        return result
    for number in range(len(result.attempts) + 1, max_attempts + 1):
        prompt = build_prompt(task, result.attempts, budget=budget, count_tokens=generator.count_tokens)
        known_bad = {program_key(task.source)} | {program_key(a.code) for a in result.attempts if a.code}
        resamples, resample_seconds = 0, 0.0
        while True:
            temperature, attempt_seed = attempt_decoding(number, seed, retry_temperature, resamples)
            generation = await generator.generate(
                prompt.messages, max_tokens=max_tokens, temperature=temperature, seed=attempt_seed
            )
            try:
                code = extract_program(generation.text, cut_off=generation.finish_reason == "length")
                failure = None
            except ExtractionError as exc:
                code, failure = "", str(exc)
            repeated = bool(code) and program_key(code) in known_bad
            if number == 1 or not repeated or resamples >= max_resamples:
                break
            resamples += 1
            resample_seconds += generation.seconds
        if failure is not None:
            verdict = S.Verdict(status=S.COMPILE_ERROR, detail=failure)
        else:
            verdict = await _check(sandbox, check_request(task, code))
        attempt = agent_pb2.Attempt(
            number=number,
            prompt=prompt.user,
            completion=generation.text,
            code=code,
            verdict=verdict,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            generate_seconds=generation.seconds,
            prompt_seconds=generation.prompt_seconds,
            reused_prompt_tokens=generation.reused_prompt_tokens,
            temperature=temperature,
            seed=attempt_seed,
            resamples=resamples,
            resample_seconds=resample_seconds,
        )
        _record(result, attempt)
        if on_attempt is not None:
            await on_attempt(attempt)
        if result.passed:
            break
    return result


def _record(result: EpisodeResult, attempt: agent_pb2.Attempt) -> None:
    result.attempts.append(attempt)
    if attempt.code:
        result.final_code = attempt.code
    if attempt.verdict.status == S.OK:
        result.passed = True
    else:
        result.error_codes.append(first_error_code(attempt.verdict))


async def _check(sandbox: SandboxClient, request: sandbox_pb2.CheckRequest) -> sandbox_pb2.Verdict:
    for delay in _CHECK_BACKOFF_SECONDS:
        try:
            return (await sandbox.Check(request)).verdict
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _RETRYABLE:
                raise
        await asyncio.sleep(delay)
    return (await sandbox.Check(request)).verdict
