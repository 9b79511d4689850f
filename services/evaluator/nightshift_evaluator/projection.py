"""Projection rules: what rows each event becomes. Pure functions of the delivered event.

A rule maps one delivery to the rows it adds. Later event types (episodes, training,
evaluation, adapters) slot in as more entries of RULES; the streams the evaluator consumes
follow from the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from nightshift import events
from nightshift.bus import Delivery
from nightshift.v1 import events_pb2, sandbox_pb2

# CHECK_MODE_UNSPECIFIED is treated as MODE_TEST by the sandbox (sandbox.proto).
MODE_NAMES: dict[int, str] = {
    sandbox_pb2.CHECK_MODE_UNSPECIFIED: "test",
    sandbox_pb2.MODE_BUILD: "build",
    sandbox_pb2.MODE_TEST: "test",
    sandbox_pb2.MODE_CLIPPY: "clippy",
}


@dataclass(frozen=True)
class RowInsert:
    """One row to insert into `table`; keys of `row` are column names."""

    table: str
    row: Mapping[str, object]


Rule = Callable[[Delivery], list[RowInsert]]


def status_name(status: int) -> str:
    """The CheckStatus enum name, spelled as in the proto (OK, COMPILE_ERROR, ...)."""
    try:
        return sandbox_pb2.CheckStatus.Name(status)
    except ValueError:
        return f"UNKNOWN_{status}"


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, f"unknown_{mode}")


def error_codes(diagnostics: list[sandbox_pb2.Diagnostic]) -> list[str]:
    """Codes of the error-level diagnostics that have one, in the order rustc reported them."""
    return [d.code for d in diagnostics if d.level == "error" and d.code]


def occurred_at(envelope: events_pb2.EventEnvelope) -> datetime | None:
    """The envelope's time as a naive UTC timestamp (DuckDB TIMESTAMP), microsecond precision."""
    if not envelope.HasField("occurred_at"):
        return None
    return envelope.occurred_at.ToDatetime()


def check_completed_rows(delivery: Delivery) -> list[RowInsert]:
    """A CheckCompleted becomes one sandbox_checks row and one row per diagnostic."""
    envelope = delivery.envelope
    event: events_pb2.CheckCompleted = delivery.event
    verdict = event.verdict
    diagnostics = list(verdict.diagnostics)
    passed = sum(1 for t in verdict.tests if t.passed)
    check = RowInsert(
        "sandbox_checks",
        {
            "event_id": envelope.event_id,
            "check_id": event.check_id or verdict.check_id,
            "occurred_at": occurred_at(envelope),
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
            "task_id": event.task_id,
            "status": status_name(verdict.status),
            "mode": mode_name(event.mode),
            "edition": event.edition,
            "backend": event.backend or verdict.backend,
            "source_sha256": event.source_sha256 or verdict.source_sha256,
            "source_bytes": event.source_bytes,
            "has_tests": event.has_tests,
            "tests_replaced": verdict.tests_replaced,
            "tests_passed": passed,
            "tests_failed": len(verdict.tests) - passed,
            "error_codes": error_codes(diagnostics),
            "compile_seconds": verdict.compile_seconds,
            "run_seconds": verdict.run_seconds,
            "total_seconds": verdict.total_seconds,
            "output_truncated": verdict.output_truncated,
            "detail": verdict.detail,
            "stream_sequence": delivery.stream_sequence,
        },
    )
    rows = [check]
    for position, d in enumerate(diagnostics, start=1):
        rows.append(
            RowInsert(
                "sandbox_check_diagnostics",
                {
                    "event_id": envelope.event_id,
                    "position": position,
                    "code": d.code,
                    "level": d.level,
                    "message": d.message,
                    "line": d.line,
                    "column": d.column,
                    "rendered": d.rendered,
                },
            )
        )
    return rows


# Full protobuf name of each projected event type -> its rule.
RULES: dict[str, Rule] = {
    events_pb2.CheckCompleted.DESCRIPTOR.full_name: check_completed_rows,
}


def rule_for(event_type: str) -> Rule | None:
    """The rule of an event type, or None when the projections ignore it."""
    return RULES.get(event_type)


def projected_streams(rules: Mapping[str, Rule] = RULES) -> list[str]:
    """The streams holding at least one event type that has a rule, in a stable order."""
    streams = set()
    for full_name in rules:
        name = full_name.rsplit(".", 1)[-1]
        streams.add(events.stream_for(events.SUBJECTS[name]))
    return sorted(streams)
