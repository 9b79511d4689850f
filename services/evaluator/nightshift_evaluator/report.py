"""The evaluation report: Markdown, a JSON summary and PNG plots of one run, rendered from plain data.

`render_report` takes what the caller has already loaded (run metadata, the `metrics.Summary`, the
koan outcomes, optionally a baseline run, a learning curve and a forgetting matrix) and returns file
name → bytes. It does no RPC and no SQL. Every table and figure caption names its run ids, and
summary.json holds every number the Markdown shows. Plots use matplotlib's object-oriented API on an
Agg canvas (no pyplot, no global state), so rendering is safe from several threads.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nightshift_evaluator import metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOP_ERROR_CODES = 15
DPI = 100
COLOUR_RUN = "#1f77b4"
COLOUR_BASELINE = "#b0b0b0"
COLOUR_GAIN = "#2ca02c"
COLOUR_REGRESSION = "#d62728"


@dataclass(frozen=True)
class RunInfo:
    """Metadata of one evaluation run, as recorded by EvaluationStarted."""

    run_id: str
    koan_set: str
    adapter: str
    model: str
    seed: int
    repeats: int
    max_attempts: int
    created: str  # ISO-8601 time the run started


@dataclass(frozen=True)
class RunData:
    """One run as the report needs it: metadata, its summary, and every koan run."""

    info: RunInfo
    summary: metrics.Summary
    outcomes: Sequence[metrics.KoanOutcome]


@dataclass(frozen=True)
class CurveCandidate:
    """The candidate a cycle's dawn measured on the frozen set, and what the gate did with it."""

    run_id: str
    adapter_id: str
    pass_rate: float
    regressions: int  # against cycle 0's run, like the champion's
    gains: int
    promoted: bool


@dataclass(frozen=True)
class CurvePoint:
    """One cycle of a learning curve: the champion's frozen-set run after that cycle, and the candidate's.

    The champion after a cycle is the candidate when the gate promoted it, else the champion before; a
    rejected candidate (the forgetting the gate stopped) shows only in `candidate`.
    """

    cycle: int
    run_id: str
    pass_rate: float
    low: float
    high: float
    regressions: int
    gains: int
    candidate: CurveCandidate | None = None


@dataclass(frozen=True)
class CurveSeries:
    """One cycle run's learning curve, labelled (by its recipe, say) for a figure comparing cycle runs."""

    cycle_id: str
    label: str
    points: tuple[CurvePoint, ...]


@dataclass(frozen=True)
class ForgettingTable:
    """R[i][j] = pass rate on family j after cycle i; row i was measured by run_ids[i]."""

    families: tuple[str, ...]
    run_ids: tuple[str, ...]
    rates: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.run_ids) != len(self.rates):
            raise ValueError(f"run_ids has {len(self.run_ids)} entries but rates has {len(self.rates)} rows")
        for i, row in enumerate(self.rates):
            if len(row) != len(self.families):
                raise ValueError(f"rates row {i} has {len(row)} values for {len(self.families)} families")


