"""Parsing rustc JSON and libtest output (pure functions)."""

from __future__ import annotations

import json

import pytest
from nightshift_sandbox.diagnostics import normalise_paths, parse_rustc_json, parse_test_output


def diag(message, level="error", code=None, spans=(), rendered=None):
    return json.dumps(
        {
            "$message_type": "diagnostic",
            "message": message,
            "code": {"code": code, "explanation": None} if code else None,
            "level": level,
            "spans": list(spans),
            "children": [],
            "rendered": rendered if rendered is not None else message,
        }
    )


SPAN = {"file_name": "main.rs", "line_start": 7, "column_start": 3, "is_primary": True}


def test_errors_and_warnings_are_kept_summaries_dropped():
    stderr = "\n".join(
        [
            diag("unused variable: `x`", level="warning", spans=[SPAN]),
            diag(
                "borrow of moved value: `s`",
                code="E0382",
                spans=[SPAN],
                rendered="error[E0382]: borrow of moved value\n --> /sandbox/main.rs:7:3",
            ),
            diag("aborting due to 1 previous error"),
            diag("For more information about this error, try `rustc --explain E0382`.", level="failure-note"),
            "note: some linker noise",
        ]
    )
    diagnostics, other = parse_rustc_json(stderr)
    assert [(d.level, d.code, d.line, d.column) for d in diagnostics] == [
        ("warning", "", 7, 3),
        ("error", "E0382", 7, 3),
    ]
    assert diagnostics[1].rendered == "error[E0382]: borrow of moved value\n --> main.rs:7:3"
    assert other == ["note: some linker noise"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--> /sandbox/main.rs:1:2", "--> main.rs:1:2"),
        ("/opt/rust/lib/rustlib/src/rust/library/core/src/fmt.rs", "<rust>/library/core/src/fmt.rs"),
        (
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/io.rs",
            "<rust>/library/std/src/io.rs",
        ),
        ("/tmp/nightshift-sandbox/check-abc123/main.rs", "main.rs"),
        ("no paths here", "no paths here"),
    ],
)
def test_normalise_paths(text, expected):
    assert normalise_paths(text) == expected


def test_parse_test_output():
    stdout = (
        "running 3 tests\ntest tests::a ... ok\ntest tests::b ... FAILED\ntest tests::c ... ignored\n"
        "test result: FAILED. 1 passed; 1 failed; 1 ignored\n"
    )
    assert [(t.name, t.passed) for t in parse_test_output(stdout)] == [
        ("tests::a", True),
        ("tests::b", False),
    ]
