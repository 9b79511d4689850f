"""The promotion gate as pure policy: should a candidate adapter replace the champion?

The default policy follows DESIGN.md: no koan of the frozen set that the champion passes may fail
with the candidate (zero regressions, configurable), the held-out pass rate may not drop below the
champion's 95 % lower bound, the frozen pass rate may not be lower, and the candidate must gain
something (a tie keeps the champion). `decide` only reasons over run results; loading the runs,
publishing `GateDecided` and applying the decision belong to the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from nightshift_evaluator import metrics

HELDOUT_INTERVAL = "interval"
# What a frozen koan's outcome is when regressions and gains are counted (GatePolicy.frozen_measure).
MEASURES = ("pass", "first_attempt")
# Pass rates are ratios of small integers; a difference this small is float noise, not a change.
EPSILON = 1e-9
# At most this many koan ids are spelled out in one error message or reason.
MAX_LISTED_IDS = 20

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# Accepted spellings of policy keys beyond the field names (DecideGateRequest.policy's example).
_KEY_ALIASES = {"max_regressions": "max_frozen_regressions"}


def _parse_tolerance(value: str) -> float | None:
    """None for "interval", else the allowed drop as a pass-rate difference in [0, 1]."""
    if value == HELDOUT_INTERVAL:
        return None
    try:
        tolerance = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f'heldout_tolerance must be "interval" or a pass-rate difference in [0, 1], got {value!r}'
        ) from None
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(
            f"heldout_tolerance must be a pass-rate difference in [0, 1] (0.02 = 2 points), got {value!r}"
        )
    return tolerance


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must satisfy to be promoted; every rule applies to the candidate vs the champion.

    - max_frozen_regressions: frozen koans passed by the champion that may fail with the candidate.
    - heldout_tolerance: "interval" → the candidate's held-out pass rate may not fall below the
      champion's lower 95 % bound; a number (as a string, in pass-rate units within [0, 1], e.g.
      "0.02" for 2 points) → it may drop by at most that much.
    - require_pass_rate_not_lower: the candidate's frozen pass rate may not be below the champion's.
    - require_gain: at least one frozen gain or a strictly higher frozen pass rate; a tie keeps the champion.
    - frozen_measure: what counts as passing a frozen koan when regressions and gains are counted:
      "pass" (within the run's attempts, majority over repeats) or "first_attempt" (at the greedy first
      attempt, majority over repeats). Sampled retries draw differently once a model changes, so the
      same model flips koans passed at a retry between seeds; first attempts are deterministic, and a
      regression there is a change in the model.
    """

    max_frozen_regressions: int = 0
    heldout_tolerance: str = HELDOUT_INTERVAL
    require_pass_rate_not_lower: bool = True
    require_gain: bool = True
    frozen_measure: str = "pass"

    def __post_init__(self) -> None:
        if isinstance(self.max_frozen_regressions, bool) or not isinstance(self.max_frozen_regressions, int):
            raise ValueError(
                f"max_frozen_regressions must be an integer, got {self.max_frozen_regressions!r}"
            )
        if self.max_frozen_regressions < 0:
            raise ValueError(f"max_frozen_regressions must be >= 0, got {self.max_frozen_regressions}")
        _parse_tolerance(self.heldout_tolerance)
        if self.frozen_measure not in MEASURES:
            raise ValueError(
                f"frozen_measure must be one of {', '.join(MEASURES)}, got {self.frozen_measure!r}"
            )
        for name in ("require_pass_rate_not_lower", "require_gain"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str]) -> GatePolicy:
        """The default policy with `overrides` (key → string value) applied.

        Keys are the field names (`max_regressions` is accepted for `max_frozen_regressions`);
        booleans are true/false, 1/0, yes/no, on/off. Unknown keys and bad values raise ValueError
        naming the key.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for raw_key, raw_value in overrides.items():
            key = _KEY_ALIASES.get(raw_key.strip(), raw_key.strip())
            if key not in fields:
                raise ValueError(
                    f"unknown gate policy key {raw_key!r}; known keys: {', '.join(sorted(fields))}"
                )
            value = str(raw_value).strip()
            if key == "max_frozen_regressions":
                try:
                    values[key] = int(value)
                except ValueError:
                    raise ValueError(
                        f"gate policy {raw_key} must be an integer >= 0, got {raw_value!r}"
                    ) from None
                if values[key] < 0:
                    raise ValueError(f"gate policy {raw_key} must be an integer >= 0, got {raw_value!r}")
            elif key == "heldout_tolerance":
                try:
                    tolerance = _parse_tolerance(value.lower())
                except ValueError as error:
                    raise ValueError(f"gate policy {raw_key}: {error}") from None
                values[key] = HELDOUT_INTERVAL if tolerance is None else repr(tolerance)
            elif key == "frozen_measure":
                if value.lower() not in MEASURES:
                    raise ValueError(
                        f"gate policy {raw_key} must be one of {', '.join(MEASURES)}, got {raw_value!r}"
                    )
                values[key] = value.lower()
            else:
                lowered = value.lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(f"gate policy {raw_key} must be true or false, got {raw_value!r}")
                values[key] = lowered in _TRUE
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, str]:
        """The policy as strings, the form of `GateDecision.policy`; `from_overrides` reads it back."""
        return {
            "max_frozen_regressions": str(self.max_frozen_regressions),
            "heldout_tolerance": self.heldout_tolerance,
            "require_pass_rate_not_lower": str(self.require_pass_rate_not_lower).lower(),
            "require_gain": str(self.require_gain).lower(),
            "frozen_measure": self.frozen_measure,
        }


@dataclass(frozen=True)
class RunResults:
    """One evaluation run reduced to what the gate needs."""

    run_id: str
    outcomes: Mapping[str, bool]  # koan id -> passed (majority over repeats)
    pass_rate: float
    pass_rate_low: float
    pass_rate_high: float
    # koan id -> passed at the first attempt (majority over repeats); None: not known, `outcomes` only
    first_attempt: Mapping[str, bool] | None = None

    def __post_init__(self) -> None:
        for name in ("pass_rate", "pass_rate_low", "pass_rate_high"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} of run {self.run_id!r} must be within [0, 1], got {value!r}")


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer: promote or not, and why, with the numbers behind it."""

    promote: bool
    reasons: tuple[str, ...]  # every failed check when rejecting; the evidence when promoting
    regressions: tuple[str, ...]
    gains: tuple[str, ...]
    sign_test_p: float
    heldout_delta: float  # candidate - champion held-out pass rate (0.0 when no held-out runs)
    candidate_pass_rate: float
    champion_pass_rate: float

    @property
    def reason(self) -> str:
        """All reasons as one line (`GateDecision.reason`)."""
        return "; ".join(self.reasons)