def render_report(
    run: RunData,
    command: str,
    *,
    baseline: RunData | None = None,
    curve: Sequence[CurvePoint] = (),
    forgetting: ForgettingTable | None = None,
    series: Sequence[CurveSeries] = (),
) -> dict[str, bytes]:
    """Render report.md, summary.json and the PNG figures of `run`.

    With `baseline`, the two runs are compared koan by koan (baseline = before, run = after):
    regressions are koans the baseline passed and `run` fails. `command` is the command line that
    reproduces this report; it is quoted in the Markdown and stored in summary.json.
    Files: report.md, summary.json, families.png, error_codes.png, regressions.png (with a baseline),
    learning_curve.png (with a curve), recipes.png (with two or more `series`: cycle runs compared).
    """
    comparison = None
    if baseline is not None:
        comparison = metrics.compare(
            metrics.majority_outcomes(baseline.outcomes), metrics.majority_outcomes(run.outcomes)
        )
    figures: dict[str, bytes] = {
        "families.png": _png(_families_figure(run, baseline)),
        "error_codes.png": _png(_error_codes_figure(run, baseline)),
    }
    if comparison is not None:
        figures["regressions.png"] = _png(_regressions_figure(run, baseline, comparison))
    if curve:
        figures["learning_curve.png"] = _png(_learning_curve_figure(curve))
    series = [s for s in series if s.points]
    if len(series) > 1:
        figures["recipes.png"] = _png(_series_figure(series))
    else:
        series = []
    forgetting_metrics = metrics.forgetting_matrix(forgetting.rates) if forgetting is not None else None
    markdown = _markdown(run, baseline, comparison, curve, forgetting, forgetting_metrics, command, series)
    summary = _summary_json(
        run, baseline, comparison, curve, forgetting, forgetting_metrics, command, figures
    )
    summary["cycle_runs"] = [
        {"cycle_id": s.cycle_id, "label": s.label, "curve": [dataclasses.asdict(p) for p in s.points]}
        for s in series
    ]
    return {
        "report.md": markdown.encode(),
        "summary.json": json.dumps(summary, indent=2, allow_nan=False).encode(),
        **figures,
    }


# ------------------------------------------------------------------------------------------ JSON


def _run_json(data: RunData) -> dict[str, object]:
    summary = dataclasses.asdict(data.summary)
    summary["finished"] = data.summary.finished
    return {"info": dataclasses.asdict(data.info), "summary": summary, "koans": _koan_rows(data)}


def _koan_rows(data: RunData) -> list[dict[str, object]]:
    majority = metrics.majority_outcomes(data.outcomes)
    by_koan: dict[str, list[metrics.KoanOutcome]] = {}
    for outcome in sorted(data.outcomes, key=lambda o: (o.koan_id, o.repeat)):
        by_koan.setdefault(outcome.koan_id, []).append(outcome)
    return [
        {
            "koan_id": koan_id,
            "family": runs[0].family,
            "passed": majority[koan_id],
            "passed_repeats": sum(o.passed for o in runs),
            "repeats": len(runs),
            "attempts": [o.attempts for o in runs],
            "error_codes": [list(o.error_codes) for o in runs],
        }
        for koan_id, runs in by_koan.items()
    ]


def _summary_json(run, baseline, comparison, curve, forgetting, forgetting_metrics, command, figures) -> dict:
    comparison_json = None
    if comparison is not None:
        comparison_json = dataclasses.asdict(comparison)
        comparison_json.update(
            before_run_id=baseline.info.run_id,
            after_run_id=run.info.run_id,
            paired=comparison.paired,
            discordant=comparison.discordant,
            # run minus baseline, as in the Summary table's "change" column
            changes={
                name: getattr(run.summary, name) - getattr(baseline.summary, name)
                for name in ("passed", "pass_rate", "pass_rate_mean", "pass_at_1", "repeat_error_rate")
            },
        )
    forgetting_json = None
    if forgetting is not None:
        forgetting_json = {
            "families": list(forgetting.families),
            "run_ids": list(forgetting.run_ids),
            "rates": [list(row) for row in forgetting.rates],
            **dataclasses.asdict(forgetting_metrics),
        }
    return {
        "run_id": run.info.run_id,
        "compare_run_id": baseline.info.run_id if baseline is not None else None,
        "run": _run_json(run),
        "baseline": _run_json(baseline) if baseline is not None else None,
        "comparison": comparison_json,
        "learning_curve": [dataclasses.asdict(point) for point in curve],
        "forgetting": forgetting_json,
        "figures": sorted(figures),
        "command": command,
    }


# -------------------------------------------------------------------------------------- Markdown


