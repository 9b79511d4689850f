"""One training example, the unit a mix is made of and the training code reads.

An example keeps the user message exactly as the agent recorded it (`Attempt.prompt`); the
conversation is rebuilt with `nightshift.chat.messages_for(prompt)`, so training sees the very
system prompt the model is served with. Targets are always `nightshift.chat.answer_for(code)`.
An SFT example has a `completion`; a DPO example has `chosen` and `rejected` instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from nightshift.v1 import trainer_pb2

# Where an example's target came from (DESIGN.md, "Training data vocabulary").
ORIGINS = ("episode", "reference", "rehearsal", "user", "success")


@dataclass(frozen=True)
class Example:
    """One prompt with its SFT target or its DPO pair; build it with `make_example`."""

    example_id: str  # stable: sha256 over (kind, koan_id, prompt, completion, chosen, rejected), first 16 hex
    koan_id: str  # "" for a user's own file
    prompt: str  # the user message exactly as the agent recorded it (Attempt.prompt)
    completion: str = ""  # SFT target, always nightshift.chat.answer_for(code)
    chosen: str = ""  # DPO: answer_for(verified fix)
    rejected: str = ""  # DPO: answer_for(failing code), or the raw completion when no code was extracted
    origin: str = ""  # episode | reference | rehearsal | user | success
    episode_id: str = ""  # the task id the example came from

    @property
    def kind(self) -> str:
        """The example's kind: "dpo" for a preference pair, "sft" otherwise."""
        return "dpo" if self.chosen or self.rejected else "sft"


def example_id_for(kind: str, koan_id: str, prompt: str, completion: str, chosen: str, rejected: str) -> str:
    """The content address of an example: equal content gives an equal id, on every machine."""
    # A JSON array keeps field boundaries unambiguous ("ab"+"c" differs from "a"+"bc").
    canonical = json.dumps(
        [kind, koan_id, prompt, completion, chosen, rejected], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def make_example(
    *,
    koan_id: str,
    prompt: str,
    completion: str = "",
    chosen: str = "",
    rejected: str = "",
    origin: str = "",
    episode_id: str = "",
) -> Example:
    """An example with its id computed from its content; SFT xor DPO fields must be set."""
    if completion and (chosen or rejected):
        raise ValueError("completion: an example is either SFT (completion) or DPO (chosen, rejected)")
    if bool(chosen) != bool(rejected):
        raise ValueError("chosen/rejected: a DPO example needs both")
    if origin and origin not in ORIGINS:
        raise ValueError(f"origin: must be one of {ORIGINS}, got {origin!r}")
    kind = "dpo" if chosen else "sft"
    return Example(
        example_id=example_id_for(kind, koan_id, prompt, completion, chosen, rejected),
        koan_id=koan_id,
        prompt=prompt,
        completion=completion,
        chosen=chosen,
        rejected=rejected,
        origin=origin,
        episode_id=episode_id,
    )


def to_proto(example: Example) -> trainer_pb2.MixExample:
    """The example as the `MixExample` of a `BuildMixResponse`."""
    return trainer_pb2.MixExample(
        example_id=example.example_id,
        koan_id=example.koan_id,
        prompt=example.prompt,
        completion=example.completion,
        chosen=example.chosen,
        rejected=example.rejected,
        origin=example.origin,
        episode_id=example.episode_id,
    )
