"""The promotion gate as a table of cases: promote, each rejection alone, several at once, ties, overrides."""

from __future__ import annotations

import pytest
from nightshift_evaluator.gate import GatePolicy, GateVerdict, RunResults, decide

FROZEN = ("life-001", "own-001", "own-002", "trait-001", "trait-002")
# The champion passes 3 of the 5 frozen koans: 60 %.
CHAMPION_PASSES = {"own-001", "own-002", "trait-001"}


def frozen(run_id: str, passing: set[str], pass_rate: float | None = None) -> RunResults:
    """A frozen-set run; the pass rate follows from the outcomes unless given."""
    rate = len(passing) / len(FROZEN) if pass_rate is None else pass_rate
    return RunResults(
        run_id, {k: k in passing for k in FROZEN}, rate, max(0.0, rate - 0.2), min(1.0, rate + 0.2)
    )


def heldout(run_id: str, rate: float, low: float = 0.0, high: float = 1.0) -> RunResults:
    return RunResults(run_id, {"held-001": rate >= 0.5, "held-002": False}, rate, low, high)


CHAMPION = frozen("champ", CHAMPION_PASSES)
# The champion's held-out run: 50 % with a 95 % interval [30 %, 70 %].
CHAMPION_HELDOUT = heldout("champ-h", 0.5, 0.3, 0.7)


def reasons_text(verdict: GateVerdict) -> str:
    return "\n".join(verdict.reasons)


