"""Projection rules: what rows each event becomes. Pure functions of the delivered event.

A rule maps one delivery to the rows it adds; RULES holds one rule per event type of the
design, so the streams the evaluator consumes follow from it. A rule that cannot make sense
of an event raises EventRejectedError (a ValueError): the projector then records the event
as a dead letter instead of rows, and moves on.

Every event table starts with the envelope columns (event_id, stream_sequence, occurred_at,
correlation_id, causation_id); a payload field of the same name as an envelope column is
prefixed with what it belongs to (request_correlation_id, episode_correlation_id, ...).
Columns that an event type of a shared table does not carry are NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from google.protobuf import message as pb_message
from nightshift import events
from nightshift.bus import Delivery
from nightshift.v1 import agent_pb2, evaluator_pb2, events_pb2, sandbox_pb2, trainer_pb2

# CHECK_MODE_UNSPECIFIED is treated as MODE_TEST by the sandbox (sandbox.proto).
MODE_NAMES: dict[int, str] = {
    sandbox_pb2.CHECK_MODE_UNSPECIFIED: "test",
    sandbox_pb2.MODE_BUILD: "build",
    sandbox_pb2.MODE_TEST: "test",
    sandbox_pb2.MODE_CLIPPY: "clippy",
}

# The state an adapter holds, in the spelling of the adapter_states view.
ADAPTER_STATE_NAMES: dict[int, str] = {
    trainer_pb2.ADAPTER_STATE_UNSPECIFIED: "unspecified",
    trainer_pb2.ADAPTER_CANDIDATE: "candidate",
    trainer_pb2.ADAPTER_CHAMPION: "champion",
    trainer_pb2.ADAPTER_REJECTED: "rejected",
    trainer_pb2.ADAPTER_RETIRED: "retired",
}


@dataclass(frozen=True)
class RowInsert:
    """One row to insert into `table`; keys of `row` are column names."""

    table: str
    row: Mapping[str, object]


Rule = Callable[[Delivery], list[RowInsert]]


class EventRejectedError(ValueError):
    """The event cannot become rows (a field its rows are keyed by is missing or out of range)."""


def status_name(status: int) -> str:
    """The CheckStatus enum name, spelled as in the proto (OK, COMPILE_ERROR, ...)."""
    try:
        return sandbox_pb2.CheckStatus.Name(status)
    except ValueError:
        return f"UNKNOWN_{status}"


def task_state_name(state: int) -> str:
    """The TaskState enum name, spelled as in the proto (TASK_PASSED, ...)."""
    try:
        return agent_pb2.TaskState.Name(state)
    except ValueError:
        return f"UNKNOWN_{state}"


def adapter_state_name(state: int) -> str:
    return ADAPTER_STATE_NAMES.get(state, f"unknown_{state}")


def mode_name(mode: int) -> str:
    return MODE_NAMES.get(mode, f"unknown_{mode}")


def error_codes(diagnostics: list[sandbox_pb2.Diagnostic]) -> list[str]:
    """Codes of the error-level diagnostics that have one, in the order rustc reported them."""
    return [d.code for d in diagnostics if d.level == "error" and d.code]


def unique_error_codes(verdict: sandbox_pb2.Verdict) -> list[str]:
    """rustc codes of the error-level diagnostics, in order, each once (as the agent lists them)."""
    return list(dict.fromkeys(error_codes(list(verdict.diagnostics))))


def first_error_code(verdict: sandbox_pb2.Verdict) -> str:
    """A failed attempt's error code: rustc's first error code, else the status name; "" when it passed."""
    if verdict.status == sandbox_pb2.OK:
        return ""
    codes = unique_error_codes(verdict)
    return codes[0] if codes else status_name(verdict.status)


def occurred_at(envelope: events_pb2.EventEnvelope) -> datetime | None:
    """The envelope's time as a naive UTC timestamp (DuckDB TIMESTAMP), microsecond precision."""
    if not envelope.HasField("occurred_at"):
        return None
    return envelope.occurred_at.ToDatetime()


def required(value: str, field: str) -> str:
    """`value` when it is not empty, else EventRejectedError naming `field`."""
    if not value:
        raise EventRejectedError(f"{field} is empty")
    return value


