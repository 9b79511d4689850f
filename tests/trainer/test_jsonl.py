"""Mixes written as TRL conversational JSON Lines and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nightshift.chat import SYSTEM_PROMPT, answer_for, messages_for
from nightshift.corpus import Corpus
from nightshift_trainer.episodes import AttemptRecord, EpisodeRecord
from nightshift_trainer.examples import make_example
from nightshift_trainer.jsonl import example_from_row, read_examples, read_jsonl, write_jsonl
from nightshift_trainer.recipes import build_mix

CORPUS = Corpus.load(packs_dir=Path(__file__).parent / "no-packs-here")
KOANS = ("borrow-010", "bound-009", "conv-010")


def attempts_for(task_id: str, koan_id: str, outcomes: str) -> list[AttemptRecord]:
    koan = CORPUS.get(koan_id)
    out = []
    for number, outcome in enumerate(outcomes, start=1):
        code = koan.fix + "\n// mine\n" if outcome == "P" else koan.broken
        out.append(
            AttemptRecord(
                number=number,
                # Non-ASCII text must survive the file unchanged.
                prompt=f"Корректируй → {koan_id}, attempt {number} of {task_id}:\n{koan.broken}",
                completion=answer_for(code),
                code=code,
                status="OK" if outcome == "P" else "COMPILE_ERROR",
            )
        )
    return out


def episodes() -> list[EpisodeRecord]:
    plan = [("e1", KOANS[0], "FP"), ("e2", KOANS[1], "FFF"), ("e3", KOANS[2], "P"), ("e4", KOANS[0], "FFP")]
    return [
        EpisodeRecord(
            task_id=task_id,
            koan_id=koan_id,
            koan_set="train",
            adapter_id="none",
            passed="P" in outcomes,
            steps=len(outcomes),
            attempts=attempts_for(task_id, koan_id, outcomes),
        )
        for task_id, koan_id, outcomes in plan
    ]


@pytest.mark.parametrize("recipe", ["naive", "replay", "rehearsal"])
def test_sft_rows_are_prompt_completion_conversations_that_round_trip(recipe, tmp_path):
    mix = build_mix(recipe, {}, episodes(), CORPUS)
    assert len(mix.examples) >= 3
    path = tmp_path / "mix" / "train.jsonl"
    assert write_jsonl(mix, path) == len(mix.examples)

    rows = read_jsonl(path)
    assert len(rows) == len(mix.examples)
    for row, example in zip(rows, mix.examples, strict=True):
        assert set(row) == {"prompt", "completion", "example_id", "koan_id", "origin", "episode_id"}
        assert row["prompt"] == messages_for(example.prompt)
        assert row["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert row["completion"] == [{"role": "assistant", "content": example.completion}]
        assert row["completion"][0]["content"].startswith("```rust\n")
        assert (row["example_id"], row["koan_id"], row["origin"], row["episode_id"]) == (
            example.example_id,
            example.koan_id,
            example.origin,
            example.episode_id,
        )
    assert read_examples(path) == list(mix.examples)
    assert "Корректируй →" in path.read_text(encoding="utf-8")


def test_dpo_rows_are_preference_conversations_that_round_trip(tmp_path):
    mix = build_mix("dpo", {"max_pairs_per_episode": "3"}, episodes(), CORPUS)
    assert {e.kind for e in mix.examples} == {"dpo"}
    path = tmp_path / "dpo.jsonl"
    assert write_jsonl(mix, path) == len(mix.examples) == 6  # e1: 1, e2: 3 (reference), e4: 2
    for row, example in zip(read_jsonl(path), mix.examples, strict=True):
        assert "completion" not in row
        assert row["prompt"] == messages_for(example.prompt)
        assert row["chosen"] == [{"role": "assistant", "content": example.chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": example.rejected}]
        assert row["chosen"] != row["rejected"]
    assert read_examples(path) == list(mix.examples)


def test_writing_replaces_the_file_whole_and_refuses_mixed_kinds(tmp_path):
    path = tmp_path / "mix.jsonl"
    path.write_text("stale\n" * 100)
    sft = build_mix("naive", {}, episodes(), CORPUS)
    assert write_jsonl(sft, path) == len(sft.examples)
    assert len(path.read_text().splitlines()) == len(sft.examples)
    assert [p.name for p in tmp_path.iterdir()] == ["mix.jsonl"]

    pair = make_example(koan_id="", prompt="p", chosen="a", rejected="b")
    with pytest.raises(ValueError, match="^mix: "):
        write_jsonl([*sft.examples, pair], path)
    assert len(read_jsonl(path)) == len(sft.examples)  # the previous file is untouched
    assert write_jsonl([], tmp_path / "empty.jsonl") == 0
    assert read_jsonl(tmp_path / "empty.jsonl") == []


def test_a_row_that_does_not_match_its_example_is_rejected(tmp_path):
    mix = build_mix("naive", {}, episodes(), CORPUS)
    path = tmp_path / "mix.jsonl"
    write_jsonl(mix, path)
    row = read_jsonl(path)[0]
    assert example_from_row(row) == mix.examples[0]

    edited = json.loads(json.dumps(row))
    edited["completion"][0]["content"] += "\n// edited"
    with pytest.raises(ValueError, match="^example_id: "):
        example_from_row(edited)
    foreign = json.loads(json.dumps(row))
    foreign["prompt"][0]["content"] = "You are a helpful assistant."
    with pytest.raises(ValueError, match="^prompt: "):
        example_from_row(foreign)


def test_trl_reads_both_kinds_as_conversational_datasets(tmp_path):
    trl_data = pytest.importorskip("trl.data_utils")
    datasets = pytest.importorskip("datasets")
    sft_path, dpo_path = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    write_jsonl(build_mix("replay", {}, episodes(), CORPUS), sft_path)
    write_jsonl(build_mix("dpo", {}, episodes(), CORPUS), dpo_path)
    for path, columns in ((sft_path, {"prompt", "completion"}), (dpo_path, {"prompt", "chosen", "rejected"})):
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
        assert columns <= set(dataset.column_names)
        assert len(dataset) == len(read_jsonl(path))
        for row in dataset:
            assert trl_data.is_conversational(row)
