"""Splitting #[cfg(test)] items out of Rust source without being fooled by strings and comments."""

from __future__ import annotations

import pytest
from nightshift.rustsrc import has_main, split_tests

TESTS = "#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n        assert!(true);\n    }\n}"


@pytest.mark.parametrize(
    ("source", "program", "tests"),
    [
        ("fn main() {}\n", "fn main() {}\n", ""),
        (f"fn main() {{}}\n\n{TESTS}\n", "fn main() {}\n", TESTS + "\n"),
        # braces inside strings, chars, raw strings and comments do not end the module early
        (
            "#[cfg(test)]\nmod tests {\n    const S: &str = \"}\";\n    const C: char = '}';\n"
            '    const R: &str = r#"}"#; // }\n    /* } */\n}\nfn after() {}\n',
            "fn after() {}\n",
            "#[cfg(test)]\nmod tests {\n    const S: &str = \"}\";\n    const C: char = '}';\n"
            '    const R: &str = r#"}"#; // }\n    /* } */\n}\n',
        ),
        # an attribute inside a string or comment is not an item
        (
            '// #[cfg(test)] mod x {}\nfn main() { let s = "#[cfg(test)]"; }\n',
            '// #[cfg(test)] mod x {}\nfn main() { let s = "#[cfg(test)]"; }\n',
            "",
        ),
        # items ending in `;` and lifetimes that look like char literals
        (
            "#[cfg(test)]\nuse std::fmt;\nfn f<'a>(x: &'a str) -> &'a str { x }\n",
            "fn f<'a>(x: &'a str) -> &'a str { x }\n",
            "#[cfg(test)]\nuse std::fmt;\n",
        ),
        # spacing variants of the attribute
        ("fn a() {}\n# [ cfg ( test ) ]\nmod t {}\n", "fn a() {}\n", "# [ cfg ( test ) ]\nmod t {}\n"),
    ],
)
def test_split_tests(source, program, tests):
    assert split_tests(source) == (program, tests)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("fn main() {}", True),
        ("pub fn main_loop() {}", False),
        ("// fn main() {}\nfn other() {}", False),
        ('const S: &str = "fn main() {}";', False),
        ("fn  main  () {}", True),
    ],
)
def test_has_main(source, expected):
    assert has_main(source) is expected
