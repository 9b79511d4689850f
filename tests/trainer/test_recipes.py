"""Mix recipes against the real corpus: verified fixes, exclusions, refusals, sampling and the data hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest
from nightshift.chat import answer_for
from nightshift.corpus import Corpus, Koan
from nightshift_trainer.episodes import AttemptRecord, EpisodeRecord
from nightshift_trainer.examples import example_id_for, make_example
from nightshift_trainer.recipes import RECIPES, MixError, build_mix, build_mix_response

# Packs of the machine running the tests must not change the corpus these tests see.
BASE = Corpus.load(packs_dir=Path(__file__).parent / "no-packs-here")

TRAIN_A, TRAIN_B, TRAIN_C, TRAIN_D = "borrow-010", "borrow-011", "bound-009", "bound-010"
SMOKE = "borrow-009"
FROZEN, HELDOUT = "borrow-001", "borrow-005"
PACK = "demo-001"

PACK_KOAN = Koan(
    id=PACK,
    family="demo",
    difficulty=1,
    title="an imported exercise",
    split="demo-pack",
    broken="pub fn double(x: i32) -> i32 {\n    x * 3\n}\n",
    tests="",
    fix="",
    hint="",
    expected_codes=(),
    expected_failing_tests=("tests::doubles",),
)
CORPUS = Corpus([*BASE.koans("all"), PACK_KOAN])

USER_BROKEN = """pub fn mean(values: &[f64]) -> f64 {
    let total: f64 = values.iter().sum();
    total / values.len()
}
"""
USER_FIXED = """pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let total: f64 = values.iter().sum();
    total / values.len() as f64
}
"""
MODEL_FIX_NOTE = "\n// corrected by the model\n"


def prompt_for(task_id: str, subject: str, number: int) -> str:
    """First prompts depend only on the task (as the agent's do); later ones carry the history."""
    if number == 1:
        return f"Fix this Rust program:\n{subject}"
    return f"Attempt {number} of {task_id}. Fix this Rust program:\n{subject}"


def episode(
    task_id: str,
    koan_id: str = "",
    outcomes: str = "FP",
    *,
    koan_set: str | None = None,
    adapter_id: str = "none",
    source: str = "",
    completed: bool = True,
    passing_code: str | None = None,
    first_prompt: str | None = None,
) -> EpisodeRecord:
    """An episode built by hand: `outcomes` has one letter per attempt, F failed with code, E failed
    without extracted code, P passed."""
    try:
        koan = CORPUS.get(koan_id)
    except KeyError:
        koan = None
    broken = koan.broken if koan else (source or USER_BROKEN)
    fixed = passing_code or ((koan.fix + MODEL_FIX_NOTE) if koan and koan.fix else USER_FIXED)
    subject = koan_id or broken
    attempts = []
    for number, outcome in enumerate(outcomes, start=1):
        code = {"F": broken + f"// try {number}\n", "E": "", "P": fixed}[outcome]
        attempts.append(
            AttemptRecord(
                number=number,
                prompt=first_prompt
                if (number == 1 and first_prompt is not None)
                else prompt_for(task_id, subject, number),
                completion=f"raw answer {number} of {task_id}" if outcome == "E" else answer_for(code),
                code=code,
                status="OK" if outcome == "P" else ("COMPILE_ERROR" if outcome == "E" else "TEST_FAILED"),
                error_codes=[] if outcome == "P" else ["E0499"],
                temperature=0.0 if number == 1 else 0.7,
                seed=number,
            )
        )
    if koan_set is None:
        koan_set = koan.split if koan else ("user" if not koan_id else "train")
    return EpisodeRecord(
        task_id=task_id,
        koan_id=koan_id,
        koan_set=koan_set,
        family=koan.family if koan else "",
        adapter_id=adapter_id,
        model="qwen2.5-coder-0.5b-instruct-q4_k_m",
        passed="P" in outcomes,
        steps=len(outcomes),
        attempts=attempts,
        completed=completed,
        state="TASK_PASSED" if "P" in outcomes else "TASK_FAILED",
        source=source if not koan_id else "",
    )


def sft(mix) -> set[tuple[str, str, str, str, str]]:
    return {(e.episode_id, e.koan_id, e.origin, e.prompt, e.completion) for e in mix.examples}


def first_prompt_of(ep: EpisodeRecord) -> str:
    return ep.attempts[0].prompt


# --- verified fixes ------------------------------------------------------------------------------


def base_episodes() -> list[EpisodeRecord]:
    return [
        episode("t1", TRAIN_A, "FP"),  # fixed by the model at attempt 2
        episode("t2", TRAIN_B, "P"),  # passed at once: a success, no fix needed
        episode("t3", TRAIN_C, "FF"),  # never passed: the corpus's reference fix
        episode("t4", "", "FFP", source=USER_BROKEN),  # a user's program, corrected
        episode("t5", "", "FF", source=USER_BROKEN + "// another\n"),  # a user's program, never passed
    ]


def test_naive_trains_on_the_verified_fixes_of_failed_tasks_only():
    eps = base_episodes()
    mix = build_mix("naive", {}, eps, CORPUS)
    fix_a = CORPUS.get(TRAIN_A).fix + MODEL_FIX_NOTE
    assert sft(mix) == {
        ("t1", TRAIN_A, "episode", first_prompt_of(eps[0]), answer_for(fix_a)),
        ("t3", TRAIN_C, "reference", first_prompt_of(eps[2]), answer_for(CORPUS.get(TRAIN_C).fix)),
        ("t4", "", "user", first_prompt_of(eps[3]), answer_for(USER_FIXED)),
    }
    assert mix.excluded_by_reason == {"unverified": 1}  # t5: a user's program that never passed
    assert mix.excluded_count == 1
    assert mix.parameters == {"include_reference": "true", "koan_set": "any", "koans": ""}
    assert all(e.kind == "sft" and e.completion.startswith("```rust\n") for e in mix.examples)


def test_without_reference_fixes_a_never_passed_koan_is_unverified():
    mix = build_mix("naive", {"include_reference": "false"}, base_episodes(), CORPUS)
    assert {e.episode_id for e in mix.examples} == {"t1", "t4"}
    assert mix.excluded_by_reason == {"unverified": 2}


def test_a_passing_attempt_counts_only_when_the_sandbox_said_ok():
    ep = episode("t1", TRAIN_A, "FF")
    # The episode claims success, but no attempt passed the sandbox: the reference fix is used.
    claimed = dataclasses.replace(ep, passed=True)
    mix = build_mix("naive", {}, [claimed], CORPUS)
    assert [(e.origin, e.completion) for e in mix.examples] == [
        ("reference", answer_for(CORPUS.get(TRAIN_A).fix))
    ]
    user = dataclasses.replace(episode("u1", "", "FF", source=USER_BROKEN), passed=True)
    assert build_mix("naive", {}, [user], CORPUS).excluded_by_reason == {"unverified": 1}


@pytest.mark.parametrize(
    ("koan_set", "expected"),
    [
        ("any", {"t1", "t3", "t4", "s1"}),
        ("train", {"t1", "t3", "s1"}),
        ("smoke", {"s1"}),
        ("user", {"t4"}),
    ],
)
def test_koan_set_selects_where_episodes_come_from(koan_set, expected):
    eps = [*base_episodes(), episode("s1", SMOKE, "FP")]
    mix = build_mix("naive", {"koan_set": koan_set}, eps, CORPUS)
    assert {e.episode_id for e in mix.examples} == expected


def test_koans_limits_the_mix_to_named_train_koans():
    mix = build_mix("naive", {"koans": f" {TRAIN_C}, {TRAIN_A} "}, base_episodes(), CORPUS)
    assert {e.episode_id for e in mix.examples} == {"t1", "t3"}
    assert mix.parameters["koans"] == f"{TRAIN_A},{TRAIN_C}"


# --- exclusions ----------------------------------------------------------------------------------

FROZEN_FIX_RENAMED = CORPUS.get(FROZEN).fix.replace("Sensor", "Gauge").replace("readings", "values")

EXCLUDED = [
    pytest.param(episode("x", FROZEN, "FP"), "evaluation_koan", id="frozen"),
    pytest.param(episode("x", HELDOUT, "FF"), "evaluation_koan", id="heldout"),
    pytest.param(episode("x", PACK, "FP", passing_code=USER_FIXED), "imported_pack", id="pack"),
    pytest.param(episode("x", "gone-404", "FP", koan_set="train"), "unknown_koan", id="unknown-koan"),
    pytest.param(episode("x", "gone-404", "FP", koan_set="frozen"), "evaluation_koan", id="gone-frozen"),
    pytest.param(episode("x", "gone-404", "FP", koan_set="old-pack"), "imported_pack", id="gone-pack"),
    # The koan is train now, but the episode ran while it was frozen: still evaluation material.
    pytest.param(episode("x", TRAIN_D, "FP", koan_set="frozen"), "evaluation_koan", id="recorded-frozen"),
    pytest.param(
        episode("x", "", "FP", source=CORPUS.get(FROZEN).broken), "near_duplicate", id="user-copies-frozen"
    ),
    pytest.param(
        episode("x", "", "FP", source=USER_BROKEN, passing_code=FROZEN_FIX_RENAMED),
        "near_duplicate",
        id="fix-copies-frozen",
    ),
    pytest.param(
        episode("x", TRAIN_D, "FP", passing_code=CORPUS.get(HELDOUT).fix), "near_duplicate", id="fix-heldout"
    ),
    pytest.param(
        episode("x", "", "FP", source=PACK_KOAN.broken.replace("x", "n")), "near_duplicate", id="copies-pack"
    ),
    pytest.param(episode("x", TRAIN_D, "FP", completed=False), "incomplete", id="incomplete"),
    pytest.param(episode("x", TRAIN_D, ""), "no_attempts", id="no-attempts"),
    pytest.param(episode("x", TRAIN_D, "FF", koan_set="train", source=""), None, id="allowed-control"),
]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize(("bad", "reason"), EXCLUDED)
def test_excluded_episodes_are_counted_by_reason_in_every_recipe(recipe, bad, reason):
    good = episode("g1", TRAIN_A, "FP")
    mix = build_mix(recipe, {}, [good, bad], CORPUS)
    if reason is None:  # the control: a train koan that never passed trains on its reference fix
        assert "x" in {e.episode_id for e in mix.examples}
        assert mix.excluded_by_reason == {}
        return
    assert "x" not in {e.episode_id for e in mix.examples}
    assert "g1" in {e.episode_id for e in mix.examples}
    assert mix.excluded_by_reason == {reason: 1}


def copied_attempt(ep: EpisodeRecord, number: int, code: str) -> EpisodeRecord:
    attempts = [dataclasses.replace(a, code=code) if a.number == number else a for a in ep.attempts]
    return dataclasses.replace(ep, attempts=attempts)


@pytest.mark.parametrize(
    ("bad", "reasons"),
    [
        # A failed answer that copies a frozen program reaches only the DPO pairs (as rejected, and
        # in the history of later prompts); the SFT recipes train on the fix alone and keep it.
        pytest.param(
            copied_attempt(episode("x", TRAIN_D, "FFP"), 1, FROZEN_FIX_RENAMED),
            {"naive": {}, "replay": {}, "rehearsal": {}, "dpo": {"near_duplicate": 1}},
            id="failed-answer",
        ),
        # A first answer that passed reaches only the recipes that replay successes.
        pytest.param(
            copied_attempt(episode("x", TRAIN_D, "P"), 1, CORPUS.get(HELDOUT).fix),
            {"naive": {}, "replay": {"near_duplicate": 1}, "rehearsal": {"near_duplicate": 1}, "dpo": {}},
            id="passed-answer",
        ),
    ],
)
def test_an_answer_is_checked_where_an_example_carries_it(bad, reasons):
    good = episode("g1", TRAIN_A, "FP")
    for recipe, expected in reasons.items():
        mix = build_mix(recipe, {"replay_ratio": "5"} if recipe == "replay" else {}, [good, bad], CORPUS)
        assert mix.excluded_by_reason == expected, recipe
        carried = [t for e in mix.examples for t in (e.prompt, e.completion, e.chosen, e.rejected)]
        copies = (FROZEN_FIX_RENAMED.strip(), CORPUS.get(HELDOUT).fix.strip())
        assert not any(c in t for c in copies for t in carried)


def test_no_example_ever_carries_evaluation_programs():
    eps = [param.values[0] for param in EXCLUDED] + base_episodes()
    eps = [dataclasses.replace(e, task_id=f"{e.task_id}-{i}") for i, e in enumerate(eps)]
    for recipe in RECIPES:
        mix = build_mix(recipe, {}, eps, CORPUS)
        assert mix.examples
        for example in mix.examples:
            assert example.koan_id in ("", *(k.id for k in CORPUS.koans("train")))
            for target in (example.completion, example.chosen, example.rejected):
                code = target.removeprefix("```rust\n").removesuffix("\n```")
                assert not code or not CORPUS.is_evaluation_text(code), (recipe, example)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "parameters", "named"),
    [
        ("naive", {"koan_set": "frozen"}, "koan_set"),
        ("replay", {"koan_set": "heldout"}, "koan_set"),
        ("dpo", {"koan_set": "all"}, "koan_set"),
        ("naive", {"koan_set": "demo-pack"}, "koan_set"),
        ("naive", {"koan_set": "nonsense"}, "koan_set"),
        ("naive", {"koans": f"{TRAIN_A},{FROZEN}"}, "koans"),
        ("rehearsal", {"koans": HELDOUT}, "koans"),
        ("naive", {"koans": PACK}, "koans"),
        ("naive", {"koans": "nope-001"}, "koans"),
        ("naive", {"replay_ratio": "1.0"}, "replay_ratio"),  # not a parameter of naive
        ("replay", {"ratio": "1.0"}, "ratio"),
        ("replay", {"replay_ratio": "-1"}, "replay_ratio"),
        ("replay", {"replay_ratio": "lots"}, "replay_ratio"),
        ("replay", {"replay_ratio": "nan"}, "replay_ratio"),
        ("rehearsal", {"rehearsal_ratio": "inf"}, "rehearsal_ratio"),
        ("dpo", {"max_pairs_per_episode": "0"}, "max_pairs_per_episode"),
        ("dpo", {"max_pairs_per_episode": "1.5"}, "max_pairs_per_episode"),
        ("naive", {"include_reference": "maybe"}, "include_reference"),
        ("sft-everything", {}, "recipe"),
    ],
)
def test_bad_or_evaluation_asking_parameters_are_refused_by_name(recipe, parameters, named):
    with pytest.raises(MixError) as err:
        build_mix(recipe, parameters, base_episodes(), CORPUS)
    assert str(err.value).startswith(f"{named}:"), str(err.value)


