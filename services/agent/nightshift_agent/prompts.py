"""The chat prompt for one attempt: the task, then the history of earlier attempts, within a token budget.

Layout of the user message (the system message never changes):

    the task      the broken program, the hint (only when the koan has one), the tests that must pass
    the history   attempts >= 2 only: each earlier attempt's code (in full, as a diff against the
                  broken program when long, or a back-reference when repeated) and its result, with
                  the diagnostics as the sandbox normalised them (error code, message, line)
    the request   one closing line repeating the answer format

The task comes first and the history is appended oldest first, so consecutive prompts of an episode
share their longest possible prefix (the runtime can reuse its cached prompt state).

Budget policy, applied until the prompt fits, one attempt at a time: drop the code of the older
attempts (oldest first), shorten their diagnostics to one line each, then the same for the latest
attempt, then reduce every attempt to its status and error codes, then drop whole attempts (oldest
first). The task itself is never cut: a task that alone exceeds the budget is sent whole.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from nightshift.chat import messages_for
from nightshift.corpus import Koan
from nightshift.v1 import agent_pb2, sandbox_pb2

S = sandbox_pb2
TokenCounter = Callable[[str], int]

CLOSING_REQUEST = "Answer with the whole corrected program in one ```rust block."

# Chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n) and the
# assistant header that opens the reply; an estimate that errs on the high side.
MESSAGE_OVERHEAD_TOKENS = 6
REPLY_OVERHEAD_TOKENS = 4

# Completion cap: the answer is the whole file, so it is about as long as the broken program.
# cap = clamp(ceil(1.5 * tokens(broken program)) + 64, 128, 1024): half again for the fix's growth,
# 64 for the fences and a stray sentence; the floor keeps tiny programs fixable, the ceiling bounds
# the cost of a model that rambles (decoding time dominates the cost of an evaluation).
COMPLETION_GROWTH = 1.5
COMPLETION_SLACK_TOKENS = 64
MIN_COMPLETION_TOKENS = 128
MAX_COMPLETION_TOKENS = 1024

# Beyond this many lines an attempt's code is shown as a diff against the broken program.
LONG_CODE_LINES = 60
# Caps that hold even at full detail, so one noisy verdict cannot fill the budget.
MAX_RENDERED_ERRORS = 4
MAX_RENDERED_LINES = 18
MAX_BRIEF_ERRORS = 6
MAX_FAILING_TESTS = 3
MAX_PANIC_LINES = 6
MAX_LINE_CHARS = 200

_MODE_NAMES = {"test": S.MODE_TEST, "build": S.MODE_BUILD, "clippy": S.MODE_CLIPPY}
_STATUS_PHRASES = {
    S.COMPILE_ERROR: "does not compile",
    S.TEST_FAILED: "compiles, but tests fail",
    S.LINT_FAILED: "compiles and passes the tests, but clippy rejects it",
    S.TIMEOUT: "ran out of time",
    S.MEMORY_LIMIT: "ran out of memory",
    S.OUTPUT_LIMIT: "printed too much output",
    S.SANDBOX_ERROR: "could not be checked",
}
# Temp directories and the sandbox's work dir; the sandbox strips them already, this is the safety net.
_TEMP_PATH = re.compile(r"(?:/private)?(?:/tmp|/var/folders|/sandbox)(?:/[^\s/:'\"`]+)*/")
_MAIN_RS_LOCATION = re.compile(r"main\.rs:(\d+):(\d+):?")
_PANIC = re.compile(r"^thread '([^']+)'(?: \(\d+\))? panicked at (.*)$")
_FAILURE_HEADER = re.compile(r"^---- (\S+) stdout ----$")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 3.5 characters per token for code), rounded up."""
    return math.ceil(len(text) / 3.5)


def completion_cap(program_tokens: int) -> int:
    """max_tokens for an answer to a program of `program_tokens` tokens (formula above)."""
    wanted = math.ceil(COMPLETION_GROWTH * program_tokens) + COMPLETION_SLACK_TOKENS
    return max(MIN_COMPLETION_TOKENS, min(MAX_COMPLETION_TOKENS, wanted))


@dataclass(frozen=True)
class FixTask:
    """What the loop fixes: a program, the tests it must pass, and how the sandbox checks it."""

    source: str
    tests: str = ""
    hint: str = ""
    mode: int = S.MODE_TEST
    edition: str = "2021"
    koan_id: str = ""
    task_id: str = ""
    correlation_id: str = ""

    @classmethod
    def from_koan(
        cls, koan: Koan, *, include_hint: bool = True, task_id: str = "", correlation_id: str = ""
    ) -> FixTask:
        """The task of a koan: its broken program, its tests, its check mode and edition."""
        return cls(
            source=koan.broken,
            tests=koan.tests,
            hint=koan.hint if include_hint else "",
            mode=_MODE_NAMES.get(koan.mode, S.MODE_TEST),
            edition=koan.edition,
            koan_id=koan.id,
            task_id=task_id,
            correlation_id=correlation_id,
        )

    @property
    def runs_tests(self) -> bool:
        return self.mode != S.MODE_BUILD and bool(self.tests.strip())


