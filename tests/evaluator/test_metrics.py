"""Evaluation metrics against expectations worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
from nightshift_evaluator import metrics
from nightshift_evaluator.metrics import Comparison, FamilyRate, KoanOutcome

# z² of the 95 % interval, used in the hand arithmetic below: 1.959964² = 3.841459.
APPROX = {"abs": 1e-5}


def run(
    koan_id: str,
    passed: bool,
    attempts: int = 1,
    codes: tuple[str, ...] = (),
    repeat: int = 0,
    family: str = "ownership",
) -> KoanOutcome:
    return KoanOutcome(
        koan_id=koan_id,
        family=family,
        repeat=repeat,
        passed=passed,
        attempts=attempts,
        passed_first_attempt=passed and attempts == 1,
        error_codes=codes,
    )


# Four koans, one repeat: A at attempt 1, B at attempt 2, C fails after 3 attempts, D fails after 3.
ONE_REPEAT = [
    run("a", True, 1),
    run("b", True, 2, ("E0382",)),
    run("c", False, 3, ("E0382", "E0382", "E0308"), family="traits"),
    run("d", False, 3, ("TEST_FAILED",) * 3, family="traits"),
]

# Three koans x three repeats that disagree:
#   repeat 0: a ✓@1  b ✓@1  c ✗   → 2/3
#   repeat 1: a ✓@2  b ✗    c ✗   → 1/3
#   repeat 2: a ✓@1  b ✓@3  c ✗   → 2/3
THREE_REPEATS = [
    run("a", True, 1, repeat=0),
    run("b", True, 1, repeat=0),
    run("c", False, 2, ("E0599", "E0599"), repeat=0, family="traits"),
    run("a", True, 2, ("E0308",), repeat=1),
    run("b", False, 2, ("E0308", "E0382"), repeat=1),
    run("c", False, 2, ("E0599", "E0599"), repeat=1, family="traits"),
    run("a", True, 1, repeat=2),
    run("b", True, 3, ("E0382", "E0382"), repeat=2),
    run("c", False, 2, ("E0599", "E0308"), repeat=2, family="traits"),
]


# ------------------------------------------------------------------------------------------ outcome


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attempts": 0}, "attempts of koan 'k' must be >= 1"),
        ({"repeat": -1}, "repeat of koan 'k' must be >= 0"),
        ({"passed": False, "passed_first_attempt": True}, "passed_first_attempt of koan 'k'"),
        ({"attempts": 2, "passed_first_attempt": True}, "needs passed=True and attempts=1"),
    ],
)
def test_koan_outcome_rejects_inconsistent_fields(fields, message):
    values = {"koan_id": "k", "family": "f", "repeat": 0, "passed": True, "attempts": 1}
    values.update({"passed_first_attempt": False, **fields})
    with pytest.raises(ValueError, match=message):
        KoanOutcome(**values)


# ---------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("successes", "n", "z", "expected"),
    [
        # n = 0 carries no information: the whole range.
        (0, 0, metrics.Z_95, (0.0, 1.0)),
        # z = 1, 1/4: centre (0.25 + 1/8) / (1 + 1/4) = 0.3;
        #   half sqrt(0.1875/4 + 1/64) / 1.25 = 0.25 / 1.25 = 0.2
        (1, 4, 1.0, (0.1, 0.5)),
        # 5/10: centre 0.5;
        #   half 1.959964·sqrt(0.025 + 3.841459/400) / 1.3841459 = 0.364587 / 1.384146 = 0.263407
        (5, 10, metrics.Z_95, (0.236593, 0.763407)),
        # 0/10: low 0, high z² / (n + z²) = 3.841459 / 13.841459 = 0.277533
        (0, 10, metrics.Z_95, (0.0, 0.277533)),
        # 10/10: low n / (n + z²) = 10 / 13.841459 = 0.722467, high 1
        (10, 10, metrics.Z_95, (0.722467, 1.0)),
        # 23/30 (the seed's base model): z²/n = 0.128049, centre (0.766667 + 0.064024) / 1.128049 = 0.736398;
        # half 1.959964·sqrt(0.766667·0.233333/30 + 3.841459/3600) / 1.128049
        #    = 1.959964·sqrt(0.005963 + 0.001067) / 1.128049 = 0.145680
        (23, 30, metrics.Z_95, (0.590717, 0.882076)),
        # 1/4: centre (0.25 + 0.480182) / 1.960365 = 0.372472;
        #   half 1.959964·sqrt(0.046875 + 0.060023) / 1.960365 = 0.326886
        (1, 4, metrics.Z_95, (0.045586, 0.699358)),
    ],
)
def test_wilson_interval(successes, n, z, expected):
    assert metrics.wilson_interval(successes, n, z) == pytest.approx(expected, **APPROX)


@pytest.mark.parametrize(
    ("successes", "n", "message"), [(-1, 10, "successes"), (11, 10, "successes"), (0, -1, "n")]
)
def test_wilson_interval_rejects_impossible_counts(successes, n, message):
    with pytest.raises(ValueError, match=message):
        metrics.wilson_interval(successes, n)


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        # df = 1 is Cauchy: t = tan(0.95·π/2) = 12.706205
        (1, 12.706205),
        # df = 2: P(|T| <= t) = t / sqrt(2 + t²) = 0.95 → t² = 2·0.9025 / 0.0975 = 18.512821, t = 4.302653
        (2, 4.302653),
        # the rest from any t table (two-sided 95 %)
        (4, 2.776445),
        (10, 2.228139),
        (30, 2.042272),
        (1000, 1.962339),
    ],
)
def test_student_t_critical_matches_the_t_table(df, expected):
    assert metrics.student_t_critical(df) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("df", "confidence", "message"), [(0, 0.95, "df"), (3, 1.0, "confidence")])
def test_student_t_critical_rejects_bad_arguments(df, confidence, message):
    with pytest.raises(ValueError, match=message):
        metrics.student_t_critical(df, confidence)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # one value: no spread to estimate
        ([0.4], (0.4, 0.4, 0.4)),
        # no spread: s = 0
        ([1.0, 1.0], (1.0, 1.0, 1.0)),
        # mean 0.6, s = sqrt((0.01 + 0.01 + 0) / 2) = 0.1, se = 0.1 / sqrt(3) = 0.057735, t(2) = 4.302653
        # half = 0.248414
        ([0.5, 0.7, 0.6], (0.6, 0.351586, 0.848414)),
        # mean 0.5, s = sqrt(0.5) = 0.707107, se = 0.5, t(1) = 12.706205, half 6.353102 — not clamped
        ([0.0, 1.0], (0.5, -5.853102, 6.853102)),
    ],
)
def test_mean_interval(values, expected):
    assert metrics.mean_interval(values) == pytest.approx(expected, **APPROX)


def test_mean_interval_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="values"):
        metrics.mean_interval([])


# -------------------------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    ("outcomes", "pass_rate", "pass_at_1", "pass_at_2", "pass_at_3"),
    [
        ([], 0.0, 0.0, 0.0, 0.0),
        # all fail
        ([run("a", False, 3), run("b", False, 1)], 0.0, 0.0, 0.0, 0.0),
        # a@1, b@2 pass, c and d fail: 2/4; pass@1 1/4; pass@2 2/4; pass@3 2/4
        (ONE_REPEAT, 0.5, 0.25, 0.5, 0.5),
        # every repeat counts once: a@1 ✓, a ✗, b@3 ✓ → 2/3; pass@1 1/3; pass@2 1/3; pass@3 2/3
        ([run("a", True), run("a", False, 3, repeat=1), run("b", True, 3)], 2 / 3, 1 / 3, 1 / 3, 2 / 3),
    ],
)
def test_pass_rates(outcomes, pass_rate, pass_at_1, pass_at_2, pass_at_3):
    assert metrics.pass_rate(outcomes) == pytest.approx(pass_rate)
    assert metrics.pass_at_1(outcomes) == pytest.approx(pass_at_1)
    assert metrics.pass_at_k(outcomes, 1) == pytest.approx(pass_at_1)
    assert metrics.pass_at_k(outcomes, 2) == pytest.approx(pass_at_2)
    assert metrics.pass_at_k(outcomes, 3) == pytest.approx(pass_at_3)


def test_pass_at_k_needs_k_of_at_least_one():
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.pass_at_k(ONE_REPEAT, 0)


@pytest.mark.parametrize(
    ("outcomes", "median", "mean"),
    [
        ([], None, None),
        ([run("a", False, 3)], None, None),
        # passed attempts 1, 2 (the failures' attempts do not count): median 1.5, mean 1.5
        (ONE_REPEAT, 1.5, 1.5),
        # passed attempts 1, 1, 3: median 1, mean 5/3
        ([run("a", True, 1), run("b", True, 1), run("c", True, 3), run("d", False, 3)], 1.0, 5 / 3),
        # passed attempts 1, 2, 3: median 2, mean 2
        ([run("a", True, 1), run("b", True, 2), run("c", True, 3)], 2.0, 2.0),
    ],
)
def test_attempts_to_pass(outcomes, median, mean):
    assert metrics.median_attempts_to_pass(outcomes) == (pytest.approx(median) if median else None)
    assert metrics.mean_attempts_to_pass(outcomes) == (pytest.approx(mean) if mean else None)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], 0.0),
        # no failed attempts at all → no pairs
        ([run("a", True)], 0.0),
        # one failed attempt per run → no pairs
        ([run("a", True, 2, ("E0382",)), run("b", False, 1, ("E0308",))], 0.0),
        # (E0382, E0382) same, (E0382, E0505) different → 1/2
        ([run("a", False, 3, ("E0382", "E0382", "E0505"))], 0.5),
        # plus (TEST_FAILED, TEST_FAILED) in another run → 2/3; pairs never span two runs
        (
            [
                run("a", False, 3, ("E0382", "E0382", "E0505")),
                run("b", True, 3, ("TEST_FAILED", "TEST_FAILED")),
            ],
            2 / 3,
        ),
        # ONE_REPEAT: c gives (E0382,E0382) same, (E0382,E0308) different; d two same pairs → 3/4
        (ONE_REPEAT, 0.75),
    ],
)
def test_repeat_error_rate(outcomes, expected):
    assert metrics.repeat_error_rate(outcomes) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], []),
        ([run("a", True)], []),
        # E0382 ×2, E0505 ×2, E0277 ×1: ties broken by code
        (
            [
                run("a", False, 3, ("E0505", "E0382", "E0382")),
                run("b", True, 2, ("E0277",)),
                run("c", True, 2, ("E0505",)),
            ],
            [("E0382", 2), ("E0505", 2), ("E0277", 1)],
        ),
        # ONE_REPEAT: E0382 1 + 2 = 3, TEST_FAILED 3, E0308 1
        (ONE_REPEAT, [("E0382", 3), ("TEST_FAILED", 3), ("E0308", 1)]),
    ],
)
def test_error_histogram_is_ordered_by_count_then_code(outcomes, expected):
    assert list(metrics.error_histogram(outcomes).items()) == expected


# ------------------------------------------------------------------------------------------ majority


@pytest.mark.parametrize(
    ("passes", "expected"),
    [
        ([True], True),
        ([False], False),
        ([True, True], True),
        ([True, False], False),  # 1 of 2 is a tie, not a majority
        ([True, False, True], True),  # 2 of 3
        ([False, True, False], False),  # 1 of 3
        ([True, False, True, False], False),  # 2 of 4, tie
        ([True, True, True, False], True),  # 3 of 4
    ],
)
def test_majority_over_repeats(passes, expected):
    outcomes = [run("k", passed, 1 if passed else 3, repeat=r) for r, passed in enumerate(passes)]
    assert metrics.majority_outcomes(outcomes) == {"k": expected}


def test_majority_outcomes_are_sorted_by_koan_id_and_empty_for_no_input():
    assert list(metrics.majority_outcomes([run("b", True), run("a", False)])) == ["a", "b"]
    assert metrics.majority_outcomes([]) == {}


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ([run("a", True), run("a", False)], "koan 'a' has two outcomes for repeat 0"),
        ([run("a", True), run("a", True, repeat=1, family="traits")], "koan 'a' appears with two families"),
    ],
)
def test_majority_outcomes_reject_inconsistent_input(outcomes, message):
    with pytest.raises(ValueError, match=message):
        metrics.majority_outcomes(outcomes)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], {}),
        # ownership: a, b pass; traits: c, d fail
        (ONE_REPEAT, {"ownership": FamilyRate(2, 2, 1.0), "traits": FamilyRate(0, 2, 0.0)}),
        # ownership: a 3/3 ✓, b 2/3 ✓; traits: c 0/3 ✗ — koans are counted once, not per repeat
        (THREE_REPEATS, {"ownership": FamilyRate(2, 2, 1.0), "traits": FamilyRate(0, 1, 0.0)}),
        # ownership: a 1/2 (tie → ✗), b ✓ → 1/2
        (
            [run("a", True), run("a", False, 3, repeat=1), run("b", True), run("b", True, repeat=1)],
            {"ownership": FamilyRate(1, 2, 0.5)},
        ),
    ],
)
def test_family_rates_count_koans_by_majority(outcomes, expected):
    rates = metrics.family_rates(outcomes)
    assert rates == expected
    assert list(rates) == sorted(expected)


# ------------------------------------------------------------------------------------------ summary


def test_summary_of_nothing():
    summary = metrics.summarise([])
    assert (summary.total, summary.evaluated, summary.expected, summary.passed, summary.repeats) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert (summary.pass_rate, summary.pass_rate_mean, summary.pass_at_1) == (0.0, 0.0, 0.0)
    assert (summary.pass_rate_low, summary.pass_rate_high) == (0.0, 1.0)
    assert (summary.pass_at_1_low, summary.pass_at_1_high) == (0.0, 1.0)
    assert (summary.median_attempts, summary.mean_attempts) == (None, None)
    assert (summary.repeat_error_rate, summary.error_codes, summary.families) == (0.0, {}, {})
    assert summary.finished


def test_summary_of_one_repeat_uses_wilson_on_the_koan_count():
    summary = metrics.summarise(ONE_REPEAT, expected=6)
    assert (summary.total, summary.evaluated, summary.expected, summary.passed, summary.repeats) == (
        4,
        4,
        6,
        2,
        1,
    )
    assert not summary.finished
    assert summary.pass_rate == pytest.approx(0.5)
    assert summary.pass_rate_mean == pytest.approx(0.5)
    # Wilson 2/4: z²/n = 0.960365, centre 0.5, half 1.959964·sqrt(0.0625 + 0.060023) / 1.960365 = 0.349961
    assert (summary.pass_rate_low, summary.pass_rate_high) == pytest.approx((0.150039, 0.849961), **APPROX)
    assert summary.pass_at_1 == pytest.approx(0.25)
    # Wilson 1/4 (see test_wilson_interval)
    assert (summary.pass_at_1_low, summary.pass_at_1_high) == pytest.approx((0.045586, 0.699358), **APPROX)
    assert (summary.median_attempts, summary.mean_attempts) == (1.5, 1.5)
    assert summary.repeat_error_rate == pytest.approx(0.75)
    assert list(summary.error_codes.items()) == [("E0382", 3), ("TEST_FAILED", 3), ("E0308", 1)]
    assert summary.families == {"ownership": FamilyRate(2, 2, 1.0), "traits": FamilyRate(0, 2, 0.0)}


def test_summary_over_repeats_uses_majority_and_a_t_interval_of_the_repeat_rates():
    summary = metrics.summarise(THREE_REPEATS)
    assert (summary.total, summary.evaluated, summary.expected, summary.repeats) == (3, 9, 9, 3)
    # majority: a 3/3 ✓, b 2/3 ✓, c 0/3 ✗ → 2 of 3
    assert summary.passed == 2
    assert summary.pass_rate == pytest.approx(2 / 3)
    # per-repeat rates 2/3, 1/3, 2/3: mean 5/9; s² = (1/81 + 4/81 + 1/81) / 2 = 1/27,
    # se = sqrt(1/27 / 3) = 1/9;
    # half = t(2) / 9 = 4.302653 / 9 = 0.478073 → [0.077483, 1.033628], high clamped to 1
    assert summary.pass_rate_mean == pytest.approx(5 / 9)
    assert (summary.pass_rate_low, summary.pass_rate_high) == pytest.approx((0.077483, 1.0), **APPROX)
    # pass@1 majority: a first-attempt 2/3 ✓, b 1/3 ✗, c ✗ → 1/3.
    # per-repeat pass@1 2/3, 0, 1/3: mean 1/3, s = 1/3, se = 0.192450, half = 0.828045 → clamped [0, 1]
    assert summary.pass_at_1 == pytest.approx(1 / 3)
    assert (summary.pass_at_1_low, summary.pass_at_1_high) == (0.0, 1.0)
    # passed runs took 1, 1, 2, 1, 3 attempts: median 1, mean 8/5
    assert (summary.median_attempts, summary.mean_attempts) == (1.0, pytest.approx(1.6))
    # pairs: c0 (E0599,E0599) same; b1 (E0308,E0382) no; c1 same; b2 (E0382,E0382) same;
    # c2 (E0599,E0308) no → 3/5
    assert summary.repeat_error_rate == pytest.approx(0.6)
    assert list(summary.error_codes.items()) == [("E0599", 5), ("E0308", 3), ("E0382", 3)]
    assert summary.families == {"ownership": FamilyRate(2, 2, 1.0), "traits": FamilyRate(0, 1, 0.0)}


def test_summary_of_two_disagreeing_repeats_is_a_tie_that_fails():
    # a: ✓ then ✗ → 1 of 2 is no majority; per-repeat rates 1, 0: mean 0.5, half 12.706·0.5 → clamped [0, 1]
    summary = metrics.summarise([run("a", True), run("a", False, 2, ("E0382", "E0382"), repeat=1)])
    assert (summary.total, summary.passed, summary.pass_rate, summary.repeats) == (1, 0, 0.0, 2)
    assert summary.pass_rate_mean == pytest.approx(0.5)
    assert (summary.pass_rate_low, summary.pass_rate_high) == (0.0, 1.0)
    assert summary.families == {"ownership": FamilyRate(0, 1, 0.0)}


def test_summary_when_everything_fails():
    outcomes = [run("a", False, 2, ("E0382", "E0499")), run("b", False, 2, ("E0382", "E0382"))]
    summary = metrics.summarise(outcomes)
    assert (summary.passed, summary.pass_rate, summary.pass_at_1) == (0, 0.0, 0.0)
    # Wilson 0/2: high = z² / (2 + z²) = 3.841459 / 5.841459 = 0.657620
    assert (summary.pass_rate_low, summary.pass_rate_high) == pytest.approx((0.0, 0.657620), **APPROX)
    assert (summary.median_attempts, summary.mean_attempts) == (None, None)
    assert summary.repeat_error_rate == pytest.approx(0.5)


# --------------------------------------------------------------------------------------- comparison


def outcomes_of(passing: str, failing: str) -> dict[str, bool]:
    return {**{k: True for k in passing.split()}, **{k: False for k in failing.split()}}


@pytest.mark.parametrize(
    ("before", "after", "regressions", "gains", "sign_test_p", "p_improvement"),
    [
        # nothing discordant: n = 0 → 1.0 both
        ({}, {}, (), (), 1.0, 1.0),
        (outcomes_of("a", "b"), outcomes_of("a", "b"), (), (), 1.0, 1.0),
        # 5 gains, 0 regressions: one-sided P[X >= 5] = 1/32 = 0.03125; two-sided 2·P[X <= 0] = 2/32 = 0.0625
        (outcomes_of("", "a b c d e"), outcomes_of("a b c d e", ""), (), tuple("abcde"), 0.0625, 0.03125),
        # 0 gains, 5 regressions: two-sided the same 0.0625; one-sided P[X >= 0] = 1
        (outcomes_of("a b c d e", ""), outcomes_of("", "a b c d e"), tuple("abcde"), (), 0.0625, 1.0),
        # 1 gain, 1 regression: 2·P[X <= 1] = 2·3/4 → capped at 1; P[X >= 1] = 3/4
        (outcomes_of("a", "b"), outcomes_of("b", "a"), ("a",), ("b",), 1.0, 0.75),
        # 3 gains, 1 regression, n = 4: 2·P[X <= 1] = 2·(1 + 4)/16 = 0.625; P[X >= 3] = (4 + 1)/16 = 0.3125
        (outcomes_of("a", "b c d"), outcomes_of("b c d", "a"), ("a",), ("b", "c", "d"), 0.625, 0.3125),
        # 10 gains: 2/1024 and 1/1024
        (
            outcomes_of("", "k0 k1 k2 k3 k4 k5 k6 k7 k8 k9"),
            outcomes_of("k0 k1 k2 k3 k4 k5 k6 k7 k8 k9", ""),
            (),
            tuple(f"k{i}" for i in range(10)),
            2 / 1024,
            1 / 1024,
        ),
    ],
)
def test_compare_counts_and_sign_test(before, after, regressions, gains, sign_test_p, p_improvement):
    comparison = metrics.compare(before, after)
    assert comparison.regressions == regressions
    assert comparison.gains == gains
    assert comparison.sign_test_p == pytest.approx(sign_test_p)
    assert comparison.p_improvement == pytest.approx(p_improvement)


def test_compare_lists_every_koan_once_and_ignores_unpaired_koans():
    before = {"c": True, "a": True, "b": False, "d": True, "e": False, "x": True}
    after = {"a": False, "c": False, "b": True, "d": True, "e": False, "y": False}
    assert metrics.compare(before, after) == Comparison(
        regressions=("a", "c"),
        gains=("b",),
        unchanged_pass=("d",),
        unchanged_fail=("e",),
        only_before=("x",),
        only_after=("y",),
        # n = 3 discordant, min = 1: 2·P[X <= 1] = 2·4/8 = 1; P[X >= 1] = 7/8
        sign_test_p=1.0,
        p_improvement=0.875,
    )
    comparison = metrics.compare(before, after)
    assert (comparison.paired, comparison.discordant) == (5, 3)


# --------------------------------------------------------------------------------------- forgetting


@pytest.mark.parametrize(
    ("R", "acc", "bwt", "bwt_vs_base", "per_family"),
    [
        # one row: nothing to forget yet
        ([[0.5, 1.0]], 0.75, None, 0.0, (0.0, 0.0)),
        ([[0.4]], 0.4, None, 0.0, (0.0,)),
        # square 3x3, row j = right after learning family j (T = 2):
        #   acc = (0.5 + 0.7 + 0.9)/3 = 0.7
        #   bwt = ((0.5 − 0.8) + (0.7 − 0.9)) / 2 = −0.25
        #   vs base = ((0.5 − 0.8) + (0.7 − 0.1) + (0.9 − 0.2)) / 3 = 1/3
        #   forgetting = (max(0.8, 0.6) − 0.5, max(0.1, 0.9) − 0.7, max(0.2, 0.3) − 0.9) = (0.3, 0.2, −0.6)
        ([[0.8, 0.1, 0.2], [0.6, 0.9, 0.3], [0.5, 0.7, 0.9]], 0.7, -0.25, 1 / 3, (0.3, 0.2, -0.6)),
        # cycles x families (3 x 2, not square): acc 0.75; vs base (0.1 + 0.7)/2 = 0.4;
        #   forgetting (0.8 − 0.6, 0.3 − 0.9) = (0.2, −0.6)
        ([[0.5, 0.2], [0.8, 0.3], [0.6, 0.9]], 0.75, None, 0.4, (0.2, -0.6)),
        # base + one cycle that forgot everything: acc 0.25; vs base ((0.25−1) + (0.25−0.5))/2 = −0.5;
        #   2x2 is square: bwt = R[1][0] − R[0][0] = −0.75
        ([[1.0, 0.5], [0.25, 0.25]], 0.25, -0.75, -0.5, (0.75, 0.25)),
    ],
)
def test_forgetting_matrix(R, acc, bwt, bwt_vs_base, per_family):
    result = metrics.forgetting_matrix(R)
    assert result.acc == pytest.approx(acc)
    assert result.bwt == (None if bwt is None else pytest.approx(bwt))
    assert result.bwt_vs_base == pytest.approx(bwt_vs_base)
    assert result.per_family_forgetting == pytest.approx(per_family)
    assert result.forgetting == pytest.approx(sum(per_family) / len(per_family))
    assert not math.isnan(result.forgetting)


@pytest.mark.parametrize(
    ("R", "message"),
    [([], "at least one row"), ([[]], "at least one row"), ([[0.1, 0.2], [0.3]], "row 1 has 1 columns")],
)
def test_forgetting_matrix_rejects_ragged_or_empty_input(R, message):
    with pytest.raises(ValueError, match=message):
        metrics.forgetting_matrix(R)
