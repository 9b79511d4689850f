"""Every event type projected: the rules as pure functions, the views on hand-computed data, and a
real nats-server replay that rebuilds identical tables."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import grpc
import nats
import pytest
from evaluator_support import delivery, plain_rows, query
from event_builders import (
    MIX_COUNTS,
    adapter,
    attempt,
    day_events,
    event_mix,
    job_requested,
    koan_evaluated,
    publish,
    stream_ends,
    verdict,
    wait_until_projected,
)
from nightshift import events
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc, events_pb2, sandbox_pb2, trainer_pb2
from nightshift_cli.main import main as cli_main
from nightshift_evaluator import projection
from nightshift_evaluator.projection import EventRejectedError
from nightshift_evaluator.projector import Projector
from nightshift_evaluator.store import ProjectionStore

S = sandbox_pb2
DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluator-schema.md"
# Columns that record when a row was written, not what happened: they differ after a rebuild.
WALL_CLOCK_COLUMNS = {"schema_migrations": ["applied_at"], "dead_letters": ["recorded_at"]}


class _NoBus:
    """Projector.handle never touches the bus."""


def stream_of(event) -> str:
    return events.stream_for(events.subject_for(event))


def one_row(event, **envelope) -> tuple[str, dict]:
    rows = projection.rule_for(event.DESCRIPTOR.full_name)(delivery(event, **envelope))
    assert len(rows) == 1
    return rows[0].table, dict(rows[0].row)


# --- rules as pure functions -------------------------------------------------------


def test_every_event_type_of_the_design_has_a_rule():
    assert set(projection.RULES) == projection.EVENT_TYPES
    assert len(projection.EVENT_TYPES) == len(events.SUBJECTS) == 20
    assert projection.projected_streams() == sorted(events.STREAMS)


@pytest.mark.parametrize(
    ("v", "codes", "first"),
    [
        (verdict(S.OK), [], ""),
        (verdict(S.COMPILE_ERROR, "E0382", "E0499", "E0382"), ["E0382", "E0499"], "E0382"),
        (verdict(S.TEST_FAILED), [], "TEST_FAILED"),
        (verdict(S.TIMEOUT), [], "TIMEOUT"),
        (
            S.Verdict(status=S.LINT_FAILED, diagnostics=[S.Diagnostic(code="clippy::x", level="warning")]),
            [],
            "LINT_FAILED",
        ),
    ],
)
def test_attempt_error_codes_follow_the_agent(v, codes, first):
    assert projection.unique_error_codes(v) == codes
    assert projection.first_error_code(v) == first


@pytest.mark.parametrize(
    ("event", "verb"),
    [
        (events_pb2.TrainingJobProgressed(), "progressed"),
        (events_pb2.TrainingJobCancelled(), "cancelled"),
        (events_pb2.AdapterRolledBack(), "rolled_back"),
        (events_pb2.AdapterPromoted(), "promoted"),
        (events_pb2.CyclePhaseCompleted(), "completed"),
    ],
)
def test_verbs(event, verb):
    prefix = {"Tr": "TrainingJob", "Ad": "Adapter", "Cy": "CyclePhase"}[event.DESCRIPTOR.name[:2]]
    assert projection.verb_of(event, prefix) == verb


def test_an_attempt_becomes_one_row_with_its_verdict_flattened():
    event = attempt("t1", "k1", 2, verdict(S.COMPILE_ERROR, "E0382", "E0499", "E0382"), prompt="p")
    d = delivery(event, sequence=9, event_id="evt-9", correlation_id="cycle-1")
    d.envelope.occurred_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5))
    rows = projection.attempt_recorded_rows(d)
    assert [r.table for r in rows] == ["attempts"]
    assert dict(rows[0].row) == {
        "event_id": "evt-9",
        "stream_sequence": 9,
        "occurred_at": datetime(2026, 1, 2, 3, 4, 5),
        "correlation_id": "cycle-1",
        "causation_id": "cause",
        "task_id": "t1",
        "koan_id": "k1",
        "number": 2,
        "run_id": "r1",
        "adapter_id": "",
        "model": "qwen-0.5b",
        "status": "COMPILE_ERROR",
        "passed": False,
        "error_codes": ["E0382", "E0499"],
        "first_error_code": "E0382",
        "prompt": "p",
        "completion": "```rust\nfn main() {} // 2\n```",
        "code": "fn main() {} // 2",
        "prompt_tokens": 102,
        "completion_tokens": 40,
        "generate_seconds": 1.0,
        "check_seconds": 0.5,
        "temperature": 0.7,
        "seed": 1002,
        "tests_replaced": False,
        "tests_passed": 0,
        "tests_failed": 0,
        "check_id": "check-2-E0382-E0499-E0382",
        "detail": "",
        "prompt_seconds": 0.2,
        "reused_prompt_tokens": 64,
        "resamples": 1,
        "resample_seconds": 0.75,
    }


@pytest.mark.parametrize(
    ("event", "table", "expected"),
    [
        (
            day_events()[0],
            "tasks",
            {
                "task_id": "t1",
                "koan_id": "k1",
                "koan_set": "frozen",
                "family": "ownership",
                "run_id": "r1",
                "request_correlation_id": "cycle-1",
                "requested_adapter": "none",
                "max_attempts": 3,
                "seed": 7,
                "mode": "test",
                "has_source": False,
                "source_bytes": 0,
                "has_tests": False,
            },
        ),
        (
            day_events()[4],
            "episodes",
            {
                "task_id": "t1",
                "passed": True,
                "steps": 3,
                "error_codes": ["E0382", "E0382"],
                "state": "TASK_PASSED",
                "first_error_code": "E0382",
                "last_error_code": "E0382",
                "repeated_error": True,
                "episode_correlation_id": "cycle-1",
            },
        ),
        (
            job_requested("j1"),
            "training_jobs_requested",
            {
                "job_id": "j1",
                "recipe": "replay",
                "mix_parameters": {"replay_ratio": "1.0"},
                "preset_fields": {"learning_rate": "1e-4", "max_steps": "20"},
                "example_ids": ["e1", "e2", "e3"],
                "example_count": 3,
                "excluded_count": 2,
                "excluded_by_reason": {"frozen": 2},
                "seed": 11,
            },
        ),
        (
            events_pb2.TrainingJobProgressed(
                job_id="j1", progress=trainer_pb2.JobProgress(step=5, total_steps=20, loss=1.5)
            ),
            "training_job_events",
            {"job_id": "j1", "verb": "progressed", "step": 5, "total_steps": 20, "loss": 1.5, "device": None},
        ),
        (
            events_pb2.TrainingJobStarted(job_id="j1", device="cuda", resumed=True, from_step=40),
            "training_job_events",
            {
                "verb": "started",
                "device": "cuda",
                "resumed": True,
                "from_step": 40,
                "step": None,
                "error": None,
            },
        ),
        (
            events_pb2.TrainingJobFailed(job_id="j2", error="oom"),
            "training_job_events",
            {"verb": "failed", "error": "oom", "adapter_id": None, "reason": None},
        ),
        (
            adapter("a1"),
            "adapters",
            {
                "adapter_id": "a1",
                "state": "candidate",
                "metrics": {"final_loss": 1.0, "train_seconds": 60.0},
                "has_verification": True,
                "verification_passed": True,
                "verification_max_abs_diff": 0.01,
                "verification_prompt": "fn main() {",
            },
        ),
        (
            adapter("a2", verified=False),
            "adapters",
            {"has_verification": False, "verification_passed": None, "verification_tolerance": None},
        ),
        (
            events_pb2.AdapterRolledBack(from_adapter_id="a2", to_adapter_id="", reason="r", model="m"),
            "adapter_events",
            {
                "adapter_id": "a2",
                "verb": "rolled_back",
                "from_adapter_id": "a2",
                "to_adapter_id": "",
                "previous_champion_id": None,
                "gate_decision_id": None,
                "model": "m",
            },
        ),
        (
            events_pb2.AdapterRejected(adapter_id="a3", reason="worse", gate_decision_id="d3"),
            "adapter_events",
            {
                "adapter_id": "a3",
                "verb": "rejected",
                "reason": "worse",
                "gate_decision_id": "d3",
                "model": None,
            },
        ),
        (
            koan_evaluated("r2", "k1", "ownership", 2, True, False, 2),
            "koan_evaluations",
            {
                "run_id": "r2",
                "repeat": 2,
                "passed": True,
                "passed_first_attempt": False,
                "error_codes": ["E0382"],
            },
        ),
        (
            events_pb2.CyclePhaseStarted(cycle_id="c", cycle=2, phase="night"),
            "cycle_phases",
            {
                "cycle": 2,
                "phase": "night",
                "verb": "started",
                "run_ids": None,
                "seconds": None,
                "error": None,
            },
        ),
        (
            events_pb2.CyclePhaseCompleted(
                cycle_id="c",
                cycle=2,
                phase="failed",
                job_id="j1",
                adapter_id="a1",
                seconds=3.5,
                error="no agent",
            ),
            "cycle_phases",
            {"verb": "completed", "run_ids": [], "adapter_id": "a1", "seconds": 3.5, "error": "no agent"},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_rule_rows(event, table, expected):
    got_table, row = one_row(event)
    assert got_table == table
    assert {k: row[k] for k in expected} == expected


def test_a_summary_keeps_families_as_structs_and_error_codes_as_a_map():
    summary = [e for e in event_mix() if isinstance(e, events_pb2.EvaluationCompleted)][0]
    table, row = one_row(summary)
    assert table == "evaluation_summaries"
    assert row["families"] == [
        {"family": "ownership", "passed": 2, "total": 2, "pass_rate": 1.0},
        {"family": "traits", "passed": 0, "total": 1, "pass_rate": 0.0},
    ]
    assert row["error_codes"] == {"E0382": 6}
    columns = set(row) - {"event_id", "stream_sequence", "occurred_at", "correlation_id", "causation_id"}
    fields = {f.name for f in evaluator_pb2.EvaluationSummary.DESCRIPTOR.fields}
    assert columns == (fields - {"correlation_id"}) | {"summary_correlation_id"}


def test_a_gate_decision_keeps_every_field():
    decided = [e for e in event_mix() if isinstance(e, events_pb2.GateDecided)][0]
    table, row = one_row(decided)
    assert table == "gate_decisions"
    assert row["reasons"] == ["0 regressions", "1 gain"]
    assert row["policy"] == {"max_regressions": "0"}
    fields = {f.name for f in evaluator_pb2.GateDecision.DESCRIPTOR.fields}
    assert (fields - {"correlation_id"}) | {"decision_correlation_id"} <= set(row)


def test_a_cycle_start_with_its_request_and_a_completion_with_its_round_add_rows():
    mix = event_mix()
    started = [e for e in mix if isinstance(e, events_pb2.CyclePhaseStarted)][0]
    completed = [e for e in mix if isinstance(e, events_pb2.CyclePhaseCompleted)][0]
    rows = projection.cycle_phase_rows(delivery(started))
    assert [r.table for r in rows] == ["cycle_phases", "cycle_requests"]
    request = dict(rows[1].row)
    picked = {
        k: request[k] for k in ("cycle_id", "cycles", "quick", "overrides", "seed", "day_set", "policy")
    }
    assert picked == {
        "cycle_id": "cycle-1",
        "cycles": 2,
        "quick": True,
        "overrides": {"max_steps": "20"},
        "seed": 5,
        "day_set": "smoke",
        "policy": {"max_regressions": "0"},
    }
    assert {f.name for f in evaluator_pb2.StartCycleRequest.DESCRIPTOR.fields} <= set(request)

    rows = projection.cycle_phase_rows(delivery(completed))
    assert [r.table for r in rows] == ["cycle_phases", "cycle_rounds"]
    round_row = dict(rows[1].row)
    picked = {
        k: round_row[k] for k in ("phase", "cycle", "day_run_id", "decision_id", "promote", "phase_seconds")
    }
    assert picked == {
        "phase": "dawn",
        "cycle": 1,
        "day_run_id": "r1",
        "decision_id": "d1",
        "promote": True,
        "phase_seconds": {"dawn": 42.5, "day": 10.0, "night": 20.0},
    }
    assert {f.name for f in evaluator_pb2.CycleRound.DESCRIPTOR.fields} - {"decision"} <= set(round_row)

    no_round = events_pb2.CyclePhaseCompleted(cycle_id="c", cycle=1, phase="day")
    assert [r.table for r in projection.cycle_phase_rows(delivery(no_round))] == ["cycle_phases"]
    no_decision = events_pb2.CyclePhaseCompleted(cycle_id="c", phase="night", round={"cycle": 1})
    round_row = projection.cycle_phase_rows(delivery(no_decision))[1].row
    assert (round_row["decision_id"], round_row["promote"]) == (None, None)


def test_an_episode_keeps_every_field():
    table, row = one_row(day_events()[4])
    fields = {f.name for f in events_pb2.EpisodeCompleted.DESCRIPTOR.fields}
    assert (fields - {"correlation_id"}) | {"episode_correlation_id"} <= set(row)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (events_pb2.TaskSubmitted(), "TaskSubmitted.task_id is empty"),
        (events_pb2.AttemptRecorded(task_id="t", attempt={"number": 1}), None),
        (events_pb2.AttemptRecorded(task_id="t"), "number must be at least 1, got 0"),
        (events_pb2.AttemptRecorded(attempt={"number": 1}), "AttemptRecorded.task_id is empty"),
        (events_pb2.EpisodeCompleted(), "EpisodeCompleted.task_id is empty"),
        (events_pb2.TrainingJobRequested(), "TrainingJobRequested.job_id is empty"),
        (events_pb2.TrainingJobProgressed(), "TrainingJobProgressed.job_id is empty"),
        (events_pb2.AdapterTrained(), "AdapterTrained.adapter.adapter_id is empty"),
        (events_pb2.AdapterRolledBack(to_adapter_id="a1"), "AdapterRolledBack.from_adapter_id is empty"),
        (events_pb2.EvaluationStarted(), "EvaluationStarted.run_id is empty"),
        (events_pb2.KoanEvaluated(run_id="r"), "KoanEvaluated.koan_id is empty"),
        (events_pb2.EvaluationCompleted(), "EvaluationCompleted.summary.run_id is empty"),
        (events_pb2.GateDecided(), "GateDecided.decision.decision_id is empty"),
        (events_pb2.CyclePhaseStarted(cycle_id="c"), "CyclePhaseStarted.phase is empty"),
    ],
)
def test_rules_reject_events_without_the_ids_their_rows_are_keyed_by(event, message):
    rule = projection.rule_for(event.DESCRIPTOR.full_name)
    if message is None:
        assert rule(delivery(event))
        return
    with pytest.raises(EventRejectedError, match=re.escape(message)):
        rule(delivery(event))


def test_the_same_delivery_gives_the_same_rows():
    for event in event_mix():
        d = delivery(event, sequence=3)
        rule = projection.rule_for(event.DESCRIPTOR.full_name)
        assert rule(d) == rule(d)


# --- views on hand-computed data (a real DuckDB file, no broker) -----------------------


@pytest.fixture
async def store(db_path):
    opened = await ProjectionStore.open(db_path)
    yield opened
    await opened.close()


async def project_all(
    store: ProjectionStore, items: list, start: dict[str, int] | None = None
) -> dict[str, int]:
    """Project events in order, numbering each stream's sequence from where `start` left it."""
    sequences = Counter(start or {})
    projector = Projector(store, _NoBus())
    for event in items:
        stream = stream_of(event)
        sequences[stream] += 1
        assert await projector.handle(stream, delivery(event, sequence=sequences[stream])) is True
    return dict(sequences)


