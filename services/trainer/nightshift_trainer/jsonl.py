"""A mix as a JSON Lines file in TRL's conversational formats, and back.

SFT rows are *prompt-completion*: `prompt` holds the system and user messages the model is served
with (`nightshift.chat.messages_for`), `completion` the one assistant message. DPO rows are
*preference* rows with an explicit prompt: `prompt`, `chosen`, `rejected`. TRL's SFTTrainer and
DPOTrainer read both forms from `datasets.load_dataset("json", data_files=...)`; the extra columns
(`example_id`, `koan_id`, `origin`, `episode_id`) trace every row back to its episode.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from nightshift.chat import messages_for

from nightshift_trainer.examples import Example, make_example
from nightshift_trainer.recipes import Mix

TRACE_FIELDS = ("example_id", "koan_id", "origin", "episode_id")


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def row_for(example: Example) -> dict:
    """One example as a TRL conversational row."""
    row: dict = {"prompt": messages_for(example.prompt)}
    if example.kind == "dpo":
        row["chosen"] = _assistant(example.chosen)
        row["rejected"] = _assistant(example.rejected)
    else:
        row["completion"] = _assistant(example.completion)
    for name in TRACE_FIELDS:
        row[name] = getattr(example, name)
    return row


def write_jsonl(mix: Mix | Iterable[Example], path: Path | str) -> int:
    """Write a mix's examples (all SFT or all DPO) to `path`, replacing it atomically; the row count."""
    examples = mix.examples if isinstance(mix, Mix) else mix
    rows = [row_for(e) for e in examples]
    kinds = {("chosen" in r) for r in rows}
    if len(kinds) > 1:
        raise ValueError("mix: SFT and DPO examples cannot share one file (TRL trains one kind at a time)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def read_jsonl(path: Path | str) -> list[dict]:
    """Every row of a JSON Lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def example_from_row(row: dict) -> Example:
    """The example a row was written from; ValueError when the row does not match its example id."""
    prompt = row["prompt"][-1]["content"]
    if row["prompt"] != messages_for(prompt):
        raise ValueError(f"prompt: row {row.get('example_id', '?')} is not this service's chat format")
    if "chosen" in row:
        example = make_example(
            koan_id=row["koan_id"],
            prompt=prompt,
            chosen=row["chosen"][0]["content"],
            rejected=row["rejected"][0]["content"],
            origin=row["origin"],
            episode_id=row["episode_id"],
        )
    else:
        example = make_example(
            koan_id=row["koan_id"],
            prompt=prompt,
            completion=row["completion"][0]["content"],
            origin=row["origin"],
            episode_id=row["episode_id"],
        )
    if example.example_id != row["example_id"]:
        raise ValueError(f"example_id: row {row['example_id']} holds content of {example.example_id}")
    return example


def read_examples(path: Path | str) -> list[Example]:
    """The examples of a file written by `write_jsonl`, in file order."""
    return [example_from_row(row) for row in read_jsonl(path)]