class Detail(IntEnum):
    """How much of an attempt's verdict the prompt shows."""

    CODES = 0  # the status and the error codes / failing test names, one line
    BRIEF = 1  # one line per diagnostic or failing test
    FULL = 2  # rustc's rendering, the assertion messages


@dataclass(frozen=True)
class Prompt:
    """The messages for one attempt, the user message alone (as recorded), and its token count."""

    messages: list[dict[str, str]]
    user: str
    tokens: int
    shown_attempts: int = 0
    omitted_attempts: int = 0
    within_budget: bool = True


def count_prompt_tokens(messages: Sequence[dict[str, str]], count_tokens: TokenCounter) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + REPLY_OVERHEAD_TOKENS


def render_task(task: FixTask) -> str:
    """The task part of the user message: never shortened."""
    parts = ["Fix the Rust program below.", _fence(task.source)]
    if task.hint.strip():
        parts.append(f"Hint: {task.hint.strip()}")
    if task.runs_tests:
        parts.append(
            "The tests below must pass. They are added to your program when it is checked, "
            "so do not repeat them in your answer."
        )
        parts.append(_fence(task.tests))
    elif task.mode == S.MODE_BUILD:
        parts.append("The program must compile without errors.")
    else:
        parts.append("The program must compile without errors and keep its behaviour.")
    return "\n\n".join(parts)


@dataclass
class _View:
    """How one earlier attempt is shown; the budget policy lowers these step by step."""

    attempt: agent_pb2.Attempt
    show_code: bool = True
    detail: Detail = Detail.FULL
    shown: bool = True