def fetch(store: ProjectionStore, sql: str) -> list[tuple]:
    cursor = store.read_cursor()
    try:
        return cursor.execute(sql).fetchall()
    finally:
        cursor.close()


async def test_the_mix_fills_every_table(store):
    await project_all(store, event_mix())
    counts = {table: fetch(store, f"SELECT count(*) FROM {table}")[0][0] for table in MIX_COUNTS}
    assert counts == MIX_COUNTS


async def test_run_views_take_the_majority_over_repeats(store):
    await project_all(store, event_mix())
    assert fetch(
        store,
        "SELECT koan_id, family, repeats, passes, first_attempt_passes, passed, passed_first_attempt, "
        "mean_attempts FROM run_outcomes WHERE run_id = 'r2' ORDER BY koan_id",
    ) == [
        ("k1", "ownership", 3, 2, 1, True, False, 2.0),
        ("k2", "traits", 3, 1, 0, False, False, 8 / 3),
        ("k3", "ownership", 3, 3, 3, True, True, 1.0),
    ]
    assert fetch(store, "SELECT * FROM run_pass_rates") == [("r2", 3, 2, 2 / 3, 1, 1 / 3)]
    assert fetch(store, "SELECT * FROM run_family_rates ORDER BY family") == [
        ("r2", "ownership", 2, 2, 1.0),
        ("r2", "traits", 1, 0, 0.0),
    ]