def _markdown(run, baseline, comparison, curve, forgetting, forgetting_metrics, command, series=()) -> str:
    a = run.info.run_id
    runs = [run] if baseline is None else [run, baseline]
    both = f"run `{a}`" if baseline is None else f"run `{a}` vs baseline run `{baseline.info.run_id}`"
    lines = [f"# Evaluation report: {both}", ""]
    lines += _runs_section(runs, both)
    lines += _summary_section(runs, both)
    lines += _families_section(runs, both)
    lines += _error_codes_section(runs, both)
    if comparison is not None:
        lines += _comparison_section(run, baseline, comparison)
    lines += _koans_section(runs)
    if curve:
        lines += _curve_section(curve)
    if forgetting is not None:
        lines += _forgetting_section(forgetting, forgetting_metrics)
    if series:
        lines += _series_section(series)
    lines += [f"## Reproduce ({both})", "", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def _runs_section(runs: list[RunData], both: str) -> list[str]:
    header = ["", *(f"run `{r.info.run_id}`" for r in runs)]
    rows = [
        ["role", *(("run", "baseline")[: len(runs)])],
        ["koan set", *(r.info.koan_set for r in runs)],
        ["adapter", *(r.info.adapter for r in runs)],
        ["model", *(r.info.model for r in runs)],
        ["seed", *(str(r.info.seed) for r in runs)],
        ["repeats", *(str(r.info.repeats) for r in runs)],
        ["max attempts", *(str(r.info.max_attempts) for r in runs)],
        ["created", *(r.info.created for r in runs)],
    ]
    return [f"## Runs ({both})", "", *_table(header, rows), ""]


def _summary_section(runs: list[RunData], both: str) -> list[str]:
    header = ["metric", *(f"run `{r.info.run_id}`" for r in runs)]
    if len(runs) == 2:
        header.append("change")
    s = [r.summary for r in runs]

    def row(name: str, cells: list[str], change: str = "") -> list[str]:
        return [name, *cells, *([change] if len(runs) == 2 else [])]

    def rate_change(attr: str) -> str:
        return _signed_points(getattr(s[0], attr) - getattr(s[1], attr)) if len(runs) == 2 else ""

    rows = [
        row("koans", [str(x.total) for x in s]),
        row("koan runs evaluated / expected", [f"{x.evaluated} / {x.expected}" for x in s]),
        row("passed (majority over repeats)", [str(x.passed) for x in s], _signed_int(s, "passed")),
        row(
            "pass rate [95 % interval]",
            [f"{_pct(x.pass_rate)} [{_pct(x.pass_rate_low)}, {_pct(x.pass_rate_high)}]" for x in s],
            rate_change("pass_rate"),
        ),
        row(
            "mean pass rate over repeats", [_pct(x.pass_rate_mean) for x in s], rate_change("pass_rate_mean")
        ),
        row(
            "pass@1 [95 % interval]",
            [f"{_pct(x.pass_at_1)} [{_pct(x.pass_at_1_low)}, {_pct(x.pass_at_1_high)}]" for x in s],
            rate_change("pass_at_1"),
        ),
        row("median attempts to pass", [_number(x.median_attempts) for x in s]),
        row("mean attempts to pass", [_number(x.mean_attempts) for x in s]),
        row("repeat-error rate", [_pct(x.repeat_error_rate) for x in s], rate_change("repeat_error_rate")),
        row("repeats", [str(x.repeats) for x in s]),
    ]
    note = (
        "Intervals: Wilson on the koan count for one repeat, Student t over the per-repeat pass rates "
        "for several. A koan passes when it passed in more than half of its repeats."
    )
    return [f"## Summary ({both})", "", *_table(header, rows), "", note, ""]


def _families_section(runs: list[RunData], both: str) -> list[str]:
    families = sorted({f for r in runs for f in r.summary.families})
    header = ["family", *(f"run `{r.info.run_id}`" for r in runs)]
    rows = []
    for family in families:
        cells = []
        for r in runs:
            rate = r.summary.families.get(family)
            cells.append(f"{rate.passed}/{rate.total} ({_pct(rate.pass_rate)})" if rate else "–")
        rows.append([f"`{family}`", *cells])
    return [
        f"## Families ({both})",
        "",
        f"![Per-family pass rate, {both}](families.png)",
        "",
        f"*Figure families.png: per-family pass rate (koans passing by majority), {both}.*",
        "",
        *_table(header, rows),
        "",
    ]


def _error_codes_section(runs: list[RunData], both: str) -> list[str]:
    codes = _top_codes(runs)
    header = ["error code", *(f"run `{r.info.run_id}`" for r in runs)]
    rows = [[f"`{code}`", *(str(r.summary.error_codes.get(code, 0)) for r in runs)] for code in codes]
    lines = [
        f"## Error codes ({both})",
        "",
        f"![First error code of each failed attempt, {both}](error_codes.png)",
        "",
        f"*Figure error_codes.png: first error code of each failed attempt, top {TOP_ERROR_CODES}, {both}.*",
        "",
    ]
    if not rows:
        return [*lines, "No failed attempts.", ""]
    lines += _table(header, rows)
    for r in runs:
        rest = {c: n for c, n in r.summary.error_codes.items() if c not in codes}
        if rest:
            lines.append(
                f"\nRun `{r.info.run_id}`: {len(rest)} more codes, {sum(rest.values())} failed attempts "
                "(all in summary.json)."
            )
    return [*lines, ""]


def _comparison_section(run: RunData, baseline: RunData, comparison: metrics.Comparison) -> list[str]:
    a, b = run.info.run_id, baseline.info.run_id
    families = _families_of(run, baseline)
    lines = [
        f"## Comparison: run `{a}` vs baseline run `{b}`",
        "",
        f"Paired koans: {comparison.paired}; regressions (passed in `{b}`, fail in `{a}`): "
        f"{len(comparison.regressions)}; gains (failed in `{b}`, pass in `{a}`): {len(comparison.gains)}; "
        f"unchanged pass: {len(comparison.unchanged_pass)}; "
        f"unchanged fail: {len(comparison.unchanged_fail)}.",
        "",
        f"Sign test on the {comparison.discordant} discordant koans: "
        f"two-sided p = {comparison.sign_test_p:.4g}; "
        f"one-sided p (gains > regressions) = {comparison.p_improvement:.4g}.",
        "",
    ]
    if comparison.only_before or comparison.only_after:
        lines += [
            f"Not paired (ignored): only in `{b}`: {_id_list(comparison.only_before)}; "
            f"only in `{a}`: {_id_list(comparison.only_after)}.",
            "",
        ]
    lines += [
        f"![Gains and regressions per family, run `{a}` vs baseline run `{b}`](regressions.png)",
        "",
        f"*Figure regressions.png: gains (up) and regressions (down) per family, "
        f"run `{a}` vs baseline run `{b}`.*",
        "",
    ]
    for title, koans, before, after in (
        ("Regressions", comparison.regressions, "pass", "fail"),
        ("Gains", comparison.gains, "fail", "pass"),
    ):
        lines += [f"### {title} (run `{a}` vs baseline run `{b}`)", ""]
        if koans:
            header = ["koan", "family", f"run `{b}`", f"run `{a}`"]
            lines += _table(header, [[f"`{k}`", f"`{families.get(k, '')}`", before, after] for k in koans])
        else:
            lines.append(f"No {title.lower()}.")
        lines.append("")
    return lines


def _koans_section(runs: list[RunData]) -> list[str]:
    run = runs[0]
    a = run.info.run_id
    header = ["koan", "family", f"run `{a}`", "passed repeats", "attempts", "first error codes"]
    baseline_outcomes = {}
    if len(runs) == 2:
        header.append(f"run `{runs[1].info.run_id}`")
        baseline_outcomes = metrics.majority_outcomes(runs[1].outcomes)
    rows = []
    for koan in _koan_rows(run):
        codes = list(dict.fromkeys(code for attempt in koan["error_codes"] for code in attempt))
        row = [
            f"`{koan['koan_id']}`",
            f"`{koan['family']}`",
            _pass_word(koan["passed"]),
            f"{koan['passed_repeats']}/{koan['repeats']}",
            ", ".join(str(n) for n in koan["attempts"]),
            ", ".join(f"`{c}`" for c in codes) or "–",
        ]
        if len(runs) == 2:
            row.append(_pass_word(baseline_outcomes.get(koan["koan_id"])))
        rows.append(row)
    title = f"## Koans (run `{a}`" + (f", baseline run `{runs[1].info.run_id}`)" if len(runs) == 2 else ")")
    return [title, "", *_table(header, rows), ""]


def _curve_section(curve: Sequence[CurvePoint]) -> list[str]:
    ids = ", ".join(f"`{p.run_id}`" for p in curve)
    header = ["cycle", "champion run", "pass rate", "95 % interval", "regressions", "gains"]
    with_candidates = any(p.candidate is not None for p in curve)
    if with_candidates:
        header += ["candidate run", "candidate adapter", "pass rate", "regressions", "gains", "gate"]
    rows = []
    for p in curve:
        row = [
            str(p.cycle),
            f"`{p.run_id}`",
            _pct(p.pass_rate),
            f"[{_pct(p.low)}, {_pct(p.high)}]",
            str(p.regressions),
            str(p.gains),
        ]
        if with_candidates:
            row += _candidate_cells(p.candidate, with_adapter=True)
        rows.append(row)
    candidates = (
        " Candidates are the adapters each night trained, measured by the dawn's frozen-set run; "
        "regressions and gains count against cycle 0's run."
        if with_candidates
        else ""
    )
    return [
        f"## Learning curve (runs {ids})",
        "",
        f"![Frozen-set pass rate per cycle, runs {ids}](learning_curve.png)",
        "",
        f"*Figure learning_curve.png: the champion's pass rate with 95 % interval, gains and regressions "
        f"per cycle, runs {ids}"
        + (", with each cycle's candidate (promoted or rejected by the gate)" if with_candidates else "")
        + ".*",
        "",
        *_table(header, rows),
        "",
        *([candidates.strip(), ""] if candidates else []),
    ]


def _candidate_cells(c: CurveCandidate | None, *, with_adapter: bool) -> list[str]:
    """A candidate's table cells: run, (adapter,) pass rate, regressions, gains, the gate's decision."""
    if c is None:
        return ["–"] * (6 if with_adapter else 5)
    return [
        f"`{c.run_id}`",
        *([f"`{c.adapter_id}`"] if with_adapter else []),
        _pct(c.pass_rate),
        str(c.regressions),
        str(c.gains),
        "promoted" if c.promoted else "rejected",
    ]


def _series_section(series: Sequence[CurveSeries]) -> list[str]:
    ids = ", ".join(f"`{s.cycle_id}`" for s in series)
    header = ["cycle run", "label", "cycle", "champion run", "pass rate", "candidate run", "pass rate"]
    header += ["regressions", "gains", "gate"]
    rows = []
    for s in series:
        for p in s.points:
            rows.append(
                [f"`{s.cycle_id}`", s.label, str(p.cycle), f"`{p.run_id}`", _pct(p.pass_rate)]
                + _candidate_cells(p.candidate, with_adapter=False)
            )
    return [
        f"## Cycle runs compared (cycle runs {ids})",
        "",
        f"![Frozen-set pass rate per cycle of each cycle run, cycle runs {ids}](recipes.png)",
        "",
        f"*Figure recipes.png: the champion's frozen-set pass rate per cycle (lines) and each cycle's "
        f"candidate (markers: triangle promoted, cross rejected), and the candidates' regressions and "
        f"gains against each cycle run's cycle 0, cycle runs {ids}.*",
        "",
        *_table(header, rows),
        "",
    ]


def _forgetting_section(table: ForgettingTable, result: metrics.Forgetting) -> list[str]:
    ids = ", ".join(f"`{run_id}`" for run_id in table.run_ids)
    header = ["cycle", "run", *(f"`{f}`" for f in table.families)]
    rows = [
        [str(i), f"`{run_id}`", *(_pct(v) for v in row)]
        for i, (run_id, row) in enumerate(zip(table.run_ids, table.rates, strict=True))
    ]
    rows.append(["forgetting", "", *(_signed_points(v) for v in result.per_family_forgetting)])
    bwt = _signed_points(result.bwt) if result.bwt is not None else "n/a (needs one family learned per cycle)"
    return [
        f"## Forgetting (runs {ids})",
        "",
        *_table(header, rows),
        "",
        f"ACC = {_pct(result.acc)}; BWT = {bwt}; BWT vs base = {_signed_points(result.bwt_vs_base)}; "
        f"forgetting = {_signed_points(result.forgetting)} (runs {ids}).",
        "",
    ]


# -------------------------------------------------------------------------------------- figures


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software metadata: the bytes then depend on the data only, not on the library version.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _families_figure(run: RunData, baseline: RunData | None) -> Figure:
    runs = [run] if baseline is None else [baseline, run]
    families = sorted({f for r in runs for f in r.summary.families})
    figure, axes = _new_figure(max(6.0, 0.8 * len(families) * len(runs) + 2.0), 4.5)
    width = 0.8 / len(runs)
    for k, r in enumerate(runs):
        rates = [r.summary.families[f].pass_rate if f in r.summary.families else 0.0 for f in families]
        offsets = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(families))]
        colour = COLOUR_RUN if r is run else COLOUR_BASELINE
        label = f"run {r.info.run_id}" if r is run else f"baseline {r.info.run_id}"
        bars = axes.bar(offsets, [100 * v for v in rates], width, label=label, color=colour)
        axes.bar_label(
            bars,
            labels=[
                f"{r.summary.families[f].passed}/{r.summary.families[f].total}"
                if f in r.summary.families
                else ""
                for f in families
            ],
            fontsize=8,
        )
    axes.set_xticks(range(len(families)), families, rotation=30, ha="right")
    axes.set_ylim(0, 110)
    axes.set_ylabel("pass rate (%)")
    title = f"Per-family pass rate, run {run.info.run_id}"
    axes.set_title(title + (f" vs baseline {baseline.info.run_id}" if baseline else ""), fontsize=9)
    if not families:
        _no_data(axes)
    else:
        axes.legend(fontsize=8)
    return figure