def test_recipes_describe_their_parameters_and_their_defaults_resolve():
    for name, info in RECIPES.items():
        assert info.name == name and info.description
        assert all(p.help and p.name for p in info.parameters)
        mix = build_mix(name, info.defaults(), base_episodes(), CORPUS)
        assert set(info.defaults()) <= set(mix.parameters)
        assert set(mix.parameters) - set(info.defaults()) == set(info.reported)


# --- replay and rehearsal ------------------------------------------------------------------------

SUCCESS_KOANS = ["conv-010", "conv-011", "conv-012", "move-010", "move-011"]


def replay_episodes() -> list[EpisodeRecord]:
    fixes = [episode("f1", TRAIN_A, "FP"), episode("f2", TRAIN_B, "FFP")]
    successes = [episode(f"s{i}", koan_id, "P") for i, koan_id in enumerate(SUCCESS_KOANS)]
    return fixes + successes


@pytest.mark.parametrize(
    ("ratio", "successes"),
    [("1.0", 2), ("1", 2), ("0.5", 1), ("0.25", 1), ("0", 0), ("2", 4), ("10", 5)],
)
def test_replay_mixes_successes_per_fix_and_reports_what_was_available(ratio, successes):
    mix = build_mix("replay", {"replay_ratio": ratio}, replay_episodes(), CORPUS)
    origins = [e.origin for e in mix.examples]
    assert origins.count("episode") == 2
    assert origins.count("success") == successes
    assert mix.parameters["replay_ratio"] == repr(float(ratio))
    assert mix.parameters["replay_available"] == "5"
    assert mix.parameters["replay_selected"] == str(successes)
    for example in mix.examples:
        if example.origin == "success":
            ep = next(e for e in replay_episodes() if e.task_id == example.episode_id)
            assert example.prompt == ep.attempts[0].prompt
            assert example.completion == answer_for(ep.attempts[0].code)