def build_prompt(
    task: FixTask,
    history: Sequence[agent_pb2.Attempt] = (),
    *,
    budget: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> Prompt:
    """The prompt for the attempt after `history`, shortened to `budget` tokens by the policy above."""
    views = [_View(a) for a in history]
    prompt = _assemble(task, views, count_tokens)
    if budget is None:
        return prompt
    for step in _shortening_steps(views):
        if prompt.tokens <= budget:
            break
        step()
        prompt = _assemble(task, views, count_tokens)
    return Prompt(
        messages=prompt.messages,
        user=prompt.user,
        tokens=prompt.tokens,
        shown_attempts=prompt.shown_attempts,
        omitted_attempts=prompt.omitted_attempts,
        within_budget=prompt.tokens <= budget,
    )


def _shortening_steps(views: list[_View]) -> list[Callable[[], None]]:
    """The budget policy as an ordered list of one-attempt reductions."""

    def change(view: _View, **fields) -> Callable[[], None]:
        def apply() -> None:
            for name, value in fields.items():
                setattr(view, name, value)

        return apply

    older, latest = views[:-1], views[-1:]
    steps = [change(v, show_code=False) for v in older]
    steps += [change(v, detail=Detail.BRIEF) for v in older]
    steps += [change(v, show_code=False) for v in latest]
    steps += [change(v, detail=Detail.BRIEF) for v in latest]
    steps += [change(v, detail=Detail.CODES) for v in views]
    steps += [change(v, shown=False) for v in views]
    return steps


def _assemble(task: FixTask, views: Sequence[_View], count_tokens: TokenCounter) -> Prompt:
    parts = [render_task(task)]
    shown = [v for v in views if v.shown]
    omitted = len(views) - len(shown)
    if views:
        parts.append(_history_heading(len(views), omitted))
        earlier: dict[str, int] = {}
        for view in views:
            if view.shown:
                parts.append(render_attempt(view.attempt, task, view.show_code, view.detail, earlier))
            if view.attempt.code:
                earlier.setdefault(view.attempt.code, view.attempt.number)
    parts.append(CLOSING_REQUEST)
    user = "\n\n".join(parts)
    messages = messages_for(user)
    return Prompt(
        messages=messages,
        user=user,
        tokens=count_prompt_tokens(messages, count_tokens),
        shown_attempts=len(shown),
        omitted_attempts=omitted,
    )


def _history_heading(total: int, omitted: int) -> str:
    heading = "Earlier attempts failed. Do not repeat them; fix what the checks below report."
    if omitted:
        heading += f" ({omitted} of {total} earlier attempts are not shown.)"
    return heading


def render_attempt(
    attempt: agent_pb2.Attempt,
    task: FixTask,
    show_code: bool = True,
    detail: Detail = Detail.FULL,
    earlier: dict[str, int] | None = None,
) -> str:
    """One earlier attempt: its code (or a stand-in) and its result at the given detail."""
    earlier = earlier or {}
    lines = [f"Attempt {attempt.number}:"]
    code = attempt.code
    if not code:
        lines.append("(no program in the answer)")
    elif code.strip() == task.source.strip():
        lines.append("(the program was returned unchanged)")
    elif code in earlier and earlier[code] != attempt.number:
        lines.append(f"(the same program as attempt {earlier[code]})")
    elif show_code:
        lines.append(_code_or_diff(code, task.source))
    else:
        lines.append("(code not shown)")
    lines.extend(normalise_diagnostics(attempt.verdict, code, detail))
    return "\n".join(lines)


def _code_or_diff(code: str, original: str) -> str:
    if code.count("\n") + 1 <= LONG_CODE_LINES:
        return _fence(code)
    diff = difflib.unified_diff(
        original.strip("\n").splitlines(),
        code.strip("\n").splitlines(),
        "original",
        "attempt",
        n=1,
        lineterm="",
    )
    body = "\n".join(list(diff)[2:])
    return "Changes to the original program:\n" + _fence(body, "diff")


def _fence(text: str, lang: str = "rust") -> str:
    return f"```{lang}\n{text.strip(chr(10))}\n```"


def error_codes(verdict: sandbox_pb2.Verdict) -> list[str]:
    """rustc codes of the error-level diagnostics, in order, each once."""
    return list(dict.fromkeys(d.code for d in verdict.diagnostics if d.level == "error" and d.code))


def failing_tests(verdict: sandbox_pb2.Verdict) -> list[str]:
    return [t.name for t in verdict.tests if not t.passed]


def normalise_diagnostics(verdict: sandbox_pb2.Verdict, code: str, detail: Detail = Detail.FULL) -> list[str]:
    """The result lines of one verdict: status, then diagnostics or failing tests, without temp paths.

    Line numbers are those of `code` as sent to the sandbox; a line beyond it lies in the task's tests,
    which the sandbox appends after one blank line, and is reported as a line of the tests.
    """
    status = verdict.status
    phrase = _STATUS_PHRASES.get(status, S.CheckStatus.Name(status))
    if status in (S.COMPILE_ERROR, S.LINT_FAILED) and verdict.diagnostics:
        return _compile_lines(verdict, code, detail, phrase)
    if status == S.TEST_FAILED:
        return _test_lines(verdict, code, detail, phrase)
    result = f"Result: {phrase}."
    if verdict.detail:
        result = f"Result: {phrase}: {_clip(_scrub(verdict.detail))}"
    return [result]


def _compile_lines(verdict: sandbox_pb2.Verdict, code: str, detail: Detail, phrase: str) -> list[str]:
    errors = [d for d in verdict.diagnostics if d.level == "error"] or list(verdict.diagnostics)
    unique = list({(d.code, d.message, d.line): d for d in errors}.values())
    codes = error_codes(verdict)
    if detail == Detail.CODES:
        return [f"Result: {phrase}" + (f" ({', '.join(codes)})." if codes else ".")]
    lines = [f"Result: {phrase}. The compiler reports:"]
    shown = unique[: MAX_BRIEF_ERRORS if detail == Detail.BRIEF else MAX_RENDERED_ERRORS]
    for d in shown:
        if detail == Detail.BRIEF:
            label = f"{d.level}[{d.code}]" if d.code else d.level
            lines.append(f"- {label} {_where(d.line, code)}: {_clip(_scrub(d.message))}")
        else:
            rendered = _scrub(d.rendered or d.message).splitlines()[:MAX_RENDERED_LINES]
            lines.append("\n".join(_clip(line) for line in rendered))
    if len(unique) > len(shown):
        lines.append(f"(and {len(unique) - len(shown)} more)")
    return lines


def _test_lines(verdict: sandbox_pb2.Verdict, code: str, detail: Detail, phrase: str) -> list[str]:
    failed = failing_tests(verdict)
    if not failed:
        return [f"Result: {phrase}: {_clip(_scrub(verdict.detail or 'the test binary failed'))}"]
    names = ", ".join(failed)
    if detail == Detail.CODES:
        return [f"Result: {phrase} ({names})."]
    panics = panic_messages(verdict.stdout, code)
    lines = [f"Result: {phrase}. Failing tests: {names}."]
    for name in failed[:MAX_FAILING_TESTS]:
        message = panics.get(name, [])
        if detail == Detail.BRIEF:
            message = message[:2]
        if message:
            lines.append(f"- {name}: " + "\n  ".join(message))
    return lines


def panic_messages(stdout: str, code: str) -> dict[str, list[str]]:
    """Per failing test, its panic location and message (the assertion and its left/right values)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in _scrub(stdout).splitlines():
        line = raw.rstrip()
        if header := _FAILURE_HEADER.match(line):
            current = found.setdefault(header.group(1), [])
            continue
        if current is None:
            continue
        if not line or line.startswith("note: run with `RUST_BACKTRACE") or line == "failures:":
            if current:
                current = None
            continue
        if panic := _PANIC.match(line):
            place = _MAIN_RS_LOCATION.sub(lambda m: _where(int(m.group(1)), code), panic.group(2)).rstrip(":")
            line = f"panicked at {place}"
        if len(current) < MAX_PANIC_LINES:
            current.append(_clip(line.strip()))
    return {name: lines for name, lines in found.items() if lines}


def _where(line: int, code: str) -> str:
    if line <= 0:
        return "(no line)"
    program_lines = len(code.rstrip().splitlines())
    if code and line > program_lines + 1:
        return f"line {line - program_lines - 1} of the tests"
    return f"line {line}"


def _scrub(text: str) -> str:
    return _TEMP_PATH.sub("", text)


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."