def _error_codes_figure(run: RunData, baseline: RunData | None) -> Figure:
    runs = [run] if baseline is None else [run, baseline]
    codes = _top_codes(runs)
    figure, axes = _new_figure(7.0, max(3.0, 0.35 * len(codes) * len(runs) + 1.5))
    height = 0.8 / len(runs)
    for k, r in enumerate(runs):
        positions = [i + (k - (len(runs) - 1) / 2) * height for i in range(len(codes))]
        colour = COLOUR_RUN if r is run else COLOUR_BASELINE
        label = f"run {r.info.run_id}" if r is run else f"baseline {r.info.run_id}"
        counts = [r.summary.error_codes.get(code, 0) for code in codes]
        bars = axes.barh(positions, counts, height, label=label, color=colour)
        axes.bar_label(bars, labels=[str(n) if n else "" for n in counts], fontsize=8)
    axes.set_yticks(range(len(codes)), codes)
    axes.invert_yaxis()
    axes.set_xlabel("failed attempts")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"First error code of failed attempts (top {TOP_ERROR_CODES}), run {run.info.run_id}"
    axes.set_title(title + (f" vs baseline {baseline.info.run_id}" if baseline else ""), fontsize=9)
    if not codes:
        _no_data(axes)
    else:
        axes.legend(fontsize=8)
    return figure