def test_replay_sampling_is_seeded_and_independent_of_input_order():
    eps = replay_episodes()
    shuffled = list(eps)
    random.Random(7).shuffle(shuffled)
    chosen = {}
    for seed in range(8):
        a = build_mix("replay", {}, eps, CORPUS, seed=seed)
        b = build_mix("replay", {}, shuffled, CORPUS, seed=seed)
        assert a == b
        chosen[seed] = frozenset(e.episode_id for e in a.examples if e.origin == "success")
    assert len(set(chosen.values())) > 1  # the seed, not the input, decides which successes


def test_rehearsal_uses_the_base_adapters_own_first_answers_on_train_koans():
    eps = [
        episode("f1", TRAIN_A, "FP", adapter_id="cand-1"),
        episode("f2", TRAIN_B, "FFP", adapter_id="none"),
        episode("base-1", "conv-010", "P", adapter_id="none"),
        episode("base-2", "conv-011", "P", adapter_id=""),
        episode("champ-1", "move-010", "P", adapter_id="champ"),
        episode("champ-2", "move-011", "P", adapter_id="champ"),
        episode("champ-user", "", "P", adapter_id="champ", source=USER_BROKEN),
        episode("champ-late", "move-012", "FP", adapter_id="champ"),
    ]
    base = build_mix("rehearsal", {}, eps, CORPUS, base_adapter_id="")
    assert {e.episode_id for e in base.examples if e.origin == "rehearsal"} == {"base-1", "base-2"}
    assert {e.episode_id for e in base.examples if e.origin == "episode"} == {"f1", "f2", "champ-late"}
    champ = build_mix("rehearsal", {"rehearsal_ratio": "10"}, eps, CORPUS, base_adapter_id="champ")
    assert {e.episode_id for e in champ.examples if e.origin == "rehearsal"} == {"champ-1", "champ-2"}
    assert champ.parameters["rehearsal_available"] == "2"
    assert champ.parameters["rehearsal_selected"] == "2"
    none = build_mix("rehearsal", {}, eps, CORPUS, base_adapter_id="none")
    assert none.examples == base.examples


