"""Mix recipes: pure functions from episodes, the corpus and a recipe's parameters to a Mix.

Vocabulary (DESIGN.md, "Training data vocabulary"). A *verified fix* is code that passed the sandbox
with the task's own tests: the passing attempt of an episode whose first attempt failed, the corpus's
reference fix of a train koan whose episode never passed, or the passing attempt of a user's own
program (a task without koan id). Every example's prompt is an attempt's recorded user message and
every target is `nightshift.chat.answer_for(code)`.

Recipes:
- `naive`: the published recipe, fixes of the failed tasks only (first attempt's prompt -> fix).
- `replay`: those fixes mixed with successes (episodes passed at attempt 1), `replay_ratio` per fix.
- `rehearsal`: the fixes plus the current model's own verified first answers on train koans.
- `dpo`: preference pairs on a failed attempt's prompt: chosen = the fix, rejected = that attempt.

Every recipe excludes, and counts by reason, episodes on evaluation koans (frozen, held-out), on
imported packs, on unknown koans, episodes whose programs nearly copy an evaluation koan, and
episodes without a verified fix; it drops empty prompts and duplicate (prompt, target) examples.
Asking for evaluation material in the parameters is refused with a `MixError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from nightshift.chat import answer_for
from nightshift.corpus import Corpus, Koan
from nightshift.v1 import trainer_pb2

from nightshift_trainer.episodes import AttemptRecord, EpisodeRecord, adapter_key
from nightshift_trainer.examples import Example, make_example, to_proto

EVALUATION_SPLITS = ("frozen", "heldout")
# The values of `koan_set`: where a mix may draw episodes from.
KOAN_SETS = ("any", "train", "smoke", "user")
# Which example survives when two carry the same prompt and target.
_ORIGIN_PRIORITY = {"episode": 0, "user": 1, "reference": 2, "rehearsal": 3, "success": 4}


class MixError(ValueError):
    """A recipe or parameter that cannot be used; the message starts with its name."""


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    default: str
    help: str


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    description: str
    parameters: tuple[ParameterInfo, ...]
    # Figures the recipe adds to the resolved parameters; given back as input they are recomputed.
    reported: tuple[str, ...] = ()

    def defaults(self) -> dict[str, str]:
        return {p.name: p.default for p in self.parameters}


@dataclass(frozen=True)
class Mix:
    recipe: str
    parameters: dict[str, str]  # the full, resolved parameters (defaults filled in)
    examples: tuple[Example, ...]
    excluded_by_reason: dict[str, int]
    data_hash: str  # sha256 over recipe, sorted parameters and the ordered example ids

    @property
    def excluded_count(self) -> int:
        return sum(self.excluded_by_reason.values())


_SELECTION = (
    ParameterInfo(
        "koan_set",
        "any",
        "where episodes come from: any (train koans and users' own programs), train, smoke (the easy "
        "train koans) or user; frozen, held-out and imported packs are refused",
    ),
    ParameterInfo("koans", "", "comma-separated train koan ids the mix is limited to; empty: no limit"),
    ParameterInfo(
        "include_reference",
        "true",
        "use the corpus's reference fix of a train koan whose episode never passed",
    ),
)

RECIPES: dict[str, RecipeInfo] = {
    "naive": RecipeInfo(
        "naive",
        "The published recipe: fixes of the failed tasks only (first attempt's prompt -> verified fix).",
        _SELECTION,
    ),
    "replay": RecipeInfo(
        "replay",
        "Fixes of the failed tasks mixed with successes (episodes passed at attempt 1, prompt -> code).",
        (
            *_SELECTION,
            ParameterInfo(
                "replay_ratio",
                "1.0",
                "successes per fix, sampled with the seed; all of them when fewer exist "
                "(replay_available and replay_selected report the numbers)",
            ),
        ),
        reported=("replay_available", "replay_selected"),
    ),
    "rehearsal": RecipeInfo(
        "rehearsal",
        "Fixes of the failed tasks plus the base adapter's own verified first answers on train koans.",
        (
            *_SELECTION,
            ParameterInfo(
                "rehearsal_ratio",
                "1.0",
                "own answers per fix, sampled with the seed; all of them when fewer exist "
                "(rehearsal_available and rehearsal_selected report the numbers)",
            ),
        ),
        reported=("rehearsal_available", "rehearsal_selected"),
    ),
    "dpo": RecipeInfo(
        "dpo",
        "Preference pairs on a failed attempt's prompt: chosen = a verified fix, rejected = that attempt.",
        (
            *_SELECTION,
            ParameterInfo(
                "max_pairs_per_episode",
                "2",
                "at most this many pairs from one episode, from its earliest failed attempts",
            ),
        ),
    ),
}


# --- parameters ----------------------------------------------------------------------------------


def _as_bool(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return "true"
    if value in ("false", "0", "no"):
        return "false"
    raise MixError(f"{name}: must be true or false, got {raw!r}")


def _as_ratio(name: str, raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        raise MixError(f"{name}: must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise MixError(f"{name}: must be a finite number >= 0, got {raw!r}")
    return repr(value)


def _as_positive_int(name: str, raw: str) -> str:
    try:
        value = int(raw.strip())
    except ValueError:
        raise MixError(f"{name}: must be a whole number, got {raw!r}") from None
    if value < 1:
        raise MixError(f"{name}: must be at least 1, got {raw!r}")
    return str(value)


def _as_koan_set(raw: str, corpus: Corpus) -> str:
    value = raw.strip()
    if value in KOAN_SETS:
        return value
    if value in EVALUATION_SPLITS:
        raise MixError(f"koan_set: {value!r} is evaluation material and is never trained on")
    if value == "all":
        raise MixError("koan_set: 'all' includes the frozen and held-out koans, which are never trained on")
    if value in corpus.set_names():
        raise MixError(f"koan_set: {value!r} is an imported pack: evaluation material, never trained on")
    raise MixError(f"koan_set: unknown set {value!r} (allowed: {', '.join(KOAN_SETS)})")


def _as_koans(raw: str, corpus: Corpus) -> str:
    ids = sorted({part.strip() for part in raw.split(",") if part.strip()})
    unknown, refused = [], []
    for koan_id in ids:
        try:
            koan = corpus.get(koan_id)
        except KeyError:
            unknown.append(koan_id)
            continue
        if koan.split != "train":
            refused.append(f"{koan_id} ({koan.split})")
    if refused:
        raise MixError(f"koans: evaluation material is never trained on: {', '.join(refused)}")
    if unknown:
        raise MixError(f"koans: unknown koan ids {', '.join(unknown)}")
    return ",".join(ids)


_CHECKS: dict[str, Callable[[str, str], str]] = {
    "include_reference": _as_bool,
    "replay_ratio": _as_ratio,
    "rehearsal_ratio": _as_ratio,
    "max_pairs_per_episode": _as_positive_int,
}


def resolve_parameters(recipe: str, parameters: Mapping[str, str], corpus: Corpus) -> dict[str, str]:
    """The recipe's parameters with defaults filled in and values in canonical spelling."""
    info = RECIPES.get(recipe)
    if info is None:
        raise MixError(f"recipe: unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    known = info.defaults()
    unknown = sorted(set(parameters) - set(known) - set(info.reported))
    if unknown:
        raise MixError(f"{unknown[0]}: unknown parameter of recipe {recipe!r} (known: {', '.join(known)})")
    resolved = {}
    for name, default in known.items():
        raw = str(parameters.get(name, default))
        if name == "koan_set":
            resolved[name] = _as_koan_set(raw, corpus)
        elif name == "koans":
            resolved[name] = _as_koans(raw, corpus)
        else:
            resolved[name] = _CHECKS[name](name, raw)
    return resolved


# --- episodes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Eligible:
    episode: EpisodeRecord
    koan: Koan | None  # None for a user's own program
    first: AttemptRecord


def _exclusion(episode: EpisodeRecord, corpus: Corpus) -> tuple[str | None, Koan | None]:
    """Why an episode may never be trained on (None when it may), and its koan."""
    koan = None
    if episode.koan_id:
        try:
            koan = corpus.get(episode.koan_id)
        except KeyError:
            koan = None
    # Both the set the agent recorded and the corpus's current split must allow training.
    splits = {episode.koan_set} | ({koan.split} if koan is not None else set())
    if splits & set(EVALUATION_SPLITS):
        return "evaluation_koan", koan
    if splits - {"", "train", "user"}:
        return "imported_pack", koan
    if episode.koan_id and koan is None:
        return "unknown_koan", None
    if not episode.koan_id and episode.koan_set == "train":
        return "unknown_koan", None
    return None, koan


def _selected(koan: Koan | None, parameters: Mapping[str, str]) -> bool:
    koan_set = parameters["koan_set"]
    if koan_set == "train" and koan is None:
        return False
    if koan_set == "smoke" and (koan is None or not koan.smoke):
        return False
    if koan_set == "user" and koan is not None:
        return False
    koans = parameters["koans"]
    return not koans or (koan is not None and koan.id in koans.split(","))


class _Leakage:
    """Asks the corpus once per distinct text whether it copies an evaluation program."""

    def __init__(self, corpus: Corpus):
        self._corpus = corpus
        self._known: dict[str, bool] = {}

    def any(self, texts: Iterable[str]) -> bool:
        for text in texts:
            if not text.strip():
                continue
            if text not in self._known:
                self._known[text] = self._corpus.is_evaluation_text(text)
            if self._known[text]:
                return True
        return False


def _eligible(
    episodes: Sequence[EpisodeRecord],
    corpus: Corpus,
    parameters: Mapping[str, str],
    excluded: Counter,
    leakage: _Leakage,
) -> list[_Eligible]:
    out = []
    for episode in sorted(episodes, key=lambda e: e.task_id):
        reason, koan = _exclusion(episode, corpus)
        if reason is None and not episode.completed:
            reason = "incomplete"
        if reason is not None:
            excluded[reason] += 1
            continue
        if not _selected(koan, parameters):
            continue
        attempts = sorted(episode.attempts, key=lambda a: a.number)
        if not attempts or attempts[0].number != 1:
            excluded["no_attempts"] += 1
            continue
        # The task's own program is in every prompt; the programs of its answers are checked
        # where an example carries them, so a large store costs one check per used text.
        task_texts = [episode.source] + ([koan.broken, koan.fix] if koan is not None else [])
        if leakage.any(task_texts):
            excluded["near_duplicate"] += 1
            continue
        out.append(_Eligible(episode, koan, attempts[0]))
    return out


def _verified_fix(item: _Eligible, include_reference: bool) -> tuple[str, str] | None:
    """(code, origin) of the episode's verified fix, or None when it has none."""
    passing = next((a for a in item.episode.attempts if a.passed and a.code.strip()), None)
    if passing is not None:
        return passing.code, "episode" if item.koan is not None else "user"
    if item.koan is not None and include_reference and item.koan.fix.strip():
        return item.koan.fix, "reference"
    return None


# --- examples ------------------------------------------------------------------------------------


def _fix_examples(
    eligible: list[_Eligible], include_reference: bool, excluded: Counter, leakage: _Leakage
) -> list[Example]:
    examples = []
    for item in eligible:
        if item.first.passed:
            continue
        fix = _verified_fix(item, include_reference)
        if fix is None:
            excluded["unverified"] += 1
            continue
        code, origin = fix
        if leakage.any([code]):
            excluded["near_duplicate"] += 1
            continue
        examples.append(
            make_example(
                koan_id=item.episode.koan_id,
                prompt=item.first.prompt,
                completion=answer_for(code),
                origin=origin,
                episode_id=item.episode.task_id,
            )
        )
    return examples


def _first_answers(
    items: list[_Eligible], origin: str, excluded: Counter, leakage: _Leakage
) -> list[Example]:
    examples = []
    for item in items:
        if not (item.first.passed and item.first.code.strip()):
            continue
        if leakage.any([item.first.code]):
            excluded["near_duplicate"] += 1
            continue
        examples.append(
            make_example(
                koan_id=item.episode.koan_id,
                prompt=item.first.prompt,
                completion=answer_for(item.first.code),
                origin=origin,
                episode_id=item.episode.task_id,
            )
        )
    return examples


def _pairs(
    eligible: list[_Eligible], include_reference: bool, max_pairs: int, excluded: Counter, leakage: _Leakage
) -> list[Example]:
    examples = []
    for item in eligible:
        if item.first.passed:
            continue
        fix = _verified_fix(item, include_reference)
        if fix is None:
            excluded["unverified"] += 1
            continue
        code, origin = fix
        attempts = sorted(item.episode.attempts, key=lambda a: a.number)
        paired = [a for a in attempts if not a.passed][:max_pairs]
        # A later prompt repeats the earlier attempts, so every answer up to the last pair is carried.
        carried = [a.code or a.completion for a in attempts if paired and a.number <= paired[-1].number]
        if leakage.any([code, *carried]):
            excluded["near_duplicate"] += 1
            continue
        chosen = answer_for(code)
        for attempt in paired:
            rejected = answer_for(attempt.code) if attempt.code.strip() else attempt.completion
            if not rejected.strip():
                excluded["empty_answer"] += 1
                continue
            if rejected == chosen:
                excluded["identical_pair"] += 1
                continue
            examples.append(
                make_example(
                    koan_id=item.episode.koan_id,
                    prompt=attempt.prompt,
                    chosen=chosen,
                    rejected=rejected,
                    origin=origin,
                    episode_id=item.episode.task_id,
                )
            )
    return examples


def _clean(candidates: list[Example], excluded: Counter, keep: Sequence[Example] = ()) -> list[Example]:
    """Drop empty prompts and repeats of a (prompt, target) already kept, in a fixed order."""
    seen = {(e.prompt, e.completion, e.chosen, e.rejected) for e in keep}
    out = []
    ordered = sorted(candidates, key=lambda e: (_ORIGIN_PRIORITY[e.origin], e.episode_id, e.example_id))
    for example in ordered:
        if not example.prompt.strip():
            excluded["empty_prompt"] += 1
            continue
        key = (example.prompt, example.completion, example.chosen, example.rejected)
        if key in seen:
            excluded["duplicate"] += 1
            continue
        seen.add(key)
        out.append(example)
    return out


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _sample(examples: list[Example], count: int, seed: int) -> list[Example]:
    """`count` examples chosen by a seeded hash of their ids: the same on every machine and Python."""

    def rank(example: Example) -> str:
        return hashlib.sha256(f"{seed}:{example.example_id}".encode()).hexdigest()

    return sorted(examples, key=rank)[:count]


def data_hash(recipe: str, parameters: Mapping[str, str], example_ids: Sequence[str]) -> str:
    """sha256 over the recipe, its sorted parameters and the ordered example ids."""
    canonical = json.dumps(
        {"recipe": recipe, "parameters": sorted(parameters.items()), "examples": list(example_ids)},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_mix(
    recipe: str,
    parameters: Mapping[str, str],
    episodes: Sequence[EpisodeRecord],
    corpus: Corpus,
    *,
    base_adapter_id: str = "",
    seed: int = 0,
) -> Mix:
    """Build one recipe's mix. `base_adapter_id` is the adapter whose own answers `rehearsal` uses
    ("" or "none" = the base model); `seed` drives every sampling. Raises MixError naming the
    recipe or parameter that cannot be used."""
    resolved = resolve_parameters(recipe, parameters, corpus)
    excluded: Counter = Counter()
    leakage = _Leakage(corpus)
    eligible = _eligible(episodes, corpus, resolved, excluded, leakage)
    include_reference = resolved["include_reference"] == "true"

    if recipe == "dpo":
        examples = _clean(
            _pairs(eligible, include_reference, int(resolved["max_pairs_per_episode"]), excluded, leakage),
            excluded,
        )
    else:
        examples = _clean(_fix_examples(eligible, include_reference, excluded, leakage), excluded)
        extra_origin = {"replay": "success", "rehearsal": "rehearsal"}.get(recipe)
        if extra_origin is not None:
            pool = eligible
            if recipe == "rehearsal":
                own = adapter_key(base_adapter_id)
                pool = [
                    i for i in eligible if i.koan is not None and adapter_key(i.episode.adapter_id) == own
                ]
            available = _clean(_first_answers(pool, extra_origin, excluded, leakage), excluded, keep=examples)
            wanted = _round_half_up(float(resolved[f"{recipe}_ratio"]) * len(examples))
            chosen = _sample(available, wanted, seed)
            resolved[f"{recipe}_available"] = str(len(available))
            resolved[f"{recipe}_selected"] = str(len(chosen))
            examples = examples + chosen

    ordered = tuple(sorted(examples, key=lambda e: e.example_id))
    return Mix(
        recipe=recipe,
        parameters=resolved,
        examples=ordered,
        excluded_by_reason=dict(sorted((k, v) for k, v in excluded.items() if v)),
        data_hash=data_hash(recipe, resolved, [e.example_id for e in ordered]),
    )


def build_mix_response(mix: Mix) -> trainer_pb2.BuildMixResponse:
    """The mix as `Trainer.BuildMix` answers it."""
    return trainer_pb2.BuildMixResponse(
        examples=[to_proto(e) for e in mix.examples],
        excluded_count=mix.excluded_count,
        data_hash=mix.data_hash,
        excluded_by_reason=mix.excluded_by_reason,
    )
