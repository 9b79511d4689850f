"""Prompt building: the task, the history with normalised diagnostics, the budget policy, the token cap."""

from __future__ import annotations

import pytest
from nightshift.chat import SYSTEM_PROMPT
from nightshift.corpus import Corpus
from nightshift.v1 import agent_pb2, sandbox_pb2
from nightshift_agent.extract import NO_PROGRAM
from nightshift_agent.prompts import (
    CLOSING_REQUEST,
    LONG_CODE_LINES,
    Detail,
    FixTask,
    build_prompt,
    completion_cap,
    count_prompt_tokens,
    estimate_tokens,
    normalise_diagnostics,
    panic_messages,
    render_task,
)

S = sandbox_pb2
KOAN = Corpus.load().get("move-009")
TASK = FixTask.from_koan(KOAN)
CODE = "pub fn f(v: Vec<i32>) -> usize {\n    let w = v;\n    v.len() + w.len()\n}\n"  # 4 lines

E0382 = S.Diagnostic(
    code="E0382",
    level="error",
    message="borrow of moved value: `v`",
    line=3,
    column=5,
    rendered="error[E0382]: borrow of moved value: `v`\n --> main.rs:3:5\n  |\n3 |     v.len() + w.len()\n"
    "  |     ^ value borrowed here after move",
)
WARNING = S.Diagnostic(level="warning", message="unused variable: `x`", line=2, rendered="warning: unused")
TESTS_E0425 = S.Diagnostic(code="E0425", level="error", message="cannot find function `publish`", line=9)
TEMP_PATH_ERROR = S.Diagnostic(
    level="error",
    message="couldn't read `/tmp/check-x1y2/data.txt`: No such file",
    line=1,
    rendered="error: couldn't read `/tmp/check-x1y2/data.txt`\n --> /sandbox/main.rs:1:1",
)
FAILED_STDOUT = (
    "\nrunning 2 tests\ntest tests::a ... ok\ntest tests::b ... FAILED\n\nfailures:\n\n"
    "---- tests::b stdout ----\n\nthread 'tests::b' (4) panicked at main.rs:12:9:\n"
    "assertion `left == right` failed\n  left: 35\n right: 5\n"
    "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\n"
    "failures:\n    tests::b\n\ntest result: FAILED. 1 passed; 1 failed\n"
)
TEST_FAILED = S.Verdict(
    status=S.TEST_FAILED,
    tests=[S.TestResult(name="tests::a", passed=True), S.TestResult(name="tests::b")],
    stdout=FAILED_STDOUT,
    detail="failed: tests::b",
)


def attempt(number: int, code: str, verdict: sandbox_pb2.Verdict) -> agent_pb2.Attempt:
    return agent_pb2.Attempt(number=number, code=code, verdict=verdict)


def compile_error(*diagnostics: sandbox_pb2.Diagnostic) -> sandbox_pb2.Verdict:
    return S.Verdict(status=S.COMPILE_ERROR, diagnostics=diagnostics)


@pytest.mark.parametrize(
    ("program_tokens", "cap"),
    [(0, 128), (40, 128), (43, 129), (100, 214), (600, 964), (640, 1024), (5000, 1024)],
)
def test_completion_cap_is_tied_to_the_program_length(program_tokens, cap):
    assert completion_cap(program_tokens) == cap


@pytest.mark.parametrize(
    ("task", "present", "absent"),
    [
        pytest.param(TASK, [KOAN.broken.strip(), KOAN.hint, "must pass", KOAN.tests.strip()], [], id="koan"),
        pytest.param(
            FixTask.from_koan(KOAN, include_hint=False), [KOAN.tests.strip()], ["Hint"], id="no hint"
        ),
        pytest.param(FixTask(source=CODE), [CODE.strip(), "must compile"], ["Hint", "tests"], id="no tests"),
        pytest.param(
            FixTask(source=CODE, tests=KOAN.tests, mode=S.MODE_BUILD),
            ["must compile"],
            ["#[cfg(test)]", "must pass"],
            id="build mode shows no tests",
        ),
    ],
)
def test_render_task(task, present, absent):
    text = render_task(task)
    assert text.startswith("Fix the Rust program below.")
    for part in present:
        assert part in text
    for part in absent:
        assert part not in text