# --- dpo -----------------------------------------------------------------------------------------


def test_dpo_pairs_failed_attempts_with_a_verified_fix():
    fixed = episode("d1", TRAIN_A, "FEFP")
    never = episode("d2", TRAIN_B, "FF")
    at_once = episode("d3", TRAIN_C, "P")
    user = episode("d4", "", "FP", source=USER_BROKEN)
    mix = build_mix("dpo", {}, [fixed, never, at_once, user], CORPUS)
    assert all(e.kind == "dpo" and not e.completion for e in mix.examples)
    pairs = {(e.episode_id, e.origin, e.prompt, e.chosen, e.rejected) for e in mix.examples}
    model_fix = answer_for(fixed.attempts[3].code)
    assert pairs == {
        ("d1", "episode", fixed.attempts[0].prompt, model_fix, answer_for(fixed.attempts[0].code)),
        # no code was extracted: the raw completion is what the model said
        ("d1", "episode", fixed.attempts[1].prompt, model_fix, fixed.attempts[1].completion),
        (
            "d2",
            "reference",
            never.attempts[0].prompt,
            answer_for(CORPUS.get(TRAIN_B).fix),
            answer_for(never.attempts[0].code),
        ),
        (
            "d2",
            "reference",
            never.attempts[1].prompt,
            answer_for(CORPUS.get(TRAIN_B).fix),
            answer_for(never.attempts[1].code),
        ),
        ("d4", "user", user.attempts[0].prompt, answer_for(USER_FIXED), answer_for(user.attempts[0].code)),
    }
    more = build_mix("dpo", {"max_pairs_per_episode": "5"}, [fixed], CORPUS)
    assert [e.prompt for e in sorted(more.examples, key=lambda e: e.prompt)] == sorted(
        a.prompt for a in fixed.attempts[:3]
    )
    one = build_mix("dpo", {"max_pairs_per_episode": "1"}, [fixed], CORPUS)
    assert [e.prompt for e in one.examples] == [fixed.attempts[0].prompt]
    assert build_mix("dpo", {"include_reference": "false"}, [never], CORPUS).excluded_by_reason == {
        "unverified": 1
    }