def envelope_columns(delivery: Delivery) -> dict[str, object]:
    """The columns every event table starts with."""
    envelope = delivery.envelope
    return {
        "event_id": envelope.event_id,
        "stream_sequence": delivery.stream_sequence,
        "occurred_at": occurred_at(envelope),
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
    }


def event_row(table: str, delivery: Delivery, payload: Mapping[str, object]) -> RowInsert:
    return RowInsert(table, {**envelope_columns(delivery), **payload})


def string_map(values: Mapping[str, object]) -> dict[str, object]:
    """A protobuf map as a plain dict with sorted keys, so equal maps give equal rows."""
    return {k: values[k] for k in sorted(values)}


def verb_of(event: pb_message.Message, prefix: str) -> str:
    """`TrainingJobProgressed` with prefix `TrainingJob` -> `progressed`; `RolledBack` -> `rolled_back`."""
    name = event.DESCRIPTOR.name.removeprefix(prefix)
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def nulls(columns: Iterable[str]) -> dict[str, object]:
    return dict.fromkeys(columns)


# --- sandbox.> -----------------------------------------------------------------


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


# --- episodes.> ----------------------------------------------------------------


def task_submitted_rows(delivery: Delivery) -> list[RowInsert]:
    """A TaskSubmitted becomes one `tasks` row: what was asked (the source itself is not kept)."""
    event: events_pb2.TaskSubmitted = delivery.event
    request = event.request
    return [
        event_row(
            "tasks",
            delivery,
            {
                "task_id": required(event.task_id, "TaskSubmitted.task_id"),
                "koan_id": request.koan_id,
                "koan_set": event.koan_set,
                "family": event.family,
                "run_id": request.run_id,
                "request_correlation_id": request.correlation_id,
                "requested_adapter": request.adapter_id,
                "model": request.model,
                "max_attempts": request.max_attempts,
                "seed": request.seed,
                "mode": mode_name(request.mode),
                "edition": request.edition,
                "has_source": bool(request.source),
                "source_bytes": len(request.source.encode()),
                "has_tests": bool(request.tests),
            },
        )
    ]


def attempt_recorded_rows(delivery: Delivery) -> list[RowInsert]:
    """An AttemptRecorded becomes one `attempts` row, with its verdict flattened."""
    event: events_pb2.AttemptRecorded = delivery.event
    attempt = event.attempt
    verdict = attempt.verdict
    task_id = required(event.task_id, "AttemptRecorded.task_id")
    if attempt.number < 1:
        raise EventRejectedError(f"AttemptRecorded.attempt.number must be at least 1, got {attempt.number}")
    passed_tests = sum(1 for t in verdict.tests if t.passed)
    return [
        event_row(
            "attempts",
            delivery,
            {
                "task_id": task_id,
                "koan_id": event.koan_id,
                "number": attempt.number,
                "run_id": event.run_id,
                "adapter_id": event.adapter_id,
                "model": event.model,
                "status": status_name(verdict.status),
                "passed": verdict.status == sandbox_pb2.OK,
                "error_codes": unique_error_codes(verdict),
                "first_error_code": first_error_code(verdict),
                "prompt": attempt.prompt,
                "completion": attempt.completion,
                "code": attempt.code,
                "prompt_tokens": attempt.prompt_tokens,
                "completion_tokens": attempt.completion_tokens,
                "generate_seconds": attempt.generate_seconds,
                "prompt_seconds": attempt.prompt_seconds,
                "reused_prompt_tokens": attempt.reused_prompt_tokens,
                "resamples": attempt.resamples,
                "resample_seconds": attempt.resample_seconds,
                "check_seconds": verdict.total_seconds,
                "temperature": attempt.temperature,
                "seed": attempt.seed,
                "tests_replaced": verdict.tests_replaced,
                "tests_passed": passed_tests,
                "tests_failed": len(verdict.tests) - passed_tests,
                "check_id": verdict.check_id,
                "detail": verdict.detail,
            },
        )
    ]


