"""Projection rules as pure functions: each event becomes exactly the rows expected."""

from __future__ import annotations

from datetime import datetime

import pytest
from evaluator_support import check_completed, delivery, diagnostic, sample_checks
from nightshift.v1 import events_pb2, sandbox_pb2
from nightshift_evaluator import projection


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (sandbox_pb2.OK, "OK"),
        (sandbox_pb2.COMPILE_ERROR, "COMPILE_ERROR"),
        (sandbox_pb2.TEST_FAILED, "TEST_FAILED"),
        (sandbox_pb2.LINT_FAILED, "LINT_FAILED"),
        (sandbox_pb2.TIMEOUT, "TIMEOUT"),
        (sandbox_pb2.MEMORY_LIMIT, "MEMORY_LIMIT"),
        (sandbox_pb2.OUTPUT_LIMIT, "OUTPUT_LIMIT"),
        (sandbox_pb2.SANDBOX_ERROR, "SANDBOX_ERROR"),
        (sandbox_pb2.CHECK_STATUS_UNSPECIFIED, "CHECK_STATUS_UNSPECIFIED"),
        (99, "UNKNOWN_99"),
    ],
)
def test_status_is_spelled_like_the_proto_enum(status, name):
    assert projection.status_name(status) == name


@pytest.mark.parametrize(
    ("mode", "name"),
    [
        (sandbox_pb2.MODE_BUILD, "build"),
        (sandbox_pb2.MODE_TEST, "test"),
        (sandbox_pb2.MODE_CLIPPY, "clippy"),
        (sandbox_pb2.CHECK_MODE_UNSPECIFIED, "test"),
        (42, "unknown_42"),
    ],
)
def test_mode_names(mode, name):
    assert projection.mode_name(mode) == name


@pytest.mark.parametrize(
    ("diagnostics", "codes"),
    [
        ((), []),
        ((diagnostic("E0382"),), ["E0382"]),
        ((diagnostic("E0308"), diagnostic("E0382"), diagnostic("E0308")), ["E0308", "E0382", "E0308"]),
        ((diagnostic("unused_variables", level="warning"), diagnostic("E0425")), ["E0425"]),
        ((diagnostic("", level="error"), diagnostic("E0599")), ["E0599"]),
        ((diagnostic("E0277", level="note"), diagnostic("E0277", level="help")), []),
    ],
)
def test_error_codes_keep_error_level_codes_in_order(diagnostics, codes):
    assert projection.error_codes(list(diagnostics)) == codes


def test_check_completed_becomes_one_check_row_and_one_row_per_diagnostic():
    event = check_completed(
        "chk-1",
        sandbox_pb2.COMPILE_ERROR,
        mode=sandbox_pb2.MODE_BUILD,
        diagnostics=(
            diagnostic("E0382", line=3, column=9),
            diagnostic("", level="warning", line=1, column=5),
        ),
        tests=(("t::a", True), ("t::b", False), ("t::c", False)),
        task_id="task-9",
        detail="",
    )
    d = delivery(event, sequence=41, event_id="evt-1", correlation_id="cycle-1")
    d.envelope.occurred_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678901))

    rows = projection.check_completed_rows(d)

    assert [r.table for r in rows] == ["sandbox_checks"] + ["sandbox_check_diagnostics"] * 2
    assert dict(rows[0].row) == {
        "event_id": "evt-1",
        "check_id": "chk-1",
        "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678901),
        "correlation_id": "cycle-1",
        "causation_id": "cause",
        "task_id": "task-9",
        "status": "COMPILE_ERROR",
        "mode": "build",
        "edition": "2021",
        "backend": "bwrap",
        "source_sha256": "sha-chk-1",
        "source_bytes": 105,
        "has_tests": True,
        "tests_replaced": False,
        "tests_passed": 1,
        "tests_failed": 2,
        "error_codes": ["E0382"],
        "compile_seconds": 0.25,
        "run_seconds": 0.5,
        "total_seconds": 0.75,
        "output_truncated": False,
        "detail": "",
        "stream_sequence": 41,
    }
    assert [dict(r.row) for r in rows[1:]] == [
        {
            "event_id": "evt-1",
            "position": 1,
            "code": "E0382",
            "level": "error",
            "message": "error E0382",
            "line": 3,
            "column": 9,
            "rendered": "error[E0382]: at src/main.rs:3:9",
        },
        {
            "event_id": "evt-1",
            "position": 2,
            "code": "",
            "level": "warning",
            "message": "warning without code",
            "line": 1,
            "column": 5,
            "rendered": "warning[]: at src/main.rs:1:5",
        },
    ]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # The verdict's copies fill in what the event leaves empty.
        (
            events_pb2.CheckCompleted(
                verdict=sandbox_pb2.Verdict(check_id="v-id", backend="docker", source_sha256="v-sha")
            ),
            {"check_id": "v-id", "backend": "docker", "source_sha256": "v-sha", "mode": "test"},
        ),
        (
            events_pb2.CheckCompleted(
                check_id="e-id",
                backend="bwrap",
                source_sha256="e-sha",
                verdict=sandbox_pb2.Verdict(check_id="v-id", backend="docker", source_sha256="v-sha"),
            ),
            {"check_id": "e-id", "backend": "bwrap", "source_sha256": "e-sha", "mode": "test"},
        ),
        (
            events_pb2.CheckCompleted(),
            {"check_id": "", "status": "CHECK_STATUS_UNSPECIFIED", "error_codes": [], "tests_passed": 0},
        ),
    ],
)
def test_check_row_fields(event, expected):
    row = projection.check_completed_rows(delivery(event))[0].row
    assert {k: row[k] for k in expected} == expected


def test_envelope_without_time_gives_null_occurred_at():
    d = delivery(check_completed("x"))
    d.envelope.ClearField("occurred_at")
    assert projection.check_completed_rows(d)[0].row["occurred_at"] is None


def test_same_delivery_gives_the_same_rows():
    for event in sample_checks():
        d = delivery(event, sequence=3)
        assert projection.check_completed_rows(d) == projection.check_completed_rows(d)


def test_rules_and_streams():
    assert projection.rule_for("nightshift.v1.CheckCompleted") is projection.check_completed_rows
    assert projection.rule_for("nightshift.v1.EpisodeCompleted") is projection.episode_completed_rows
    assert projection.rule_for("nightshift.v1.NoSuchEvent") is None
    assert projection.projected_streams() == ["ADAPTERS", "EPISODES", "EVALUATION", "SANDBOX", "TRAINING"]
    fewer = {
        "nightshift.v1.CheckCompleted": projection.check_completed_rows,
        "nightshift.v1.AdapterPromoted": projection.adapter_event_rows,
    }
    assert projection.projected_streams(fewer) == ["ADAPTERS", "SANDBOX"]