@pytest.mark.parametrize(
    ("verdict", "code", "detail", "expected"),
    [
        pytest.param(
            compile_error(E0382, WARNING),
            CODE,
            Detail.FULL,
            ["Result: does not compile. The compiler reports:", E0382.rendered],
            id="full: rustc's rendering, warnings left out",
        ),
        pytest.param(
            compile_error(E0382, E0382, WARNING),
            CODE,
            Detail.BRIEF,
            [
                "Result: does not compile. The compiler reports:",
                "- error[E0382] line 3: borrow of moved value: `v`",
            ],
            id="brief: one line per distinct error",
        ),
        pytest.param(
            compile_error(E0382, TESTS_E0425),
            CODE,
            Detail.CODES,
            ["Result: does not compile (E0382, E0425)."],
            id="codes",
        ),
        pytest.param(
            compile_error(TESTS_E0425),
            CODE,
            Detail.BRIEF,
            [
                "Result: does not compile. The compiler reports:",
                "- error[E0425] line 4 of the tests: cannot find function `publish`",
            ],
            id="a line past the program is in the tests",
        ),
        pytest.param(
            compile_error(TEMP_PATH_ERROR),
            CODE,
            Detail.FULL,
            [
                "Result: does not compile. The compiler reports:",
                "error: couldn't read `data.txt`\n --> main.rs:1:1",
            ],
            id="temp paths removed",
        ),
        pytest.param(
            compile_error(
                *[S.Diagnostic(code=f"E0{n:03}", level="error", message="m", line=n) for n in range(9)]
            ),
            CODE,
            Detail.BRIEF,
            ["Result: does not compile. The compiler reports:"]
            + [f"- error[E0{n:03}] {f'line {n}' if n else '(no line)'}: m" for n in range(6)]
            + ["(and 3 more)"],
            id="brief keeps six errors",
        ),
        pytest.param(
            TEST_FAILED,
            CODE,
            Detail.FULL,
            [
                "Result: compiles, but tests fail. Failing tests: tests::b.",
                "- tests::b: panicked at line 7 of the tests\n  assertion `left == right` failed\n"
                "  left: 35\n  right: 5",
            ],
            id="failing test with its assertion",
        ),
        pytest.param(
            TEST_FAILED,
            CODE,
            Detail.BRIEF,
            [
                "Result: compiles, but tests fail. Failing tests: tests::b.",
                "- tests::b: panicked at line 7 of the tests\n  assertion `left == right` failed",
            ],
            id="failing test, brief",
        ),
        pytest.param(
            TEST_FAILED,
            CODE,
            Detail.CODES,
            ["Result: compiles, but tests fail (tests::b)."],
            id="failing, codes",
        ),
        pytest.param(
            S.Verdict(status=S.TEST_FAILED, detail="test binary killed by signal 6"),
            CODE,
            Detail.FULL,
            ["Result: compiles, but tests fail: test binary killed by signal 6"],
            id="test binary crashed",
        ),
        pytest.param(
            S.Verdict(status=S.TIMEOUT, detail="time limit reached while running the tests (10.0s wall)"),
            CODE,
            Detail.FULL,
            ["Result: ran out of time: time limit reached while running the tests (10.0s wall)"],
            id="timeout",
        ),
        pytest.param(
            S.Verdict(status=S.COMPILE_ERROR, detail="no Rust program found in the answer"),
            "",
            Detail.FULL,
            ["Result: does not compile: no Rust program found in the answer"],
            id="extraction failure",
        ),
        pytest.param(
            S.Verdict(status=S.LINT_FAILED, diagnostics=[WARNING]),
            CODE,
            Detail.BRIEF,
            [
                "Result: compiles and passes the tests, but clippy rejects it. The compiler reports:",
                "- warning line 2: unused variable: `x`",
            ],
            id="lint",
        ),
    ],
)
def test_normalise_diagnostics(verdict, code, detail, expected):
    assert normalise_diagnostics(verdict, code, detail) == expected


def test_panic_messages_support_the_older_panic_format():
    stdout = (
        "---- tests::t stdout ----\nthread 'tests::t' panicked at 'boom', main.rs:2:5\n"
        "note: run with `RUST_BACKTRACE=1`\n"
    )
    assert panic_messages(stdout, CODE) == {"tests::t": ["panicked at 'boom', line 2"]}


def test_first_prompt_is_the_task_alone():
    prompt = build_prompt(TASK)
    assert prompt.messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": prompt.user},
    ]
    assert prompt.user == render_task(TASK) + "\n\n" + CLOSING_REQUEST
    assert "```rust" in SYSTEM_PROMPT and "whole corrected file" in SYSTEM_PROMPT
    assert prompt.tokens == count_prompt_tokens(prompt.messages, estimate_tokens)