def test_dpo_skips_pairs_without_a_rejected_answer_or_with_identical_answers():
    ep = episode("d1", TRAIN_A, "EFP")
    empty = dataclasses.replace(ep.attempts[0], completion="  ")
    same = dataclasses.replace(ep.attempts[1], code=ep.attempts[2].code)
    ep = dataclasses.replace(ep, attempts=[empty, same, ep.attempts[2]])
    mix = build_mix("dpo", {}, [ep], CORPUS)
    assert mix.examples == ()
    assert mix.excluded_by_reason == {"empty_answer": 1, "identical_pair": 1}


# --- quality filter ------------------------------------------------------------------------------


def test_identical_prompt_and_target_are_kept_once_and_empty_prompts_dropped():
    eps = [
        episode("t1", TRAIN_C, "FF"),  # never passed: reference fix on the koan's first prompt
        episode("t2", TRAIN_C, "FFF"),  # the same first prompt and the same reference fix
        episode("t3", TRAIN_A, "FP", first_prompt="  \n"),
    ]
    mix = build_mix("naive", {}, eps, CORPUS)
    assert [(e.episode_id, e.origin) for e in mix.examples] == [("t1", "reference")]
    assert mix.excluded_by_reason == {"duplicate": 1, "empty_prompt": 1}