async def test_a_tie_fails_and_a_repeat_evaluated_again_counts_once(store):
    await project_all(
        store,
        [
            koan_evaluated("r9", "k1", "f", 1, True, True, 1),
            koan_evaluated("r9", "k1", "f", 2, False, False, 3),
            koan_evaluated("r9", "k2", "f", 1, False, False, 3),
            koan_evaluated("r9", "k2", "f", 2, False, False, 3),
            # k2's second repeat evaluated again (a resumed run): the later result counts.
            koan_evaluated("r9", "k2", "f", 2, True, False, 2),
        ],
    )
    assert fetch(store, "SELECT koan_id, repeats, passes, passed FROM run_outcomes ORDER BY koan_id") == [
        ("k1", 2, 1, False),
        ("k2", 2, 1, False),
    ]
    assert fetch(store, "SELECT koans, passed, pass_rate FROM run_pass_rates") == [(2, 0, 0.0)]


async def test_attempt_error_codes_and_repeat_errors(store):
    await project_all(store, event_mix())
    assert fetch(
        store, "SELECT task_id, number, position, error_code FROM attempt_error_codes ORDER BY ALL"
    ) == [("t1", 1, 1, "E0382"), ("t1", 1, 2, "E0499"), ("t1", 2, 1, "E0382")]
    assert fetch(
        store, "SELECT task_id, koan_id, previous_number, number, error_code FROM repeat_errors ORDER BY ALL"
    ) == [("t1", "k1", 1, 2, "E0382"), ("t2", "k2", 1, 2, "TEST_FAILED")]


