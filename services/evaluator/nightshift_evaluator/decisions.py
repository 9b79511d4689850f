"""From evaluation runs to decisions and reports: the glue between the run manager, the gate policy and
the report renderer. The policy (gate.py) and the rendering (report.py) stay pure; this module reads the
runs, checks that they can be compared, and builds the GateDecision message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from nightshift.v1 import evaluator_pb2

from nightshift_evaluator import gate, metrics, report
from nightshift_evaluator.runs import Run, RunRequestError, outcome_of

E = evaluator_pb2


@dataclass(frozen=True)
class Candidate:
    """A round's candidate as the gate saw it: its frozen-set run, its adapter, and the decision."""

    run: Run
    adapter_id: str
    promoted: bool


@dataclass(frozen=True)
class CycleCurve:
    """What a report draws of one cycle run: its label, the champion's runs and the gated candidates."""

    cycle_id: str
    label: str
    champion_runs: Sequence[tuple[int, Run]]  # (round, frozen run); round 0 = the start
    candidates: Mapping[int, Candidate]


def outcomes(run: Run) -> list[metrics.KoanOutcome]:
    return [outcome_of(e) for e in run.order]


def finished_run(find, run_id: str, field: str) -> Run:
    """The finished run of `run_id`; NOT_FOUND or FAILED_PRECONDITION naming `field` otherwise."""
    try:
        run = find(run_id)
    except RunRequestError as exc:
        raise exc.for_field(field) from None
    if not run.finished:
        raise RunRequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            field,
            f"evaluation {run_id} has not finished ({len(run.order)}/{run.expected} koan runs)",
        )
    return run


def run_results(run: Run) -> gate.RunResults:
    summary = run.summary()
    outs = outcomes(run)
    return gate.RunResults(
        run_id=run.run_id,
        outcomes=metrics.majority_outcomes(outs),
        pass_rate=summary.pass_rate,
        pass_rate_low=summary.pass_rate_low,
        pass_rate_high=summary.pass_rate_high,
        first_attempt=metrics.majority_first_attempts(outs),
    )


def _same_conditions(candidate: Run, champion: Run, field: str) -> None:
    a, b = candidate.request, champion.request
    for name in ("koan_set", "family", "seed", "repeats", "max_attempts"):
        if getattr(a, name) != getattr(b, name):
            raise RunRequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                field,
                f"runs {candidate.run_id} and {champion.run_id} differ in {name} "
                f"({getattr(a, name)!r} vs {getattr(b, name)!r}): the gate compares the same koans and seeds",
            )


def decide(find, request: E.DecideGateRequest) -> E.GateDecision:
    """The gate's decision on a candidate, from finished runs; raises RunRequestError on bad input."""
    if not request.adapter_id:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "adapter_id", "is required")
    try:
        policy = gate.GatePolicy.from_overrides(dict(request.policy))
    except ValueError as exc:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "policy", str(exc)) from None
    candidate = finished_run(find, request.candidate_run_id, "candidate_run_id")
    champion = finished_run(find, request.champion_run_id, "champion_run_id")
    _same_conditions(candidate, champion, "champion_run_id")
    heldout = (request.candidate_heldout_run_id, request.champion_heldout_run_id)
    if bool(heldout[0]) != bool(heldout[1]):
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_heldout_run_id" if not heldout[0] else "champion_heldout_run_id",
            "give both held-out runs or neither",
        )
    candidate_heldout = champion_heldout = None
    if heldout[0]:
        cand_h = finished_run(find, heldout[0], "candidate_heldout_run_id")
        champ_h = finished_run(find, heldout[1], "champion_heldout_run_id")
        _same_conditions(cand_h, champ_h, "champion_heldout_run_id")
        candidate_heldout, champion_heldout = run_results(cand_h), run_results(champ_h)
    try:
        verdict = gate.decide(
            run_results(candidate), run_results(champion), candidate_heldout, champion_heldout, policy
        )
    except ValueError as exc:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "champion_run_id", str(exc)) from None
    return E.GateDecision(
        decision_id=str(uuid.uuid4()),
        adapter_id=request.adapter_id,
        promote=verdict.promote,
        reason=verdict.reason,
        regressions=len(verdict.regressions),
        gains=len(verdict.gains),
        heldout_delta=verdict.heldout_delta,
        reasons=list(verdict.reasons),
        candidate_run_id=request.candidate_run_id,
        champion_run_id=request.champion_run_id,
        candidate_heldout_run_id=request.candidate_heldout_run_id,
        champion_heldout_run_id=request.champion_heldout_run_id,
        candidate_pass_rate=verdict.candidate_pass_rate,
        champion_pass_rate=verdict.champion_pass_rate,
        sign_test_p=verdict.sign_test_p,
        policy=policy.as_dict(),
        correlation_id=request.correlation_id,
    )