def episode_completed_rows(delivery: Delivery) -> list[RowInsert]:
    """An EpisodeCompleted becomes one `episodes` row with every field of the event."""
    event: events_pb2.EpisodeCompleted = delivery.event
    return [
        event_row(
            "episodes",
            delivery,
            {
                "task_id": required(event.task_id, "EpisodeCompleted.task_id"),
                "koan_id": event.koan_id,
                "passed": event.passed,
                "steps": event.steps,
                "error_codes": list(event.error_codes),
                "adapter_id": event.adapter_id,
                "model": event.model,
                "run_id": event.run_id,
                "state": task_state_name(event.state),
                "final_code": event.final_code,
                "koan_set": event.koan_set,
                "family": event.family,
                "first_error_code": event.first_error_code,
                "last_error_code": event.last_error_code,
                "repeated_error": event.repeated_error,
                "episode_correlation_id": event.correlation_id,
            },
        )
    ]


# --- training.> ----------------------------------------------------------------

TRAINING_EVENT_COLUMNS = (
    "device",
    "resumed",
    "from_step",
    "step",
    "total_steps",
    "loss",
    "tokens_per_second",
    "eta_seconds",
    "adapter_id",
    "train_seconds",
    "train_tokens",
    "final_loss",
    "error",
    "reason",
)


def training_job_requested_rows(delivery: Delivery) -> list[RowInsert]:
    """A TrainingJobRequested becomes one `training_jobs_requested` row: the mix and its recipe."""
    event: events_pb2.TrainingJobRequested = delivery.event
    return [
        event_row(
            "training_jobs_requested",
            delivery,
            {
                "job_id": required(event.job_id, "TrainingJobRequested.job_id"),
                "recipe": event.mix.recipe,
                "mix_parameters": string_map(event.mix.parameters),
                "base_adapter_id": event.mix.base_adapter_id,
                "preset": event.preset,
                "preset_fields": string_map(event.preset_fields),
                "example_ids": list(event.example_ids),
                "example_count": len(event.example_ids),
                "data_hash": event.data_hash,
                "excluded_count": event.excluded_count,
                "excluded_by_reason": string_map(event.excluded_by_reason),
                "model": event.model,
                "seed": event.seed,
            },
        )
    ]


def training_job_event_rows(delivery: Delivery) -> list[RowInsert]:
    """A job's Started/Progressed/Completed/Failed/Cancelled becomes one `training_job_events` row."""
    event = delivery.event
    verb = verb_of(event, "TrainingJob")
    values = nulls(TRAINING_EVENT_COLUMNS)
    if isinstance(event, events_pb2.TrainingJobStarted):
        values.update(device=event.device, resumed=event.resumed, from_step=event.from_step)
    elif isinstance(event, events_pb2.TrainingJobProgressed):
        p = event.progress
        values.update(
            step=p.step,
            total_steps=p.total_steps,
            loss=p.loss,
            tokens_per_second=p.tokens_per_second,
            eta_seconds=p.eta_seconds,
        )
    elif isinstance(event, events_pb2.TrainingJobCompleted):
        values.update(
            adapter_id=event.adapter_id,
            train_seconds=event.train_seconds,
            train_tokens=event.train_tokens,
            final_loss=event.final_loss,
        )
    elif isinstance(event, events_pb2.TrainingJobFailed):
        values.update(error=event.error)
    elif isinstance(event, events_pb2.TrainingJobCancelled):
        values.update(reason=event.reason)
    else:
        raise EventRejectedError(f"{event.DESCRIPTOR.full_name} is not a training job event")
    job_id = required(event.job_id, f"{event.DESCRIPTOR.name}.job_id")
    return [event_row("training_job_events", delivery, {"job_id": job_id, "verb": verb, **values})]


# --- adapters.> ----------------------------------------------------------------

ADAPTER_EVENT_COLUMNS = (
    "previous_champion_id",
    "from_adapter_id",
    "to_adapter_id",
    "reason",
    "gate_decision_id",
    "model",
)


