"""Evaluation metrics as pure functions of koan outcomes (DESIGN.md, "Metrics").

Everything here works on plain data: `KoanOutcome` rows built from `KoanEvaluated` events, and
per-koan pass/fail mappings. No I/O, no protobuf; the server turns the dataclasses into messages.

Conventions used throughout:
- A koan run may be repeated with different seeds (`repeat` 0, 1, ...). Over repeats a koan's outcome
  is the strict majority of its runs: it passes when it passed in more than half of them, so a tie
  (1 of 2, 2 of 4) counts as a failure.
- Rates over an empty input are 0.0; statistics that need at least one passing run (attempts to
  pass) are None when nothing passed, so that "no data" is never mistaken for a number.
- Intervals are 95 % two-sided: Wilson for one run's pass rate, Student t over per-repeat pass
  rates when there are several repeats.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

# Standard normal 97.5 % quantile: the z of a two-sided 95 % interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class KoanOutcome:
    """One koan run of an evaluation: one koan, one repeat (seed = run seed + repeat)."""

    koan_id: str
    family: str
    repeat: int  # 0-based repeat index (seed = run seed + repeat)
    passed: bool
    attempts: int  # attempts used (>= 1)
    passed_first_attempt: bool
    # first error code of each FAILED attempt, in order (e.g. "E0382", "TEST_FAILED")
    error_codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts of koan {self.koan_id!r} must be >= 1, got {self.attempts}")
        if self.repeat < 0:
            raise ValueError(f"repeat of koan {self.koan_id!r} must be >= 0, got {self.repeat}")
        if self.passed_first_attempt and not (self.passed and self.attempts == 1):
            raise ValueError(
                f"passed_first_attempt of koan {self.koan_id!r} needs passed=True and attempts=1, "
                f"got passed={self.passed} attempts={self.attempts}"
            )


@dataclass(frozen=True)
class FamilyRate:
    """Koan-level (majority over repeats) pass count of one family."""

    passed: int
    total: int
    pass_rate: float


@dataclass(frozen=True)
class Summary:
    """Every number of one evaluation run; see `summarise` for the definition of each field."""

    total: int  # distinct koans
    evaluated: int  # koan runs (outcomes) so far
    expected: int  # koan runs the evaluation will make (= evaluated when not given)
    passed: int  # koans passing by majority over repeats
    pass_rate: float  # passed / total
    pass_rate_low: float
    pass_rate_high: float
    pass_rate_mean: float  # mean of the per-repeat pass rates
    pass_at_1: float  # koans passing at the first attempt by majority / total
    pass_at_1_low: float
    pass_at_1_high: float
    median_attempts: float | None  # over passed koan runs; None when none passed
    mean_attempts: float | None
    repeat_error_rate: float
    error_codes: dict[str, int] = field(default_factory=dict)
    families: dict[str, FamilyRate] = field(default_factory=dict)
    repeats: int = 0  # max repeat index + 1

    @property
    def finished(self) -> bool:
        """True once every expected koan run has been evaluated."""
        return self.evaluated >= self.expected


@dataclass(frozen=True)
class Comparison:
    """Koan-by-koan (paired) comparison of two runs: `before` (reference) and `after`."""

    regressions: tuple[str, ...]  # passed before, fail now
    gains: tuple[str, ...]  # failed before, pass now
    unchanged_pass: tuple[str, ...]
    unchanged_fail: tuple[str, ...]
    only_before: tuple[str, ...]  # in one run only: ignored by every count and test
    only_after: tuple[str, ...]
    sign_test_p: float  # exact two-sided sign test on the discordant koans
    p_improvement: (
        float  # exact one-sided: P[gains >= observed] when gains and regressions are equally likely
    )

    @property
    def discordant(self) -> int:
        """Koans whose outcome changed between the two runs."""
        return len(self.regressions) + len(self.gains)

    @property
    def paired(self) -> int:
        """Koans present in both runs."""
        return self.discordant + len(self.unchanged_pass) + len(self.unchanged_fail)


@dataclass(frozen=True)
class Forgetting:
    """Continual-learning summary of a cycles x families pass-rate matrix (see `forgetting_matrix`)."""

    acc: float
    bwt: float | None  # only for a square matrix; None otherwise
    bwt_vs_base: float
    forgetting: float
    per_family_forgetting: tuple[float, ...]


# ---------------------------------------------------------------------------------------- intervals


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion successes / n.

    low, high = (p + z²/2n ∓ z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n), with p = successes / n.
    n == 0 carries no information, so the interval is the whole range (0.0, 1.0).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be within 0..n={n}, got {successes}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def _student_t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer number of degrees of freedom.

    Exact finite series (Abramowitz & Stegun 26.7.3-4) with θ = atan(t / sqrt(df)):
    odd df: 2/π·(θ + sinθ·(cosθ + 2/3·cos³θ + ... )), even df: sinθ·(1 + 1/2·cos²θ + 1·3/(2·4)·cos⁴θ + ...).
    """
    theta = math.atan(t / math.sqrt(df))
    sin_t, cos_t = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total = 0.0
        if df > 1:
            term = cos_t
            total = term
            for k in range(3, df - 1, 2):
                term *= (k - 1) / k * cos_t * cos_t
                total += term
        return 2.0 / math.pi * (theta + sin_t * total)
    term = 1.0
    total = 1.0
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * cos_t * cos_t
        total += term
    return sin_t * total