@pytest.mark.parametrize(
    ("case", "candidate", "candidate_heldout", "overrides", "promote", "expected_reasons"),
    [
        (
            "one gain, nothing lost: promote with the evidence",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            heldout("cand-h", 0.55),
            {},
            True,
            [
                "0 frozen regressions <= allowed 0 (candidate run cand vs champion run champ)",
                "held-out pass rate 55.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "not below the champion's 95 % lower bound 30.0 %",
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ): not lower",
                "1 frozen gain (trait-002), sign test p = 1; "
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ)",
            ],
        ),
        (
            "a regression alone rejects, even with more gains",
            frozen("cand", {"own-001", "trait-001", "trait-002", "life-001"}),
            heldout("cand-h", 0.5),
            {},
            False,
            ["1 frozen regression (own-002) > allowed 0 (candidate run cand vs champion run champ)"],
        ),
        (
            "a held-out drop below the champion's lower bound alone rejects",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            heldout("cand-h", 0.25),
            {},
            False,
            [
                "held-out pass rate 25.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "below the champion's 95 % lower bound 30.0 %"
            ],
        ),
        (
            "a lower frozen pass rate alone rejects (regressions allowed by the policy)",
            frozen("cand", {"own-001", "trait-002"}),
            None,
            {"max_frozen_regressions": "2"},
            False,
            ["frozen pass rate 40.0 % (run cand) vs champion 60.0 % (run champ): lower"],
        ),
        (
            "a tie is no gain: the champion stays",
            frozen("cand", CHAMPION_PASSES),
            heldout("cand-h", 0.5),
            {},
            False,
            [
                "no gain over the champion: 0 frozen gains and "
                "frozen pass rate 60.0 % (run cand) vs champion 60.0 % (run champ)"
            ],
        ),
        (
            "a tie promotes when no gain is required",
            frozen("cand", CHAMPION_PASSES),
            None,
            {"require_gain": "false"},
            True,
            [
                "0 frozen regressions <= allowed 0 (candidate run cand vs champion run champ)",
                "frozen pass rate 60.0 % (run cand) vs champion 60.0 % (run champ): not lower",
            ],
        ),
        (
            "every failed rule is listed",
            frozen("cand", {"trait-001"}),
            heldout("cand-h", 0.0),
            {},
            False,
            [
                "2 frozen regressions (own-001, own-002) > allowed 0 "
                "(candidate run cand vs champion run champ)",
                "held-out pass rate 0.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "below the champion's 95 % lower bound 30.0 %",
                "frozen pass rate 20.0 % (run cand) vs champion 60.0 % (run champ): lower",
                "no gain over the champion: 0 frozen gains and "
                "frozen pass rate 20.0 % (run cand) vs champion 60.0 % (run champ)",
            ],
        ),
        (
            "one regression allowed through the max_regressions alias",
            frozen("cand", {"own-001", "trait-001", "trait-002", "life-001"}),
            None,
            {"max_regressions": "1"},
            True,
            [
                "1 frozen regression (own-002) <= allowed 1 (candidate run cand vs champion run champ)",
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ): not lower",
                # 2 gains, 1 regression: 2·P[X <= 1], X ~ Bin(3, 1/2) = 2·4/8 = 1
                "2 frozen gains (life-001, trait-002), sign test p = 1; "
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ)",
            ],
        ),
        (
            "a held-out drop within a point tolerance",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            heldout("cand-h", 0.45),
            {"heldout_tolerance": "0.1"},
            True,
            [
                "0 frozen regressions <= allowed 0 (candidate run cand vs champion run champ)",
                "held-out pass rate 45.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "dropped 5.0 points <= allowed drop 10.0 points",
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ): not lower",
                "1 frozen gain (trait-002), sign test p = 1; "
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ)",
            ],
        ),
        (
            "a held-out drop beyond a point tolerance",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            heldout("cand-h", 0.45),
            {"heldout_tolerance": "0.02"},
            False,
            [
                "held-out pass rate 45.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "dropped 5.0 points > allowed drop 2.0 points"
            ],
        ),
        (
            "zero tolerance forbids any held-out drop",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            heldout("cand-h", 0.45),
            {"heldout_tolerance": "0.0"},
            False,
            [
                "held-out pass rate 45.0 % (run cand-h) vs champion 50.0 % (run champ-h): "
                "dropped 5.0 points > allowed drop 0.0 points"
            ],
        ),
        (
            "without held-out runs only the frozen rules apply",
            frozen("cand", CHAMPION_PASSES | {"trait-002"}),
            None,
            {},
            True,
            [
                "0 frozen regressions <= allowed 0 (candidate run cand vs champion run champ)",
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ): not lower",
                "1 frozen gain (trait-002), sign test p = 1; "
                "frozen pass rate 80.0 % (run cand) vs champion 60.0 % (run champ)",
            ],
        ),
    ],
)
def test_gate_decisions(case, candidate, candidate_heldout, overrides, promote, expected_reasons):
    champion_heldout = CHAMPION_HELDOUT if candidate_heldout is not None else None
    policy = GatePolicy.from_overrides(overrides)
    verdict = decide(candidate, CHAMPION, candidate_heldout, champion_heldout, policy)
    assert verdict.promote is promote, case
    assert list(verdict.reasons) == expected_reasons, case
    assert verdict.reason == "; ".join(expected_reasons)


def test_verdict_carries_the_numbers():
    candidate = frozen("cand", {"own-001", "trait-001", "trait-002", "life-001"})
    verdict = decide(candidate, CHAMPION, heldout("cand-h", 0.4), CHAMPION_HELDOUT)
    assert verdict.regressions == ("own-002",)
    assert verdict.gains == ("life-001", "trait-002")
    # 2 gains, 1 regression, n = 3: 2·P[X <= 1] = 2·(1 + 3)/8 = 1
    assert verdict.sign_test_p == pytest.approx(1.0)
    # 0.4 − 0.5
    assert verdict.heldout_delta == pytest.approx(-0.1)
    assert (verdict.candidate_pass_rate, verdict.champion_pass_rate) == (
        pytest.approx(0.8),
        pytest.approx(0.6),
    )


def test_heldout_delta_is_zero_without_heldout_runs():
    verdict = decide(frozen("cand", CHAMPION_PASSES | {"trait-002"}), CHAMPION, None, None)
    assert verdict.heldout_delta == 0.0