def adapter_trained_rows(delivery: Delivery) -> list[RowInsert]:
    """An AdapterTrained becomes one `adapters` row with every Adapter field, verification flattened."""
    adapter = delivery.event.adapter
    has_verification = adapter.HasField("verification")
    v = adapter.verification

    def verified(value: object) -> object:
        return value if has_verification else None

    return [
        event_row(
            "adapters",
            delivery,
            {
                "adapter_id": required(adapter.adapter_id, "AdapterTrained.adapter.adapter_id"),
                "state": adapter_state_name(adapter.state),
                "model": adapter.model,
                "gguf_path": adapter.gguf_path,
                "job_id": adapter.job_id,
                "sha256": adapter.sha256,
                "parent_adapter_id": adapter.parent_adapter_id,
                "recipe": adapter.recipe,
                "data_hash": adapter.data_hash,
                "preset": adapter.preset,
                "metrics": string_map(adapter.metrics),
                "reason": adapter.reason,
                "has_verification": has_verification,
                "verification_passed": verified(v.passed),
                "verification_tolerance": verified(v.tolerance),
                "verification_max_abs_diff": verified(v.max_abs_diff),
                "verification_adapter_effect": verified(v.adapter_effect),
                "verification_reference_effect": verified(v.reference_effect),
                "verification_prompt": verified(v.prompt),
                "verification_detail": verified(v.detail),
            },
        )
    ]


def adapter_event_rows(delivery: Delivery) -> list[RowInsert]:
    """An AdapterPromoted/Rejected/RolledBack becomes one `adapter_events` row.

    `adapter_id` is the adapter the event is about: the promoted or rejected one, or for a
    rollback the adapter rolled back from.
    """
    event = delivery.event
    verb = verb_of(event, "Adapter")
    values = nulls(ADAPTER_EVENT_COLUMNS)
    name = event.DESCRIPTOR.name
    if isinstance(event, events_pb2.AdapterPromoted):
        adapter_id = event.adapter_id
        values.update(
            previous_champion_id=event.previous_champion_id,
            reason=event.reason,
            gate_decision_id=event.gate_decision_id,
            model=event.model,
        )
        field = f"{name}.adapter_id"
    elif isinstance(event, events_pb2.AdapterRejected):
        adapter_id = event.adapter_id
        values.update(reason=event.reason, gate_decision_id=event.gate_decision_id)
        field = f"{name}.adapter_id"
    elif isinstance(event, events_pb2.AdapterRolledBack):
        adapter_id = event.from_adapter_id
        values.update(
            from_adapter_id=event.from_adapter_id,
            to_adapter_id=event.to_adapter_id,
            reason=event.reason,
            model=event.model,
        )
        field = f"{name}.from_adapter_id"
    else:
        raise EventRejectedError(f"{event.DESCRIPTOR.full_name} is not an adapter state event")
    return [
        event_row(
            "adapter_events", delivery, {"adapter_id": required(adapter_id, field), "verb": verb, **values}
        )
    ]


# --- evaluation.> --------------------------------------------------------------


def evaluation_started_rows(delivery: Delivery) -> list[RowInsert]:
    """An EvaluationStarted becomes one `evaluation_runs` row: the request and the koans it covers."""
    event: events_pb2.EvaluationStarted = delivery.event
    request = event.request
    return [
        event_row(
            "evaluation_runs",
            delivery,
            {
                "run_id": required(event.run_id, "EvaluationStarted.run_id"),
                "koan_set": request.koan_set,
                "family": request.family,
                "requested_adapter": request.adapter_id,
                "repeats": request.repeats,
                "seed": request.seed,
                "max_attempts": request.max_attempts,
                "model": request.model,
                "request_correlation_id": request.correlation_id,
                "koan_ids": list(event.koan_ids),
                "koan_count": len(event.koan_ids),
            },
        )
    ]


def koan_evaluated_rows(delivery: Delivery) -> list[RowInsert]:
    """A KoanEvaluated becomes one `koan_evaluations` row (one koan, one repeat of a run)."""
    event: events_pb2.KoanEvaluated = delivery.event
    return [
        event_row(
            "koan_evaluations",
            delivery,
            {
                "run_id": required(event.run_id, "KoanEvaluated.run_id"),
                "koan_id": required(event.koan_id, "KoanEvaluated.koan_id"),
                "family": event.family,
                "repeat": event.repeat,
                "passed": event.passed,
                "attempts": event.attempts,
                "passed_first_attempt": event.passed_first_attempt,
                "error_codes": list(event.error_codes),
                "task_id": event.task_id,
            },
        )
    ]


