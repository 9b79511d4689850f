"""The report renderer: the files it writes, what the Markdown says, summary.json against the metrics."""

from __future__ import annotations

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from nightshift_evaluator import metrics, report
from nightshift_evaluator.metrics import KoanOutcome
from nightshift_evaluator.report import (
    CurveCandidate,
    CurvePoint,
    CurveSeries,
    ForgettingTable,
    RunData,
    RunInfo,
)
from PIL import Image

COMMAND = "nightshift report run-cand --compare run-champ"


def outcome(koan_id, family, passed, attempts=1, codes=(), repeat=0) -> KoanOutcome:
    return KoanOutcome(koan_id, family, repeat, passed, attempts, passed and attempts == 1, tuple(codes))


def run_data(run_id: str, outcomes: list[KoanOutcome], repeats: int = 1) -> RunData:
    info = RunInfo(
        run_id=run_id,
        koan_set="frozen",
        adapter="adapter-" + run_id,
        model="qwen2.5-coder-0.5b-instruct-q4_k_m",
        seed=7,
        repeats=repeats,
        max_attempts=3,
        created="2025-06-01T03:00:00+00:00",
    )
    return RunData(info=info, summary=metrics.summarise(outcomes), outcomes=tuple(outcomes))


# The champion passes own-001, own-002, trait-001; the candidate loses own-002 and gains trait-002, life-001.
CHAMPION = run_data(
    "run-champ",
    [
        outcome("own-001", "ownership", True),
        outcome("own-002", "ownership", True, 2, ["E0382"]),
        outcome("trait-001", "traits", True),
        outcome("trait-002", "traits", False, 3, ["E0277", "E0277", "E0277"]),
        outcome("life-001", "lifetimes", False, 3, ["E0106", "E0106", "E0597"]),
    ],
)
CANDIDATE = run_data(
    "run-cand",
    [
        outcome("own-001", "ownership", True),
        outcome("own-002", "ownership", False, 3, ["E0382", "E0382", "E0505"]),
        outcome("trait-001", "traits", True),
        outcome("trait-002", "traits", True, 2, ["E0277"]),
        outcome("life-001", "lifetimes", True),
    ],
)
CURVE = (
    CurvePoint(0, "run-base", 0.6, 0.23, 0.88, 0, 0),
    CurvePoint(1, "run-cand", 0.8, 0.38, 0.96, 1, 2, CurveCandidate("run-cand", "ad-1", 0.8, 1, 2, True)),
    CurvePoint(2, "run-cand", 0.8, 0.38, 0.96, 1, 2, CurveCandidate("run-c2", "ad-2", 0.4, 3, 0, False)),
)
FORGETTING = ForgettingTable(
    families=("lifetimes", "ownership", "traits"),
    run_ids=("run-base", "run-cand"),
    rates=((0.0, 1.0, 0.5), (1.0, 0.5, 1.0)),
)


@pytest.fixture(scope="module")
def full_report() -> dict[str, bytes]:
    return report.render_report(CANDIDATE, COMMAND, baseline=CHAMPION, curve=CURVE, forgetting=FORGETTING)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({}, {"report.md", "summary.json", "families.png", "error_codes.png"}),
        (
            {"baseline": CHAMPION},
            {"report.md", "summary.json", "families.png", "error_codes.png", "regressions.png"},
        ),
        (
            {"curve": CURVE},
            {"report.md", "summary.json", "families.png", "error_codes.png", "learning_curve.png"},
        ),
        ({"forgetting": FORGETTING}, {"report.md", "summary.json", "families.png", "error_codes.png"}),
        (
            {"curve": CURVE[:1]},
            {"report.md", "summary.json", "families.png", "error_codes.png", "learning_curve.png"},
        ),
        # one cycle run is its learning curve already; two or more are compared
        (
            {"series": [CurveSeries("cyc-a", "replay", CURVE)]},
            {"report.md", "summary.json", "families.png", "error_codes.png"},
        ),
        (
            {"series": [CurveSeries("cyc-a", "replay", CURVE), CurveSeries("cyc-b", "naive", CURVE[:2])]},
            {"report.md", "summary.json", "families.png", "error_codes.png", "recipes.png"},
        ),
    ],
)
def test_files_depend_on_what_is_given(kwargs, names):
    files = report.render_report(CANDIDATE, COMMAND, **kwargs)
    assert set(files) == names
    for name, content in files.items():
        assert len(content) > 0, name
        if name.endswith(".png"):
            assert content.startswith(report.PNG_SIGNATURE), name
            with Image.open(io.BytesIO(content)) as image:
                image.verify()
                assert image.format == "PNG" and min(image.size) > 100, name


def test_every_heading_and_caption_names_its_runs(full_report):
    markdown = full_report["report.md"].decode()
    headings = [line for line in markdown.splitlines() if line.startswith(("#", "*Figure", "!["))]
    assert len(headings) > 10
    for line in headings:
        assert re.search(r"`run-(cand|champ|base)`", line), line
    for figure in ("families.png", "error_codes.png", "regressions.png", "learning_curve.png"):
        assert f"]({figure})" in markdown
        assert f"*Figure {figure}:" in markdown