@pytest.mark.parametrize(
    ("candidate_rate", "champion_rate", "tolerance", "promote"),
    [
        # 0.8 − 0.7 is 0.10000000000000009 in floating point: still exactly the allowed 10 points
        (0.7, 0.8, "0.1", True),
        (0.4, 0.5, "0.1", True),
        (0.39, 0.5, "0.1", False),
        # exactly at the champion's lower bound (0.3) passes; below does not
        (0.3, 0.5, "interval", True),
        (0.29, 0.5, "interval", False),
    ],
)
def test_heldout_boundaries(candidate_rate, champion_rate, tolerance, promote):
    policy = GatePolicy(heldout_tolerance=tolerance)
    verdict = decide(
        frozen("cand", CHAMPION_PASSES | {"trait-002"}),
        CHAMPION,
        heldout("cand-h", candidate_rate),
        heldout("champ-h", champion_rate, 0.3, 0.7),
        policy,
    )
    assert verdict.promote is promote


def test_strictly_higher_pass_rate_counts_as_a_gain():
    # Pass rates come from the caller (e.g. a mean over repeats); a higher rate with no koan flip is a gain.
    verdict = decide(frozen("cand", CHAMPION_PASSES, pass_rate=0.65), CHAMPION, None, None)
    assert verdict.promote
    assert verdict.gains == ()


@pytest.mark.parametrize(
    ("candidate", "champion", "message"),
    [
        (
            RunResults("cand", {"own-001": True}, 1.0, 0.2, 1.0),
            RunResults("champ", {"own-001": True, "own-002": False, "trait-001": True}, 0.67, 0.2, 0.9),
            "frozen runs do not cover the same koans; missing from candidate run cand: own-002, trait-001",
        ),
        (
            RunResults("cand", {"own-001": True, "life-009": True}, 1.0, 0.3, 1.0),
            RunResults("champ", {"own-001": True}, 1.0, 0.2, 1.0),
            "missing from champion run champ: life-009",
        ),
    ],
)
def test_frozen_runs_must_cover_the_same_koans(candidate, champion, message):
    with pytest.raises(ValueError, match=message):
        decide(candidate, champion, None, None)


@pytest.mark.parametrize(
    ("candidate_heldout", "champion_heldout", "message"),
    [
        (heldout("cand-h", 0.5), None, "only candidate_heldout was given"),
        (None, CHAMPION_HELDOUT, "only champion_heldout was given"),
        (
            RunResults("cand-h", {"held-001": True}, 1.0, 0.2, 1.0),
            CHAMPION_HELDOUT,
            "held-out runs do not cover the same koans; missing from candidate run cand-h: held-002",
        ),
    ],
)
def test_heldout_runs_come_in_matching_pairs(candidate_heldout, champion_heldout, message):
    with pytest.raises(ValueError, match=message):
        decide(frozen("cand", CHAMPION_PASSES), CHAMPION, candidate_heldout, champion_heldout)


def test_run_results_reject_rates_outside_zero_to_one():
    with pytest.raises(ValueError, match="pass_rate_high of run 'r' must be within"):
        RunResults("r", {}, 0.5, 0.4, 1.2)