def summary_columns(summary: evaluator_pb2.EvaluationSummary) -> dict[str, object]:
    """Every EvaluationSummary field as a column; families as a list of structs, error codes as a map."""
    return {
        "run_id": required(summary.run_id, "EvaluationCompleted.summary.run_id"),
        "koan_set": summary.koan_set,
        "adapter_id": summary.adapter_id,
        "requested_adapter": summary.requested_adapter,
        "model": summary.model,
        "family": summary.family,
        "total": summary.total,
        "passed": summary.passed,
        "pass_rate": summary.pass_rate,
        "pass_at_1": summary.pass_at_1,
        "pass_rate_low": summary.pass_rate_low,
        "pass_rate_high": summary.pass_rate_high,
        "pass_rate_mean": summary.pass_rate_mean,
        "pass_at_1_low": summary.pass_at_1_low,
        "pass_at_1_high": summary.pass_at_1_high,
        "median_attempts": summary.median_attempts,
        "mean_attempts": summary.mean_attempts,
        "repeat_error_rate": summary.repeat_error_rate,
        "families": [
            {"family": f.family, "passed": f.passed, "total": f.total, "pass_rate": f.pass_rate}
            for f in summary.families
        ],
        "error_codes": string_map(summary.error_codes),
        "finished": summary.finished,
        "repeats": summary.repeats,
        "seed": summary.seed,
        "max_attempts": summary.max_attempts,
        "evaluated": summary.evaluated,
        "expected": summary.expected,
        "summary_correlation_id": summary.correlation_id,
    }


def evaluation_completed_rows(delivery: Delivery) -> list[RowInsert]:
    """An EvaluationCompleted becomes one `evaluation_summaries` row."""
    return [event_row("evaluation_summaries", delivery, summary_columns(delivery.event.summary))]


def gate_decided_rows(delivery: Delivery) -> list[RowInsert]:
    """A GateDecided becomes one `gate_decisions` row with every GateDecision field."""
    d = delivery.event.decision
    return [
        event_row(
            "gate_decisions",
            delivery,
            {
                "decision_id": required(d.decision_id, "GateDecided.decision.decision_id"),
                "adapter_id": d.adapter_id,
                "promote": d.promote,
                "reason": d.reason,
                "reasons": list(d.reasons),
                "regressions": d.regressions,
                "gains": d.gains,
                "heldout_delta": d.heldout_delta,
                "candidate_run_id": d.candidate_run_id,
                "champion_run_id": d.champion_run_id,
                "candidate_heldout_run_id": d.candidate_heldout_run_id,
                "champion_heldout_run_id": d.champion_heldout_run_id,
                "candidate_pass_rate": d.candidate_pass_rate,
                "champion_pass_rate": d.champion_pass_rate,
                "sign_test_p": d.sign_test_p,
                "policy": string_map(d.policy),
                "decision_correlation_id": d.correlation_id,
            },
        )
    ]


def cycle_request_columns(request: evaluator_pb2.StartCycleRequest) -> dict[str, object]:
    return {
        "cycles": request.cycles,
        "recipe": request.recipe,
        "preset": request.preset,
        "model": request.model,
        "repeats": request.repeats,
        "quick": request.quick,
        "overrides": string_map(request.overrides),
        "recipe_parameters": string_map(request.recipe_parameters),
        "max_attempts": request.max_attempts,
        "seed": request.seed,
        "day_set": request.day_set,
        "eval_family": request.eval_family,
        "policy": string_map(request.policy),
        "day_max_attempts": request.day_max_attempts,
        "fresh": request.fresh,
    }


def cycle_round_columns(r: evaluator_pb2.CycleRound) -> dict[str, object]:
    has_decision = r.HasField("decision")
    return {
        "cycle": r.cycle,
        "day_run_id": r.day_run_id,
        "job_id": r.job_id,
        "adapter_id": r.adapter_id,
        "champion_adapter_id": r.champion_adapter_id,
        "candidate_frozen_run_id": r.candidate_frozen_run_id,
        "champion_frozen_run_id": r.champion_frozen_run_id,
        "candidate_heldout_run_id": r.candidate_heldout_run_id,
        "champion_heldout_run_id": r.champion_heldout_run_id,
        "decision_id": r.decision.decision_id if has_decision else None,
        "promote": r.decision.promote if has_decision else None,
        "phase_seconds": string_map(r.phase_seconds),
    }