async def test_repeat_errors_count_an_attempt_recorded_twice_once(store):
    failing = verdict(S.COMPILE_ERROR, "E0308")
    await project_all(
        store,
        [
            attempt("t7", "k7", 1, failing),
            attempt("t7", "k7", 1, failing),  # recorded again after a restart
            attempt("t7", "k7", 2, failing),
            attempt("t7", "k7", 4, failing),  # not consecutive with 2
        ],
    )
    assert fetch(store, "SELECT previous_number, number, error_code FROM repeat_errors") == [(1, 2, "E0308")]


async def test_training_jobs_show_the_latest_state(store):
    await project_all(store, event_mix())
    assert fetch(
        store,
        "SELECT job_id, state, recipe, step, total_steps, loss, adapter_id, error, cancel_reason, device "
        "FROM training_jobs ORDER BY job_id",
    ) == [
        ("j1", "completed", "replay", 10, 20, 1.25, "a1", None, None, "cpu"),
        ("j2", "failed", "replay", None, None, None, None, "out of memory", None, "cpu"),
        ("j3", "cancelled", "replay", None, None, None, None, None, "asked by the user", None),
        ("j4", "queued", "replay", None, None, None, None, None, None, None),
    ]


async def test_a_resumed_job_runs_again(store):
    await project_all(
        store,
        [
            job_requested("j5"),
            events_pb2.TrainingJobStarted(job_id="j5"),
            events_pb2.TrainingJobFailed(job_id="j5", error="killed"),
            events_pb2.TrainingJobStarted(job_id="j5", resumed=True, from_step=8),
            events_pb2.TrainingJobProgressed(job_id="j5", progress=trainer_pb2.JobProgress(step=9)),
        ],
    )
    assert fetch(store, "SELECT state, step FROM training_jobs") == [("running", 9)]