def run_data(run: Run) -> report.RunData:
    r = run.request
    outs = outcomes(run)
    return report.RunData(
        info=report.RunInfo(
            run_id=run.run_id,
            koan_set=r.koan_set + (f"/{r.family}" if r.family else ""),
            adapter=r.adapter_id or "base",
            model=run.model or "default",
            seed=r.seed,
            repeats=r.repeats,
            max_attempts=r.max_attempts,
            created=run.started_at,
        ),
        summary=metrics.summarise(outs, expected=run.expected),
        outcomes=outs,
    )


def learning_curve(
    champion_runs: Sequence[tuple[int, Run]], candidates: Mapping[int, Candidate] | None = None
) -> list[report.CurvePoint]:
    """One point per cycle from its frozen-set run, with regressions and gains against cycle 0's run.

    `candidates`: round -> the candidate the gate decided on that round, shown beside the champion.
    """
    candidates = candidates or {}
    points = []
    base = metrics.majority_outcomes(outcomes(champion_runs[0][1])) if champion_runs else {}

    def against_base(run: Run) -> metrics.Comparison:
        return metrics.compare(base, metrics.majority_outcomes(outcomes(run)))

    for cycle, run in champion_runs:
        summary = run.summary()
        comparison = against_base(run)
        candidate = None
        if cycle in candidates:
            c = candidates[cycle]
            versus = against_base(c.run)
            candidate = report.CurveCandidate(
                run_id=c.run.run_id,
                adapter_id=c.adapter_id,
                pass_rate=c.run.summary().pass_rate,
                regressions=len(versus.regressions),
                gains=len(versus.gains),
                promoted=c.promoted,
            )
        points.append(
            report.CurvePoint(
                cycle=cycle,
                run_id=run.run_id,
                pass_rate=summary.pass_rate,
                low=summary.pass_rate_low,
                high=summary.pass_rate_high,
                regressions=len(comparison.regressions),
                gains=len(comparison.gains),
                candidate=candidate,
            )
        )
    return points


def forgetting_table(runs: Sequence[Run]) -> report.ForgettingTable:
    """R[i][j]: pass rate on family j measured by runs[i] (majority over repeats)."""
    rows = [metrics.family_rates(outcomes(run)) for run in runs]
    families = tuple(sorted({f for row in rows for f in row}))
    rates = tuple(tuple(row[f].pass_rate if f in row else 0.0 for f in families) for row in rows)
    return report.ForgettingTable(families=families, run_ids=tuple(r.run_id for r in runs), rates=rates)


def build_report(
    find,
    request: E.GetReportRequest,
    cycles: Sequence[CycleCurve] = (),
) -> dict[str, bytes]:
    """The report files of a finished run, optionally against another run and along cycle runs' rounds.

    The first of `cycles` gives the learning curve and the forgetting matrix; with more, their curves are
    drawn together.
    """
    run = finished_run(find, request.run_id, "run_id")
    baseline = (
        finished_run(find, request.compare_run_id, "compare_run_id") if request.compare_run_id else None
    )
    command = f"nightshift report {request.run_id}"
    if request.compare_run_id:
        command += f" --compare {request.compare_run_id}"
    if request.cycle_id:
        command += f" --cycle {request.cycle_id}"
    for cycle_id in request.compare_cycle_ids:
        command += f" --cycle {cycle_id}"
    series = [
        report.CurveSeries(c.cycle_id, c.label, tuple(learning_curve(c.champion_runs, c.candidates)))
        for c in cycles
    ]
    cycle_runs = cycles[0].champion_runs if cycles else ()
    table = forgetting_table([r for _, r in cycle_runs]) if len(cycle_runs) > 1 else None
    return report.render_report(
        run_data(run),
        command,
        baseline=run_data(baseline) if baseline is not None else None,
        curve=series[0].points if series else (),
        forgetting=table,
        series=series,
    )