def test_history_shows_each_attempt_with_its_result():
    history = [
        attempt(1, CODE, compile_error(E0382)),
        attempt(2, "", S.Verdict(status=S.COMPILE_ERROR, detail="no Rust program found in the answer")),
        attempt(3, KOAN.broken, compile_error(E0382)),
        attempt(4, CODE, compile_error(E0382)),
    ]
    user = build_prompt(TASK, history).user
    assert user.startswith(render_task(TASK))
    assert user.endswith(CLOSING_REQUEST)
    expected_in_order = [
        "Earlier attempts failed.",
        f"Attempt 1:\n```rust\n{CODE}```\nResult: does not compile.",
        "error[E0382]: borrow of moved value: `v`",
        "Attempt 2:\n(no program in the answer)\nResult: does not compile: " + NO_PROGRAM,
        "Attempt 3:\n(the program was returned unchanged)\nResult: does not compile.",
        "Attempt 4:\n(the same program as attempt 1)\nResult: does not compile.",
    ]
    positions = [user.index(part) for part in expected_in_order]
    assert positions == sorted(positions)


def test_long_code_is_shown_as_a_diff_against_the_broken_program():
    original = "".join(f"const C{n}: i32 = {n};\n" for n in range(LONG_CODE_LINES + 10))
    changed = original.replace("C7: i32 = 7;", "C7: i64 = 7;")
    task = FixTask(source=original)
    user = build_prompt(task, [attempt(1, changed, compile_error(E0382))]).user
    history = user[user.index("Attempt 1:") :]
    assert "Changes to the original program:\n```diff\n" in history
    assert "-const C7: i32 = 7;\n+const C7: i64 = 7;" in history
    assert "C40" not in history


def test_prompts_of_an_episode_share_their_prefix():
    history = [attempt(n, CODE.replace("w", f"w{n}"), compile_error(E0382)) for n in (1, 2, 3)]
    previous = build_prompt(TASK, history[:1]).user.removesuffix(CLOSING_REQUEST)
    for k in (2, 3):
        current = build_prompt(TASK, history[:k]).user
        assert current.startswith(previous)
        previous = current.removesuffix(CLOSING_REQUEST)


def long_history(n: int) -> list[agent_pb2.Attempt]:
    code = KOAN.broken.replace("heading_len", "title_len")
    many = [
        S.Diagnostic(code="E0382", level="error", message=f"error {k}", line=k, rendered=E0382.rendered)
        for k in range(4)
    ]
    return [attempt(k, code.replace("out", f"out{k}"), compile_error(*many)) for k in range(1, n + 1)]


@pytest.mark.parametrize("budget", [5000, 1400, 1100, 900, 760, 650, 600])
def test_budget_keeps_the_prompt_within_it_and_the_task_whole(budget):
    history = long_history(4)
    full = build_prompt(TASK, history)
    prompt = build_prompt(TASK, history, budget=budget)
    assert prompt.within_budget and prompt.tokens <= budget
    assert prompt.tokens == count_prompt_tokens(prompt.messages, estimate_tokens)
    assert prompt.user.startswith(render_task(TASK))
    if budget >= full.tokens:
        assert prompt.user == full.user


def test_budget_drops_older_code_first_then_trims_diagnostics_then_attempts():
    history = long_history(3)
    full = build_prompt(TASK, history).tokens
    seen = []
    for budget in range(full, 0, -20):
        prompt = build_prompt(TASK, history, budget=budget)
        state = (
            prompt.user.count("(code not shown)"),
            prompt.user.count("The compiler reports:"),
            prompt.shown_attempts,
        )
        if not seen or seen[-1] != state:
            seen.append(state)
    codes_hidden = [s[0] for s in seen]
    assert codes_hidden[: codes_hidden.index(3) + 1] == [0, 1, 2, 3]
    assert [s[2] for s in seen][-1] == 0
    assert [s[2] for s in seen] == sorted((s[2] for s in seen), reverse=True)


def test_the_latest_attempt_keeps_its_code_longest():
    history = long_history(3)
    full = build_prompt(TASK, history).tokens
    prompt = build_prompt(TASK, history, budget=full - 100)
    assert prompt.user.count("(code not shown)") == 1
    assert "Attempt 1:\n(code not shown)" in prompt.user


def test_a_task_larger_than_the_budget_is_sent_whole():
    prompt = build_prompt(TASK, long_history(2), budget=50)
    assert not prompt.within_budget
    assert prompt.user.startswith(render_task(TASK))
    assert prompt.shown_attempts == 0 and prompt.omitted_attempts == 2
    assert "(2 of 2 earlier attempts are not shown.)" in prompt.user