def cycle_phase_rows(delivery: Delivery) -> list[RowInsert]:
    """A CyclePhaseStarted/Completed becomes one `cycle_phases` row; a start has NULL outcomes.

    A start that carries the cycle run's request adds a `cycle_requests` row; a completion that
    carries the round so far adds a `cycle_rounds` row.
    """
    event = delivery.event
    name = event.DESCRIPTOR.name
    cycle_id = required(event.cycle_id, f"{name}.cycle_id")
    phase = required(event.phase, f"{name}.phase")
    values: dict[str, object] = {
        "run_ids": None,
        "job_id": None,
        "adapter_id": None,
        "seconds": None,
        "error": None,
    }
    extra = []
    if isinstance(event, events_pb2.CyclePhaseCompleted):
        values = {
            "run_ids": list(event.run_ids),
            "job_id": event.job_id,
            "adapter_id": event.adapter_id,
            "seconds": event.seconds,
            "error": event.error,
        }
        if event.HasField("round"):
            round_row = {"cycle_id": cycle_id, "phase": phase, **cycle_round_columns(event.round)}
            extra.append(event_row("cycle_rounds", delivery, round_row))
    elif isinstance(event, events_pb2.CyclePhaseStarted):
        if event.HasField("request"):
            request_row = {"cycle_id": cycle_id, **cycle_request_columns(event.request)}
            extra.append(event_row("cycle_requests", delivery, request_row))
    else:
        raise EventRejectedError(f"{event.DESCRIPTOR.full_name} is not a cycle phase event")
    phase_row = {
        "cycle_id": cycle_id,
        "cycle": event.cycle,
        "phase": phase,
        "verb": verb_of(event, "CyclePhase"),
        **values,
    }
    return [event_row("cycle_phases", delivery, phase_row), *extra]


def _full_name(name: str) -> str:
    return events_pb2.DESCRIPTOR.message_types_by_name[name].full_name


# Full protobuf name of each projected event type -> its rule.
RULES: dict[str, Rule] = {
    _full_name("CheckCompleted"): check_completed_rows,
    _full_name("TaskSubmitted"): task_submitted_rows,
    _full_name("AttemptRecorded"): attempt_recorded_rows,
    _full_name("EpisodeCompleted"): episode_completed_rows,
    _full_name("TrainingJobRequested"): training_job_requested_rows,
    **{
        _full_name(f"TrainingJob{verb}"): training_job_event_rows
        for verb in ("Started", "Progressed", "Completed", "Failed", "Cancelled")
    },
    _full_name("AdapterTrained"): adapter_trained_rows,
    **{_full_name(f"Adapter{verb}"): adapter_event_rows for verb in ("Promoted", "Rejected", "RolledBack")},
    _full_name("EvaluationStarted"): evaluation_started_rows,
    _full_name("KoanEvaluated"): koan_evaluated_rows,
    _full_name("EvaluationCompleted"): evaluation_completed_rows,
    _full_name("GateDecided"): gate_decided_rows,
    _full_name("CyclePhaseStarted"): cycle_phase_rows,
    _full_name("CyclePhaseCompleted"): cycle_phase_rows,
}

# Every event type of the design (events.SUBJECTS), by full name.
EVENT_TYPES: frozenset[str] = frozenset(_full_name(name) for name in events.SUBJECTS)


def rule_for(event_type: str) -> Rule | None:
    """The rule of an event type, or None when the projections ignore it."""
    return RULES.get(event_type)


def is_event_type(event_type: str) -> bool:
    """True for a type of the design's event table, whether or not a rule projects it."""
    return event_type in EVENT_TYPES


def projected_streams(rules: Mapping[str, Rule] = RULES) -> list[str]:
    """The streams holding at least one event type that has a rule, in a stable order."""
    streams = set()
    for full_name in rules:
        name = full_name.rsplit(".", 1)[-1]
        streams.add(events.stream_for(events.SUBJECTS[name]))
    return sorted(streams)