def test_markdown_states_the_numbers_and_the_regressions(full_report):
    markdown = full_report["report.md"].decode()
    # candidate 4/5 = 80.0 %, Wilson 4/5 = [37.6 %, 96.4 %]; champion 3/5 = 60.0 % [23.1 %, 88.2 %]
    assert (
        "| pass rate [95 % interval] | 80.0 % [37.6 %, 96.4 %] | 60.0 % [23.1 %, 88.2 %] | +20.0 points |"
        in markdown
    )
    # pass@1: candidate own-001, trait-001, life-001 = 3/5; champion own-001, trait-001 = 2/5
    assert (
        "| pass@1 [95 % interval] | 60.0 % [23.1 %, 88.2 %] | 40.0 % [11.8 %, 76.9 %] | +20.0 points |"
        in markdown
    )
    assert "| passed (majority over repeats) | 4 | 3 | +1 |" in markdown
    regressions = markdown.split("### Regressions")[1].split("###")[0]
    assert "| `own-002` | `ownership` | pass | fail |" in regressions
    gains = markdown.split("### Gains")[1].split("##")[0]
    assert "`life-001`" in gains and "`trait-002`" in gains and "`own-002`" not in gains
    # 2 gains, 1 regression: two-sided 2·P[X <= 1] = 2·4/8 → 1; one-sided P[X >= 2] = 4/8 = 0.5
    assert "two-sided p = 1; one-sided p (gains > regressions) = 0.5." in markdown
    assert "| `E0382` | 2 | 1 |" in markdown
    assert "| `own-002` | `ownership` | fail | 0/1 | 3 | `E0382`, `E0505` | pass |" in markdown
    # forgetting: ownership max(1.0) − 0.5 = +50 points; ACC (1 + 0.5 + 1)/3 = 83.3 %;
    # vs base ((1 − 0) + (0.5 − 1) + (1 − 0.5))/3 = +33.3 points; not square → no BWT
    assert "| forgetting |  | -100.0 points | +50.0 points | -50.0 points |" in markdown
    assert "ACC = 83.3 %; BWT = n/a" in markdown
    assert "BWT vs base = +33.3 points" in markdown
    champion = "| `run-cand` | 80.0 % | [38.0 %, 96.0 %] | 1 | 2 |"
    assert f"| 1 {champion} `run-cand` | `ad-1` | 80.0 % | 1 | 2 | promoted |" in markdown
    # cycle 2's candidate lost 3 koans: the champion stays, the rejected candidate shows beside it
    assert f"| 2 {champion} `run-c2` | `ad-2` | 40.0 % | 3 | 0 | rejected |" in markdown
    assert "| 0 | `run-base` | 60.0 % | [23.0 %, 88.0 %] | 0 | 0 | – | – | – | – | – | – |" in markdown
    assert f"Reproduce: `{COMMAND}`" in markdown


def test_summary_json_round_trips_and_matches_the_metrics(full_report):
    summary = json.loads(full_report["summary.json"])
    assert summary["run_id"] == "run-cand"
    assert summary["compare_run_id"] == "run-champ"
    assert summary["command"] == COMMAND
    for key, data in (("run", CANDIDATE), ("baseline", CHAMPION)):
        got = summary[key]["summary"]
        expected = data.summary
        assert summary[key]["info"]["run_id"] == data.info.run_id
        for field in (
            "total",
            "passed",
            "pass_rate",
            "pass_rate_low",
            "pass_rate_high",
            "pass_at_1",
            "repeats",
        ):
            assert got[field] == getattr(expected, field), field
        assert got["median_attempts"] == expected.median_attempts
        assert got["error_codes"] == expected.error_codes
        assert got["families"]["ownership"] == {
            "passed": expected.families["ownership"].passed,
            "total": 2,
            "pass_rate": expected.families["ownership"].pass_rate,
        }
        assert [k["koan_id"] for k in summary[key]["koans"]] == sorted(k.koan_id for k in data.outcomes)
    comparison = metrics.compare(
        metrics.majority_outcomes(CHAMPION.outcomes), metrics.majority_outcomes(CANDIDATE.outcomes)
    )
    assert summary["comparison"]["regressions"] == ["own-002"] == list(comparison.regressions)
    assert summary["comparison"]["gains"] == ["life-001", "trait-002"]
    assert summary["comparison"]["sign_test_p"] == comparison.sign_test_p
    assert summary["comparison"]["p_improvement"] == 0.5
    assert (summary["comparison"]["paired"], summary["comparison"]["discordant"]) == (5, 3)
    # 4 − 3 koans; 0.8 − 0.6
    assert summary["comparison"]["changes"]["passed"] == 1
    assert summary["comparison"]["changes"]["pass_rate"] == pytest.approx(0.2)
    forgetting = metrics.forgetting_matrix(FORGETTING.rates)
    assert summary["forgetting"]["acc"] == forgetting.acc
    assert summary["forgetting"]["bwt"] is None
    assert summary["forgetting"]["per_family_forgetting"] == list(forgetting.per_family_forgetting)
    assert summary["learning_curve"][1] == {
        "cycle": 1,
        "run_id": "run-cand",
        "pass_rate": 0.8,
        "low": 0.38,
        "high": 0.96,
        "regressions": 1,
        "gains": 2,
        "candidate": {
            "run_id": "run-cand",
            "adapter_id": "ad-1",
            "pass_rate": 0.8,
            "regressions": 1,
            "gains": 2,
            "promoted": True,
        },
    }
    assert summary["learning_curve"][0]["candidate"] is None
    assert summary["learning_curve"][2]["candidate"]["promoted"] is False
    assert summary["figures"] == ["error_codes.png", "families.png", "learning_curve.png", "regressions.png"]