def decide(
    candidate_frozen: RunResults,
    champion_frozen: RunResults,
    candidate_heldout: RunResults | None,
    champion_heldout: RunResults | None,
    policy: GatePolicy = GatePolicy(),
) -> GateVerdict:
    """Apply `policy` to a candidate's and the champion's runs.

    The frozen runs are compared koan by koan and must cover the same koans; held-out runs are
    compared by pass rate and are given both or neither. Promotion needs every rule to hold; a
    rejection lists every rule that failed.
    """
    _require_same_koans("frozen", candidate_frozen, champion_frozen)
    if (candidate_heldout is None) != (champion_heldout is None):
        given = "candidate_heldout" if candidate_heldout is not None else "champion_heldout"
        raise ValueError(f"held-out runs come in pairs: only {given} was given")
    if candidate_heldout is not None and champion_heldout is not None:
        _require_same_koans("held-out", candidate_heldout, champion_heldout)

    if policy.frozen_measure == "first_attempt":
        for run in (candidate_frozen, champion_frozen):
            if run.first_attempt is None:
                raise ValueError(
                    f"frozen_measure first_attempt: run {run.run_id} has no first-attempt outcomes"
                )
        comparison = metrics.compare(champion_frozen.first_attempt, candidate_frozen.first_attempt)
        measure = " at the first attempt"
    else:
        comparison = metrics.compare(champion_frozen.outcomes, candidate_frozen.outcomes)
        measure = ""
    failed: list[str] = []
    evidence: list[str] = []

    def check(ok: bool, passed_text: str, failed_text: str) -> None:
        (evidence if ok else failed).append(passed_text if ok else failed_text)

    regressions, gains = comparison.regressions, comparison.gains
    runs = f"(candidate run {candidate_frozen.run_id} vs champion run {champion_frozen.run_id})"
    check(
        len(regressions) <= policy.max_frozen_regressions,
        f"{_count(len(regressions), 'frozen regression')}{measure}{_ids(regressions)} <= allowed "
        f"{policy.max_frozen_regressions} {runs}",
        f"{_count(len(regressions), 'frozen regression')}{measure}{_ids(regressions)} > allowed "
        f"{policy.max_frozen_regressions} {runs}",
    )

    heldout_delta = 0.0
    if candidate_heldout is not None and champion_heldout is not None:
        heldout_delta = candidate_heldout.pass_rate - champion_heldout.pass_rate
        check(*_heldout_check(candidate_heldout, champion_heldout, policy))

    cand_rate, champ_rate = candidate_frozen.pass_rate, champion_frozen.pass_rate
    rates = (
        f"frozen pass rate {_pct(cand_rate)} (run {candidate_frozen.run_id}) vs champion "
        f"{_pct(champ_rate)} (run {champion_frozen.run_id})"
    )
    if policy.require_pass_rate_not_lower:
        check(cand_rate >= champ_rate - EPSILON, f"{rates}: not lower", f"{rates}: lower")
    if policy.require_gain:
        gained = bool(gains) or cand_rate > champ_rate + EPSILON
        check(
            gained,
            f"{_count(len(gains), 'frozen gain')}{measure}{_ids(gains)}, "
            f"sign test p = {comparison.sign_test_p:.4g}; {rates}",
            f"no gain over the champion: 0 frozen gains{measure} and {rates}",
        )
    elif gains:
        evidence.append(
            f"{_count(len(gains), 'frozen gain')}{measure}{_ids(gains)}, "
            f"sign test p = {comparison.sign_test_p:.4g}"
        )

    promote = not failed
    return GateVerdict(
        promote=promote,
        reasons=tuple(evidence if promote else failed),
        regressions=regressions,
        gains=gains,
        sign_test_p=comparison.sign_test_p,
        heldout_delta=heldout_delta,
        candidate_pass_rate=cand_rate,
        champion_pass_rate=champ_rate,
    )