def test_a_model_fix_wins_over_the_identical_reference_fix():
    koan = CORPUS.get(TRAIN_C)
    eps = [episode("t1", TRAIN_C, "FF"), episode("t2", TRAIN_C, "FP", passing_code=koan.fix)]
    mix = build_mix("naive", {}, eps, CORPUS)
    assert [(e.episode_id, e.origin) for e in mix.examples] == [("t2", "episode")]
    assert mix.excluded_by_reason == {"duplicate": 1}


# --- identity and hash ---------------------------------------------------------------------------


def test_example_ids_are_content_addresses():
    example = make_example(koan_id=TRAIN_A, prompt="p", completion="```rust\nfn main() {}\n```")
    canonical = json.dumps(
        ["sft", TRAIN_A, "p", "```rust\nfn main() {}\n```", "", ""], ensure_ascii=False, separators=(",", ":")
    )
    assert example.example_id == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert example.example_id == "7ca5ec0eabda8b7c"  # pinned: a change here re-addresses every mix
    again = make_example(koan_id=TRAIN_A, prompt="p", completion=example.completion, origin="success")
    assert again.example_id == example.example_id  # origin and episode are not content
    pair = make_example(koan_id=TRAIN_A, prompt="p", chosen="a", rejected="b")
    assert pair.kind == "dpo" and example.kind == "sft"
    assert pair.example_id == example_id_for("dpo", TRAIN_A, "p", "", "a", "b")
    with pytest.raises(ValueError, match="^chosen/rejected"):
        make_example(koan_id="", prompt="p", chosen="a")
    with pytest.raises(ValueError, match="^completion"):
        make_example(koan_id="", prompt="p", completion="c", chosen="a", rejected="b")


def test_the_data_hash_is_reproducible_and_follows_parameters_and_examples():
    eps = replay_episodes() + base_episodes()
    mix = build_mix("replay", {}, eps, CORPUS, seed=3)
    ids = [e.example_id for e in mix.examples]
    assert ids == sorted(ids)
    canonical = json.dumps(
        {"recipe": "replay", "parameters": sorted(mix.parameters.items()), "examples": ids},
        separators=(",", ":"),
    )
    assert mix.data_hash == hashlib.sha256(canonical.encode()).hexdigest()

    reordered = list(reversed(eps))
    assert build_mix("replay", {}, reordered, CORPUS, seed=3).data_hash == mix.data_hash
    # Spelling a default explicitly is the same mix.
    assert build_mix("replay", {"replay_ratio": "1"}, eps, CORPUS, seed=3).data_hash == mix.data_hash
    # Giving back the reported figures rebuilds the same mix.
    assert build_mix("replay", mix.parameters, eps, CORPUS, seed=3).data_hash == mix.data_hash

    # Another parameter value changes the hash, even when it selects the same examples.
    koan_eps = [e for e in eps if e.koan_id]
    any_set = build_mix("naive", {}, koan_eps, CORPUS)
    train_set = build_mix("naive", {"koan_set": "train"}, koan_eps, CORPUS)
    assert any_set.examples == train_set.examples
    assert any_set.data_hash != train_set.data_hash
    naive = build_mix("naive", {}, eps, CORPUS)
    assert build_mix("replay", {"replay_ratio": "2"}, eps, CORPUS, seed=3).data_hash != mix.data_hash
    assert build_mix("naive", {"include_reference": "false"}, eps, CORPUS).data_hash != naive.data_hash


def test_the_mix_answers_build_mix_as_the_contract_says():
    mix = build_mix("naive", {}, base_episodes() + [episode("x", FROZEN, "FP")], CORPUS)
    response = build_mix_response(mix)
    assert [m.example_id for m in response.examples] == [e.example_id for e in mix.examples]
    assert response.examples[0].prompt == mix.examples[0].prompt
    assert response.examples[0].origin == mix.examples[0].origin
    assert response.data_hash == mix.data_hash
    assert response.excluded_count == 2
    assert dict(response.excluded_by_reason) == {"evaluation_koan": 1, "unverified": 1}
