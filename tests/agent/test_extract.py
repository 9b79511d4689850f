"""Code extraction from model answers: fences, prose, several blocks, cut-off output, stripped tests."""

from __future__ import annotations

import pytest
from nightshift_agent.extract import (
    CUT_OFF,
    NO_PROGRAM,
    ONLY_TESTS,
    UNBALANCED,
    ExtractionError,
    braces_balance,
    extract_program,
)

PROGRAM = 'pub fn greet(name: &str) -> String {\n    format!("hello {name}")\n}\n'
STRUCT = "#[derive(Debug)]\npub struct Point {\n    pub x: i32,\n}\n"
OWN_TESTS = "#[cfg(test)]\nmod tests {\n    #[test]\n    fn always() {}\n}\n"


def fence(code: str, tag: str = "rust") -> str:
    return f"```{tag}\n{code}```"


@pytest.mark.parametrize(
    ("answer", "cut_off", "expected"),
    [
        pytest.param(fence(PROGRAM), False, PROGRAM, id="one rust block"),
        pytest.param(f"Here is the fix:\n\n{fence(PROGRAM)}\n\nIt borrows now.", False, PROGRAM, id="prose"),
        pytest.param(fence(PROGRAM, ""), False, PROGRAM, id="bare fence"),
        pytest.param(fence(PROGRAM, "rs"), False, PROGRAM, id="rs tag"),
        pytest.param(fence(PROGRAM, "Rust"), False, PROGRAM, id="capitalised tag"),
        pytest.param(fence(PROGRAM, "rust,ignore"), False, PROGRAM, id="tag with attributes"),
        pytest.param("  ```rust\n" + PROGRAM + "  ```\n", False, PROGRAM, id="indented fences"),
        pytest.param(
            "The change:\n" + fence("fn greet(name: &str)\n") + "\nWhole file:\n" + fence(PROGRAM),
            False,
            PROGRAM,
            id="snippet then whole file",
        ),
        pytest.param(
            fence(PROGRAM) + "\nor shorter:\n" + fence("fn f() {}\n"), False, PROGRAM, id="longest block wins"
        ),
        pytest.param(
            fence("pub struct A;\n") + "\n" + fence("pub struct B;\n"),
            False,
            "pub struct B;\n",
            id="no fn: the last block",
        ),
        pytest.param(
            fence("[dependencies]\nserde = 1\n", "toml") + "\n" + fence(PROGRAM),
            False,
            PROGRAM,
            id="other languages ignored",
        ),
        pytest.param(
            fence("cargo test\n", "") + "\n" + fence(PROGRAM), False, PROGRAM, id="shell block ignored"
        ),
        pytest.param(PROGRAM, False, PROGRAM, id="no fences"),
        pytest.param(
            f"Sure! The fixed program is:\n\n{STRUCT}\n{PROGRAM}\nThis compiles because it borrows.\n",
            False,
            STRUCT + "\n" + PROGRAM,
            id="no fences, prose around and between items",
        ),
        pytest.param(
            "use std::fmt;\n\nfn main(\n) {\n    let x = 1;\n}\n",
            False,
            "use std::fmt;\n\nfn main(\n) {\n    let x = 1;\n}\n",
            id="no fences, multi-line signature",
        ),
        pytest.param("```rust\n" + PROGRAM, False, PROGRAM, id="closing fence forgotten, model stopped"),
        pytest.param(fence(PROGRAM) + "\nLet me also explain", True, PROGRAM, id="cut off after the block"),
        pytest.param(fence(PROGRAM + "\n" + OWN_TESTS), False, PROGRAM, id="own tests stripped"),
        pytest.param(
            fence('fn brace() -> &\'static str {\n    "}{" // }\n}\n'),
            False,
            'fn brace() -> &\'static str {\n    "}{" // }\n}\n',
            id="braces in literals and comments",
        ),
    ],
)
def test_extracts_the_program(answer, cut_off, expected):
    assert extract_program(answer, cut_off=cut_off) == expected


@pytest.mark.parametrize(
    ("answer", "cut_off", "reason"),
    [
        pytest.param("", False, NO_PROGRAM, id="empty"),
        pytest.param("I cannot fix this program, sorry.", False, NO_PROGRAM, id="prose only"),
        pytest.param(fence("cargo run\n", "sh"), False, NO_PROGRAM, id="shell only"),
        pytest.param("```rust\n" + PROGRAM[:30], True, CUT_OFF, id="cut off inside the block"),
        pytest.param("```rust\n" + PROGRAM, True, CUT_OFF, id="cut off right at the end"),
        pytest.param("```rust\n", True, CUT_OFF, id="cut off after the fence"),
        pytest.param("```rust\n" + PROGRAM[:40], False, UNBALANCED, id="open block, unbalanced"),
        pytest.param(
            fence("fn main() {\n    if true {\n}\n"), False, UNBALANCED, id="closed block, unbalanced"
        ),
        pytest.param(PROGRAM[:40], True, CUT_OFF, id="no fences, cut off"),
        pytest.param(
            fence('fn main() {}\nconst S: &str = "never closed\n'), False, UNBALANCED, id="open string"
        ),
        pytest.param(fence(OWN_TESTS), False, ONLY_TESTS, id="only tests"),
    ],
)
def test_refuses_answers_without_a_usable_program(answer, cut_off, reason):
    with pytest.raises(ExtractionError) as caught:
        extract_program(answer, cut_off=cut_off)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("code", "balanced"),
    [
        ("fn f() { (1, [2]) }", True),
        ("fn f() { (1, [2) }", False),
        ("fn f() }{", False),
        ("fn f() { '{' }", True),
        ('fn f() { r#"}"# }', True),
        ("fn f() {} /* open", False),
        ("fn f<'a>(x: &'a str) {} // {", True),
    ],
)
def test_braces_balance(code, balanced):
    assert braces_balance(code) is balanced