def _regressions_figure(run: RunData, baseline: RunData, comparison: metrics.Comparison) -> Figure:
    families_of = _families_of(run, baseline)
    families = sorted({families_of[k] for k in (*comparison.gains, *comparison.regressions)})
    gains = [sum(families_of[k] == f for k in comparison.gains) for f in families]
    regressions = [-sum(families_of[k] == f for k in comparison.regressions) for f in families]
    figure, axes = _new_figure(max(6.0, 0.8 * len(families) + 2.0), 4.5)
    positions = list(range(len(families)))
    up = axes.bar(positions, gains, 0.6, color=COLOUR_GAIN, label="gains")
    down = axes.bar(positions, regressions, 0.6, color=COLOUR_REGRESSION, label="regressions")
    axes.bar_label(up, labels=[str(v) if v else "" for v in gains], fontsize=8)
    axes.bar_label(down, labels=[str(-v) if v else "" for v in regressions], fontsize=8)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(positions, families, rotation=30, ha="right")
    # Keep bars narrow when there are only one or two families.
    pad = max(0.5, (3 - len(families)) / 2)
    axes.set_xlim(-0.5 - pad, len(families) - 0.5 + pad)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("koans")
    axes.set_title(
        f"Gains and regressions, run {run.info.run_id} vs baseline {baseline.info.run_id} "
        f"(sign test p = {comparison.sign_test_p:.3g})",
        fontsize=9,
    )
    if not families:
        _no_data(axes, "no gains or regressions")
    else:
        axes.legend(fontsize=8)
    return figure