def _heldout_check(candidate: RunResults, champion: RunResults, policy: GatePolicy) -> tuple[bool, str, str]:
    tolerance = _parse_tolerance(policy.heldout_tolerance)
    rates = (
        f"held-out pass rate {_pct(candidate.pass_rate)} (run {candidate.run_id}) vs champion "
        f"{_pct(champion.pass_rate)} (run {champion.run_id})"
    )
    if tolerance is None:
        bound = f"the champion's 95 % lower bound {_pct(champion.pass_rate_low)}"
        ok = candidate.pass_rate >= champion.pass_rate_low - EPSILON
        return ok, f"{rates}: not below {bound}", f"{rates}: below {bound}"
    drop = champion.pass_rate - candidate.pass_rate
    ok = drop <= tolerance + EPSILON
    allowed = f"allowed drop {_points(tolerance)}"
    if drop <= 0:
        return ok, f"{rates}: no drop ({allowed})", ""
    return (
        ok,
        f"{rates}: dropped {_points(drop)} <= {allowed}",
        f"{rates}: dropped {_points(drop)} > {allowed}",
    )


def _require_same_koans(kind: str, candidate: RunResults, champion: RunResults) -> None:
    only_champion = sorted(set(champion.outcomes) - set(candidate.outcomes))
    only_candidate = sorted(set(candidate.outcomes) - set(champion.outcomes))
    if not only_champion and not only_candidate:
        return
    parts = []
    if only_champion:
        parts.append(f"missing from candidate run {candidate.run_id}: {_id_list(only_champion)}")
    if only_candidate:
        parts.append(f"missing from champion run {champion.run_id}: {_id_list(only_candidate)}")
    raise ValueError(f"the {kind} runs do not cover the same koans; " + "; ".join(parts))


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f} %"


def _points(difference: float) -> str:
    return f"{100 * difference:.1f} points"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ids(koan_ids: tuple[str, ...]) -> str:
    return f" ({_id_list(koan_ids)})" if koan_ids else ""


def _id_list(koan_ids) -> str:
    listed = ", ".join(koan_ids[:MAX_LISTED_IDS])
    more = len(koan_ids) - MAX_LISTED_IDS
    return f"{listed} and {more} more" if more > 0 else listed