def student_t_critical(df: int, confidence: float = 0.95) -> float:
    """The t such that P(|T| <= t) = confidence, for Student's t with df >= 1 degrees of freedom.

    Found by bisection on the exact distribution function; e.g. df=1 → 12.706, df=2 → 4.303,
    df=30 → 2.042, and it tends to 1.960 as df grows.
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while _student_t_central_probability(high, df) < confidence:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if _student_t_central_probability(middle, df) < confidence:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return (low + high) / 2.0


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` with its Student t interval, mean ± t(n−1)·s/sqrt(n).

    s is the sample standard deviation (n − 1 in the denominator). One value has no spread to
    estimate, so it returns (v, v, v). The bounds are not clamped: callers clamp rates to [0, 1].
    """
    if not values:
        raise ValueError("values must not be empty")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return (mean, mean, mean)
    half = student_t_critical(len(values) - 1, confidence) * statistics.stdev(values) / math.sqrt(len(values))
    return (mean, mean - half, mean + half)


# ---------------------------------------------------------------------------------- rates of runs


def pass_rate(outcomes: Sequence[KoanOutcome]) -> float:
    """Passed koan runs / koan runs (every repeat counts once; 0.0 when empty)."""
    return _fraction(sum(o.passed for o in outcomes), len(outcomes))


def pass_at_1(outcomes: Sequence[KoanOutcome]) -> float:
    """Koan runs passed at the first attempt / koan runs (0.0 when empty)."""
    return _fraction(sum(o.passed_first_attempt for o in outcomes), len(outcomes))


def pass_at_k(outcomes: Sequence[KoanOutcome], k: int) -> float:
    """Koan runs passed within k attempts / koan runs (0.0 when empty)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _fraction(sum(o.passed and o.attempts <= k for o in outcomes), len(outcomes))


def median_attempts_to_pass(outcomes: Sequence[KoanOutcome]) -> float | None:
    """Median attempts over the passed koan runs; None when none passed."""
    attempts = [o.attempts for o in outcomes if o.passed]
    return float(statistics.median(attempts)) if attempts else None


def mean_attempts_to_pass(outcomes: Sequence[KoanOutcome]) -> float | None:
    """Mean attempts over the passed koan runs; None when none passed."""
    attempts = [o.attempts for o in outcomes if o.passed]
    return statistics.fmean(attempts) if attempts else None


def repeat_error_rate(outcomes: Sequence[KoanOutcome]) -> float:
    """Share of consecutive failed-attempt pairs whose first error codes are identical.

    Within a koan run the failed attempts are consecutive (a pass ends the run), so a run with
    codes (a, b, c) has the pairs (a, b) and (b, c). 0.0 when there is no pair at all.
    """
    pairs = 0
    repeated = 0
    for outcome in outcomes:
        codes = outcome.error_codes
        for previous, current in zip(codes, codes[1:], strict=False):
            pairs += 1
            repeated += previous == current
    return _fraction(repeated, pairs)


def error_histogram(outcomes: Sequence[KoanOutcome]) -> dict[str, int]:
    """Count of each first error code over every failed attempt, by count descending then code."""
    counts = Counter(code for outcome in outcomes for code in outcome.error_codes)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# ------------------------------------------------------------------------------ majority over seeds


def majority_outcomes(outcomes: Sequence[KoanOutcome]) -> dict[str, bool]:
    """Koan id → passed, by strict majority over the koan's repeats (sorted by koan id).

    A koan passes when it passed in more than half of its evaluated runs: 2 of 3 passes,
    1 of 2 fails (a tie is not a majority). Duplicate (koan, repeat) runs are an error.
    """
    return _majority(outcomes, lambda o: o.passed)


def majority_first_attempts(outcomes: Sequence[KoanOutcome]) -> dict[str, bool]:
    """Koan id → passed at the first attempt, by strict majority over the koan's repeats."""
    return _majority(outcomes, lambda o: o.passed_first_attempt)