def _learning_curve_figure(curve: Sequence[CurvePoint]) -> Figure:
    figure = Figure(figsize=(max(6.0, 0.9 * len(curve) + 2.0), 6.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    rates_axes, counts_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    cycles = [p.cycle for p in curve]
    rates_axes.fill_between(
        cycles, [100 * p.low for p in curve], [100 * p.high for p in curve], alpha=0.2, color=COLOUR_RUN
    )
    rates_axes.plot(
        cycles, [100 * p.pass_rate for p in curve], marker="o", color=COLOUR_RUN, label="champion"
    )
    candidates = _candidates_of(curve)
    _candidate_markers(rates_axes, curve, "", s=60)
    rates_axes.set_ylim(0, 105)
    rates_axes.set_ylabel("pass rate (%)")
    rates_axes.set_title("Frozen-set pass rate with 95 % interval per cycle", fontsize=9)
    if candidates:
        rates_axes.legend(fontsize=8)
    # champion bars, and beside them (hatched) the candidate's, when there are candidates
    width = 0.35 if candidates else 0.6
    shift = width / 2 if candidates else 0.0
    left = [x - shift for x in cycles]
    counts_axes.bar(left, [p.gains for p in curve], width, color=COLOUR_GAIN, label="gains")
    counts_axes.bar(
        left, [-p.regressions for p in curve], width, color=COLOUR_REGRESSION, label="regressions"
    )
    if candidates:
        right = [x + shift for x, _ in candidates]
        style = {"width": width, "fill": False, "hatch": "//"}
        counts_axes.bar(right, [c.gains for _, c in candidates], edgecolor=COLOUR_GAIN, **style)
        counts_axes.bar(
            right,
            [-c.regressions for _, c in candidates],
            edgecolor=COLOUR_REGRESSION,
            label="candidate's (hatched)",
            **style,
        )
    counts_axes.axhline(0, color="black", linewidth=0.8)
    counts_axes.set_ylabel("koans vs cycle 0")
    counts_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts_axes.legend(fontsize=8)
    counts_axes.set_xticks(cycles, [f"{p.cycle}\n{p.run_id[:8]}" for p in curve], fontsize=8)
    counts_axes.set_xlabel("cycle / champion run")
    return figure


def _series_figure(series: Sequence[CurveSeries]) -> Figure:
    rounds = sorted({p.cycle for s in series for p in s.points})
    figure = Figure(figsize=(max(6.5, 1.2 * len(rounds) + 3.0), 6.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    rates_axes, counts_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    colours = [f"C{i % 10}" for i in range(len(series))]
    width = 0.8 / len(series)
    for i, (s, colour) in enumerate(zip(series, colours, strict=True)):
        label = f"{s.label} ({s.cycle_id[:8]})"
        rates_axes.plot(
            [p.cycle for p in s.points],
            [100 * p.pass_rate for p in s.points],
            marker="o",
            color=colour,
            label=f"{label}: champion",
        )
        _candidate_markers(rates_axes, s.points, f"{label}: ", colour, s=70, edgecolor="black")
        chosen = _candidates_of(s.points)
        offset = (i - (len(series) - 1) / 2) * width
        xs = [x + offset for x, _ in chosen]
        counts_axes.bar(xs, [c.gains for _, c in chosen], width, color=colour, alpha=0.9)
        counts_axes.bar(xs, [-c.regressions for _, c in chosen], width, color=colour, alpha=0.45, hatch="//")
    rates_axes.set_ylim(0, 105)
    rates_axes.set_ylabel("frozen pass rate (%)")
    rates_axes.set_title("Frozen-set pass rate per cycle, by cycle run", fontsize=9)
    rates_axes.legend(fontsize=7)
    counts_axes.axhline(0, color="black", linewidth=0.8)
    counts_axes.set_ylabel("candidate's gains (up)\nregressions (down, hatched)", fontsize=8)
    counts_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts_axes.set_xticks(rounds, [str(r) for r in rounds])
    counts_axes.set_xlabel("cycle")
    return figure


def _candidates_of(points: Sequence[CurvePoint]) -> list[tuple[int, CurveCandidate]]:
    return [(p.cycle, p.candidate) for p in points if p.candidate is not None]


def _candidate_markers(axes, points: Sequence[CurvePoint], label: str, colour: str = "", **style) -> None:
    """Each point's candidate at its pass rate: a triangle when promoted, a cross when rejected."""
    chosen = _candidates_of(points)
    for promoted, marker, default, word in (
        (True, "^", COLOUR_GAIN, "promoted"),
        (False, "X", COLOUR_REGRESSION, "rejected"),
    ):
        picked = [(x, c) for x, c in chosen if c.promoted == promoted]
        if picked:
            axes.scatter(
                [x for x, _ in picked],
                [100 * c.pass_rate for _, c in picked],
                marker=marker,
                color=colour or default,
                zorder=3,
                label=f"{label}candidate, {word}",
                **style,
            )


def _no_data(axes, text: str = "no data") -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="grey")


# ------------------------------------------------------------------------------------- helpers


def _top_codes(runs: Sequence[RunData]) -> list[str]:
    """The TOP_ERROR_CODES most frequent codes over the runs together, by count then code."""
    totals: dict[str, int] = {}
    for r in runs:
        for code, count in r.summary.error_codes.items():
            totals[code] = totals.get(code, 0) + count
    return [
        code for code, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_ERROR_CODES]
    ]


def _families_of(*runs: RunData) -> dict[str, str]:
    families: dict[str, str] = {}
    for r in runs:
        for outcome in r.outcomes:
            families.setdefault(outcome.koan_id, outcome.family)
    return families


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f} %"


def _signed_points(difference: float) -> str:
    return f"{100 * difference:+.1f} points"


def _signed_int(summaries: Sequence[metrics.Summary], attr: str) -> str:
    return f"{getattr(summaries[0], attr) - getattr(summaries[1], attr):+d}" if len(summaries) == 2 else ""


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pass_word(passed: bool | None) -> str:
    return "–" if passed is None else ("pass" if passed else "fail")


def _id_list(koan_ids: Sequence[str]) -> str:
    return ", ".join(f"`{k}`" for k in koan_ids) or "none"