async def test_adapter_states_follow_promotions_rejections_and_rollbacks(store):
    await project_all(store, event_mix())
    assert fetch(
        store, "SELECT adapter_id, model, state, changed_by, reason FROM adapter_states ORDER BY adapter_id"
    ) == [
        ("a1", "qwen-0.5b", "champion", "rolled_back", "worse in use"),
        ("a2", "qwen-0.5b", "retired", "rolled_back", "worse in use"),
        ("a3", "qwen-0.5b", "rejected", "rejected", "2 regressions"),
    ]
    assert fetch(store, "SELECT model, adapter_id, previous_adapter_id, verb FROM current_champions") == [
        ("qwen-0.5b", "a1", "a2", "rolled_back")
    ]


async def test_a_rollback_to_the_base_model_and_a_promotion_without_previous_champion(store):
    await project_all(
        store,
        [
            adapter("b1"),
            adapter("b2"),
            adapter("b3"),
            events_pb2.AdapterPromoted(adapter_id="b1"),
            # No previous_champion_id: b1 is still retired, since b2 took its model's place.
            events_pb2.AdapterPromoted(adapter_id="b2"),
            events_pb2.AdapterRolledBack(from_adapter_id="b2", to_adapter_id="", model="qwen-0.5b"),
        ],
    )
    assert fetch(store, "SELECT adapter_id, state, changed_by FROM adapter_states ORDER BY adapter_id") == [
        ("b1", "retired", "superseded"),
        ("b2", "retired", "rolled_back"),
        ("b3", "candidate", "trained"),
    ]
    assert fetch(store, "SELECT model, adapter_id, verb FROM current_champions") == [
        ("qwen-0.5b", "", "rolled_back")
    ]


