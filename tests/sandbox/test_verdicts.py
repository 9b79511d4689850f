"""Verdicts of the check pipeline on real rustc, for every backend: status, codes, tests, lints."""

from __future__ import annotations

from nightshift.v1 import sandbox_pb2 as S

USE_AFTER_MOVE = """
fn main() {
    let s = String::from("hi");
    let t = s;
    println!("{} {}", s, t);
}
"""

ADD = """
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}
"""

ADD_TESTS = """
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn zero() {
        assert_eq!(add(0, 0), 0);
    }
}
"""


def test_compile_error_reports_code_line_and_clean_rendering(check):
    verdict = check(USE_AFTER_MOVE, mode="build")
    assert verdict.status == S.COMPILE_ERROR
    errors = [d for d in verdict.diagnostics if d.level == "error"]
    assert [d.code for d in errors] == ["E0382"]
    assert (errors[0].line, errors[0].column) == (5, 23)
    assert "borrow of moved value" in errors[0].message
    assert "main.rs:5:23" in errors[0].rendered
    for text in (errors[0].rendered, errors[0].message):
        assert "/sandbox" not in text and "/tmp/" not in text and "/opt/rust" not in text


def test_passing_tests_are_ok(check):
    verdict = check(ADD, ADD_TESTS)
    assert verdict.status == S.OK
    assert [(t.name, t.passed) for t in verdict.tests] == [("tests::adds", True), ("tests::zero", True)]
    assert not verdict.tests_replaced
    assert verdict.compile_seconds > 0 and verdict.total_seconds >= verdict.compile_seconds


def test_wrong_fix_fails_the_task_tests(check):
    verdict = check(ADD.replace("a + b", "a - b"), ADD_TESTS)
    assert verdict.status == S.TEST_FAILED
    assert [t.name for t in verdict.tests if not t.passed] == ["tests::adds"]
    assert "tests::adds" in verdict.detail


def test_candidate_cannot_weaken_the_tests(check):
    """A candidate that ships its own always-passing tests still faces the task's tests."""
    cheating = ADD.replace("a + b", "0") + "\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn fine() {}\n}\n"
    verdict = check(cheating, ADD_TESTS)
    assert verdict.tests_replaced
    assert verdict.status == S.TEST_FAILED
    assert {t.name for t in verdict.tests} == {"tests::adds", "tests::zero"}


def test_build_mode_does_not_run_tests(check):
    verdict = check(ADD.replace("a + b", "a - b"), ADD_TESTS, mode="build")
    assert verdict.status == S.OK
    assert not verdict.tests


def test_program_without_tests_compiles_in_test_mode(check):
    verdict = check('fn main() { println!("hello"); }\n')
    assert verdict.status == S.OK


def test_edition_2024_is_honoured(check):
    # `gen` is a reserved keyword from edition 2024 on.
    source = 'fn main() { let gen = 1; println!("{gen}"); }\n'
    assert check(source, edition="2021").status == S.OK
    assert check(source, edition="2024").status == S.COMPILE_ERROR


def test_clippy_mode_fails_on_lints(check):
    source = 'fn main() {\n    let x = 5;\n    if x == x {\n        println!("same");\n    }\n}\n'
    assert check(source, mode="test").status == S.OK
    verdict = check(source, mode="clippy")
    assert verdict.status == S.LINT_FAILED
    assert any(d.level == "error" and "clippy" in d.rendered for d in verdict.diagnostics)


def test_clippy_mode_passes_clean_code(check):
    assert check(ADD, ADD_TESTS, mode="clippy").status == S.OK


def test_panicking_program_outside_tests_is_reported(check):
    tests = "#[cfg(test)]\nmod tests {\n    #[test]\n    fn boom() {\n        super::explode();\n    }\n}\n"
    verdict = check('pub fn explode() {\n    panic!("boom");\n}\n', tests)
    assert verdict.status == S.TEST_FAILED
    assert "boom" in verdict.stdout