def family_rates(outcomes: Sequence[KoanOutcome]) -> dict[str, FamilyRate]:
    """Family → koan-level rate (sorted by family): total distinct koans, passed by majority over repeats."""
    families = _koan_families(outcomes)
    majority = majority_outcomes(outcomes)
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for koan_id, koan_passed in majority.items():
        total[families[koan_id]] += 1
        passed[families[koan_id]] += koan_passed
    return {
        family: FamilyRate(
            passed=passed[family], total=total[family], pass_rate=passed[family] / total[family]
        )
        for family in sorted(total)
    }


def summarise(outcomes: Sequence[KoanOutcome], expected: int | None = None) -> Summary:
    """Every number of one evaluation run.

    - total: distinct koans; evaluated: koan runs; expected: as given, else evaluated.
    - passed / pass_rate: koans passing by majority over repeats, / total.
    - pass_at_1: koans that passed at the first attempt in a majority of their repeats, / total.
    - pass_rate_mean: mean of the per-repeat pass rates (equals the run-level rate with one repeat).
    - intervals: with a single repeat, Wilson on the majority counts; with several repeats, the
      Student t interval of the per-repeat rates (`mean_interval`), clamped to [0, 1]. With several
      repeats the majority rate can lie outside that interval: the interval is about the mean.
    - median/mean_attempts, repeat_error_rate and error_codes use every koan run.
    - repeats: highest repeat index + 1 (0 when empty).
    """
    majority = majority_outcomes(outcomes)
    first_attempt = _majority(outcomes, lambda o: o.passed_first_attempt)
    total = len(majority)
    passed = sum(majority.values())
    passed_first = sum(first_attempt.values())
    by_repeat: dict[int, list[KoanOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_repeat[outcome.repeat].append(outcome)
    repeat_rates = [pass_rate(by_repeat[r]) for r in sorted(by_repeat)]
    repeat_first_rates = [pass_at_1(by_repeat[r]) for r in sorted(by_repeat)]
    if len(by_repeat) > 1:
        mean, low, high = mean_interval(repeat_rates)
        _, first_low, first_high = mean_interval(repeat_first_rates)
        low, high, first_low, first_high = (_clamp01(v) for v in (low, high, first_low, first_high))
    else:
        mean = repeat_rates[0] if repeat_rates else 0.0
        low, high = wilson_interval(passed, total)
        first_low, first_high = wilson_interval(passed_first, total)
    return Summary(
        total=total,
        evaluated=len(outcomes),
        expected=len(outcomes) if expected is None else expected,
        passed=passed,
        pass_rate=_fraction(passed, total),
        pass_rate_low=low,
        pass_rate_high=high,
        pass_rate_mean=mean,
        pass_at_1=_fraction(passed_first, total),
        pass_at_1_low=first_low,
        pass_at_1_high=first_high,
        median_attempts=median_attempts_to_pass(outcomes),
        mean_attempts=mean_attempts_to_pass(outcomes),
        repeat_error_rate=repeat_error_rate(outcomes),
        error_codes=error_histogram(outcomes),
        families=family_rates(outcomes),
        repeats=max(by_repeat) + 1 if by_repeat else 0,
    )


# ------------------------------------------------------------------------------- paired comparison


def compare(before: Mapping[str, bool], after: Mapping[str, bool]) -> Comparison:
    """Koan-by-koan comparison of two runs' (majority) outcomes, with an exact sign test.

    Only koans present in both runs are paired; the others are listed in only_before/only_after.
    With g gains, r regressions and n = g + r discordant koans, X ~ Bin(n, 1/2):
    sign_test_p = min(1, 2·P[X <= min(g, r)]) and p_improvement = P[X >= g]; both are 1.0 when n = 0.
    """
    paired = sorted(set(before) & set(after))
    regressions = tuple(k for k in paired if before[k] and not after[k])
    gains = tuple(k for k in paired if not before[k] and after[k])
    n = len(regressions) + len(gains)
    return Comparison(
        regressions=regressions,
        gains=gains,
        unchanged_pass=tuple(k for k in paired if before[k] and after[k]),
        unchanged_fail=tuple(k for k in paired if not before[k] and not after[k]),
        only_before=tuple(sorted(set(before) - set(after))),
        only_after=tuple(sorted(set(after) - set(before))),
        sign_test_p=min(1.0, float(2 * _binomial_half_cdf(min(len(gains), len(regressions)), n))),
        p_improvement=float(1 - _binomial_half_cdf(len(gains) - 1, n)),
    )


def _binomial_half_cdf(x: int, n: int) -> Fraction:
    """P[X <= x] for X ~ Bin(n, 1/2), exactly."""
    if x < 0:
        return Fraction(0)
    return Fraction(sum(math.comb(n, i) for i in range(min(x, n) + 1)), 2**n)


# ------------------------------------------------------------------------------- forgetting


def forgetting_matrix(R: Sequence[Sequence[float]]) -> Forgetting:
    """ACC, BWT and forgetting of a pass-rate matrix R[i][j] = pass rate on family j after cycle i.

    Rows are cycles 0..T (row 0 is usually the base model, before any training), columns are
    families; the matrix must be rectangular with at least one row and one column. With m columns:
    - acc = (1/m) Σ_j R[T][j]                                  final average pass rate.
    - bwt (GEM, Lopez-Paz & Ranzato 2017) = (1/T) Σ_{j<T} (R[T][j] − R[j][j]), defined only for a
      square matrix (T + 1 = m), where row j is the state right after learning family j; None
      otherwise, and also for a 1 x 1 matrix.
    - bwt_vs_base = (1/m) Σ_j (R[T][j] − R[0][j])              the generic form for cycles x families
      matrices where families are not learned one per cycle: change since the first row.
    - forgetting_j (Chaudhry et al. 2018) = max_{i<T} R[i][j] − R[T][j]; negative means the last
      cycle is the best so far on j; 0.0 for a single row. forgetting = (1/m) Σ_j forgetting_j.
    """
    rows = [list(map(float, row)) for row in R]
    if not rows or not rows[0]:
        raise ValueError("R must have at least one row and one column")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"R must be rectangular: row {i} has {len(row)} columns, row 0 has {width}")
    last = len(rows) - 1
    final = rows[last]
    bwt: float | None = None
    if len(rows) == width and last >= 1:
        bwt = statistics.fmean(final[j] - rows[j][j] for j in range(last))
    per_family = tuple(
        (max(rows[i][j] for i in range(last)) - final[j]) if last >= 1 else 0.0 for j in range(width)
    )
    return Forgetting(
        acc=statistics.fmean(final),
        bwt=bwt,
        bwt_vs_base=statistics.fmean(final[j] - rows[0][j] for j in range(width)),
        forgetting=statistics.fmean(per_family),
        per_family_forgetting=per_family,
    )


# ------------------------------------------------------------------------------- helpers


def _fraction(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _koan_families(outcomes: Iterable[KoanOutcome]) -> dict[str, str]:
    families: dict[str, str] = {}
    for outcome in outcomes:
        known = families.setdefault(outcome.koan_id, outcome.family)
        if known != outcome.family:
            raise ValueError(
                f"koan {outcome.koan_id!r} appears with two families: {known!r} and {outcome.family!r}"
            )
    return families


def _majority(outcomes: Sequence[KoanOutcome], predicate: Callable[[KoanOutcome], bool]) -> dict[str, bool]:
    _koan_families(outcomes)
    seen: set[tuple[str, int]] = set()
    hits: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    for outcome in outcomes:
        key = (outcome.koan_id, outcome.repeat)
        if key in seen:
            raise ValueError(f"koan {outcome.koan_id!r} has two outcomes for repeat {outcome.repeat}")
        seen.add(key)
        runs[outcome.koan_id] += 1
        hits[outcome.koan_id] += bool(predicate(outcome))
    return {koan_id: 2 * hits[koan_id] > runs[koan_id] for koan_id in sorted(runs)}