def test_rendering_is_deterministic_and_thread_safe(full_report):
    def render(_):
        return report.render_report(CANDIDATE, COMMAND, baseline=CHAMPION, curve=CURVE, forgetting=FORGETTING)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(render, range(2)))
    for files in results:
        assert files == full_report


def test_comparing_changes_the_figures():
    alone = report.render_report(CANDIDATE, COMMAND)
    compared = report.render_report(CANDIDATE, COMMAND, baseline=CHAMPION)
    # two bars per family and per error code when comparing
    assert alone["families.png"] != compared["families.png"]
    assert alone["error_codes.png"] != compared["error_codes.png"]
    assert "baseline" not in alone["report.md"].decode()
    assert "## Comparison" not in alone["report.md"].decode()


def test_an_empty_run_still_renders():
    empty = run_data("run-empty", [])
    files = report.render_report(empty, "nightshift report run-empty")
    markdown = files["report.md"].decode()
    assert "No failed attempts." in markdown
    assert "| pass rate [95 % interval] | 0.0 % [0.0 %, 100.0 %] |" in markdown
    assert "| median attempts to pass | – |" in markdown
    assert json.loads(files["summary.json"])["run"]["summary"]["median_attempts"] is None
    assert files["families.png"].startswith(report.PNG_SIGNATURE)


def test_repeats_show_the_per_koan_agreement():
    outcomes = [
        outcome("own-001", "ownership", True, repeat=0),
        outcome("own-001", "ownership", False, 3, ["E0382"] * 3, repeat=1),
        outcome("own-001", "ownership", True, 2, ["E0499"], repeat=2),
    ]
    markdown = report.render_report(run_data("run-rep", outcomes, repeats=3), "cmd")["report.md"].decode()
    # 2 of 3 repeats passed → pass by majority; attempts per repeat 1, 3, 2
    assert "| `own-001` | `ownership` | pass | 2/3 | 1, 3, 2 | `E0382`, `E0499` |" in markdown


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"run_ids": ("a",)}, "run_ids has 1 entries but rates has 2 rows"),
        ({"rates": ((0.1, 0.2), (0.3,))}, "rates row 0 has 2 values for 1 families"),
    ],
)
def test_forgetting_table_checks_its_shape(fields, message):
    values = {"families": ("f",), "run_ids": ("a", "b"), "rates": ((0.1,), (0.2,))}
    values.update(fields)
    with pytest.raises(ValueError, match=re.escape(message)):
        ForgettingTable(**values)


def test_cycle_runs_compared_are_tabled_round_by_round():
    naive = (
        CURVE[0],
        CurvePoint(
            1, "run-base", 0.6, 0.23, 0.88, 0, 0, CurveCandidate("run-n1", "naive-1", 0.5, 2, 1, False)
        ),
    )
    files = report.render_report(
        CANDIDATE,
        COMMAND,
        series=[CurveSeries("cyc-replay", "replay", CURVE), CurveSeries("cyc-naive", "naive", naive)],
    )
    markdown = files["report.md"].decode()
    section = markdown.split("## Cycle runs compared")[1].split("## Reproduce")[0]
    assert "(cycle runs `cyc-replay`, `cyc-naive`)" in section
    assert (
        "| `cyc-replay` | replay | 2 | `run-cand` | 80.0 % | `run-c2` | 40.0 % | 3 | 0 | rejected |"
        in section
    )
    assert (
        "| `cyc-naive` | naive | 1 | `run-base` | 60.0 % | `run-n1` | 50.0 % | 2 | 1 | rejected |" in section
    )
    assert "| `cyc-naive` | naive | 0 | `run-base` | 60.0 % | – | – | – | – | – |" in section
    summary = json.loads(files["summary.json"])
    assert [(c["cycle_id"], c["label"], len(c["curve"])) for c in summary["cycle_runs"]] == [
        ("cyc-replay", "replay", 3),
        ("cyc-naive", "naive", 2),
    ]
    assert summary["cycle_runs"][1]["curve"][1]["candidate"]["regressions"] == 2