# --- a real nats-server: projection, replay from zero, redelivery ------------------------


async def publish_bad_message(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(events.SUBJECTS["AttemptRecorded"], b"\xff\xff not an envelope")
    finally:
        await nc.close()


def dump_all(db_path: Path) -> dict[str, list[tuple]]:
    """Every table of a closed DuckDB file, ordered by event id (else by every column)."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        out = {}
        for table in tables:
            columns = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()]
            kept = ", ".join(f'"{c}"' for c in columns if c not in WALL_CLOCK_COLUMNS.get(table, []))
            order = "ALL"
            if "event_id" in columns:
                order = "event_id, position" if "position" in columns else "event_id"
            out[table] = conn.execute(f"SELECT {kept} FROM {table} ORDER BY {order}").fetchall()
        return out
    finally:
        conn.close()


async def test_every_event_type_projected_then_rebuilt_identically_from_the_stream(
    bus, start_evaluator, db_path, nats_server
):
    envelopes = await publish(bus, event_mix())
    await publish_bad_message(nats_server.url)
    ends = await stream_ends(bus)
    assert sum(ends.values()) == len(envelopes) + 1

    async def project_everything() -> dict[str, list[tuple]]:
        running = await start_evaluator()
        async with grpc.aio.insecure_channel(running.addr) as channel:
            await wait_until_projected(evaluator_pb2_grpc.EvaluatorStub(channel), ends)
        await running.stop()
        return dump_all(db_path)

    before = await project_everything()
    for table, count in MIX_COUNTS.items():
        assert len(before[table]) == count, table
    assert len(before["projected_events"]) == len(envelopes)
    assert [(r[1], r[2], r[4]) for r in before["dead_letters"]] == [("EPISODES", ends["EPISODES"], None)]
    assert {e.event_id for e in envelopes} == {r[0] for r in before["projected_events"]}

    for path in db_path.parent.iterdir():
        path.unlink()
    after = await project_everything()
    assert after == before


async def test_the_same_event_id_delivered_twice_gives_one_row(bus, stub, nats_server):
    event = attempt("t1", "k1", 1, verdict(S.OK))
    envelope = (await publish(bus, [event]))[0]
    # Without Nats-Msg-Id the broker stores it again, as after its duplicate window.
    nc = await nats.connect(nats_server.url)
    try:
        ack = await nc.jetstream().publish(events.SUBJECTS["AttemptRecorded"], envelope.SerializeToString())
    finally:
        await nc.close()
    assert ack.seq == 2
    await wait_until_projected(stub, {"EPISODES": 2})
    rows = plain_rows(await query(stub, "SELECT event_id, stream_sequence, task_id, number FROM attempts"))
    assert rows == [(envelope.event_id, 1, "t1", 1)]
    assert plain_rows(await query(stub, "SELECT count(*) FROM dead_letters")) == [(0,)]


# --- the documented example queries, run through `nightshift query` ----------------------


def documented_queries() -> list[str]:
    """Every `nightshift query "..."` line of docs/evaluator-schema.md."""
    text = DOC.read_text()
    return re.findall(r'^nightshift query "((?:[^"\\]|\\.)*)"\s*$', text, flags=re.MULTILINE)


async def test_the_schema_doc_names_every_table_view_and_column(store):
    assert len(documented_queries()) >= 6
    text = DOC.read_text()
    relations = fetch(
        store,
        "SELECT table_name FROM duckdb_tables() UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE NOT internal",
    )
    missing = []
    for (name,) in relations:
        if f"`{name}`" not in text:
            missing.append(name)
        columns = fetch(store, f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{name}'")
        missing += [f"{name}.{c}" for (c,) in columns if f"`{c}`" not in text]
    assert len(relations) > 25
    assert missing == []


async def test_documented_queries_run_on_projected_data(
    bus, stub, evaluator, nats_server, monkeypatch, capsys
):
    champion_run = [
        koan_evaluated("r1", "k1", "ownership", 1, False, False, 3),
        koan_evaluated("r1", "k2", "traits", 1, True, True, 1),
        koan_evaluated("r1", "k3", "ownership", 1, True, True, 1),
    ]
    await publish(bus, [*event_mix(), *champion_run])
    await publish_bad_message(nats_server.url)
    await wait_until_projected(stub, await stream_ends(bus))
    monkeypatch.setenv("NIGHTSHIFT_EVALUATOR_ADDR", evaluator.addr)
    results = {}
    for sql in documented_queries():
        sql = sql.replace('\\"', '"')
        status = await asyncio.to_thread(cli_main, ["query", "--format", "json", sql])
        out = capsys.readouterr()
        assert status == 0, (sql, out.err)
        results[sql] = json.loads(out.out)
        assert results[sql], f"no rows from {sql!r}"

    def result_of(fragment: str) -> list[dict]:
        (rows,) = [rows for sql, rows in results.items() if fragment in sql]
        return rows

    changes = result_of("AS change FROM run_outcomes")
    assert [(r["koan_id"], r["change"]) for r in changes] == [("k1", "gain"), ("k2", "regression")]
    assert result_of("FROM run_pass_rates ORDER BY run_id") == [
        {"run_id": "r1", "koans": 3, "passed": 2, "pass_rate": 0.667, "pass_at_1": 0.667},
        {"run_id": "r2", "koans": 3, "passed": 2, "pass_rate": 0.667, "pass_at_1": 0.333},
    ]
    assert [r["champion"] for r in result_of("FROM current_champions")] == ["a1"]