# -------------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, GatePolicy()),
        ({"max_frozen_regressions": "2"}, GatePolicy(max_frozen_regressions=2)),
        ({"max_regressions": " 1 "}, GatePolicy(max_frozen_regressions=1)),
        ({"heldout_tolerance": "0.05"}, GatePolicy(heldout_tolerance="0.05")),
        ({"heldout_tolerance": "0"}, GatePolicy(heldout_tolerance="0.0")),
        ({"heldout_tolerance": "interval"}, GatePolicy()),
        ({"require_gain": "false"}, GatePolicy(require_gain=False)),
        (
            {"require_pass_rate_not_lower": "No", "require_gain": "1"},
            GatePolicy(require_pass_rate_not_lower=False),
        ),
        ({"frozen_measure": " First_Attempt "}, GatePolicy(frozen_measure="first_attempt")),
    ],
)
def test_policy_overrides(overrides, expected):
    policy = GatePolicy.from_overrides(overrides)
    assert policy == expected
    assert GatePolicy.from_overrides(policy.as_dict()) == policy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_regresions": "1"}, "unknown gate policy key 'max_regresions'"),
        ({"max_frozen_regressions": "-1"}, "max_frozen_regressions must be an integer >= 0"),
        ({"max_regressions": "two"}, "max_regressions must be an integer >= 0, got 'two'"),
        ({"heldout_tolerance": "wide"}, "heldout_tolerance.*got 'wide'"),
        ({"heldout_tolerance": "2"}, r"heldout_tolerance.*\[0, 1\].*got '2'"),
        ({"heldout_tolerance": "-0.1"}, "heldout_tolerance"),
        ({"require_gain": "maybe"}, "require_gain must be true or false, got 'maybe'"),
        ({"frozen_measure": "pass@1"}, "frozen_measure must be one of pass, first_attempt, got 'pass@1'"),
    ],
)
def test_bad_policy_overrides_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        GatePolicy.from_overrides(overrides)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_frozen_regressions": -1}, "max_frozen_regressions must be >= 0"),
        ({"max_frozen_regressions": True}, "max_frozen_regressions must be an integer"),
        ({"heldout_tolerance": "1.5"}, "heldout_tolerance"),
        ({"require_gain": "yes"}, "require_gain must be a bool"),
        ({"frozen_measure": "greedy"}, "frozen_measure must be one of pass, first_attempt"),
    ],
)
def test_policy_validates_direct_construction(fields, message):
    with pytest.raises(ValueError, match=message):
        GatePolicy(**fields)


def test_policy_as_dict_is_all_strings():
    assert GatePolicy().as_dict() == {
        "max_frozen_regressions": "0",
        "heldout_tolerance": "interval",
        "require_pass_rate_not_lower": "true",
        "require_gain": "true",
        "frozen_measure": "pass",
    }


def test_first_attempt_measure_counts_only_what_greedy_decoding_changed():
    """A koan the champion passed only at a sampled retry is no regression at the first attempt."""
    koans = ("a", "b", "c", "d")

    def run(run_id, passed, first):
        rate = len(passed) / len(koans)
        return RunResults(
            run_id,
            {k: k in passed for k in koans},
            rate,
            max(0.0, rate - 0.2),
            min(1.0, rate + 0.2),
            first_attempt={k: k in first for k in koans},
        )

    # champion: a at attempt 1, b at a retry; candidate: c and d at attempt 1, b lost
    champion = run("champ", {"a", "b"}, {"a"})
    candidate = run("cand", {"a", "c", "d"}, {"a", "c", "d"})
    by_pass = decide(candidate, champion, None, None)
    assert not by_pass.promote and by_pass.regressions == ("b",)
    greedy = decide(candidate, champion, None, None, GatePolicy(frozen_measure="first_attempt"))
    assert greedy.promote, greedy.reasons
    assert greedy.regressions == () and greedy.gains == ("c", "d")
    assert greedy.reasons[0] == (
        "0 frozen regressions at the first attempt <= allowed 0 (candidate run cand vs champion run champ)"
    )
    # losing a first-attempt pass is a regression on that measure, whatever the retries did
    slipped = run("cand2", {"a", "b", "c"}, {"b", "c"})
    verdict = decide(slipped, champion, None, None, GatePolicy(frozen_measure="first_attempt"))
    assert not verdict.promote and verdict.regressions == ("a",)
    assert "1 frozen regression at the first attempt (a) > allowed 0" in verdict.reasons[0]
    with pytest.raises(ValueError, match="run champ-only has no first-attempt outcomes"):
        decide(
            candidate,
            RunResults("champ-only", {k: False for k in koans}, 0.0, 0.0, 0.2),
            None,
            None,
            GatePolicy(frozen_measure="first_attempt"),
        )
