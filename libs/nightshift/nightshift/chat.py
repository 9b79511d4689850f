"""The chat format shared by the agent (which prompts the model) and the trainer (which replays it).

An attempt records only its user message; the system message is this module's constant, so the
trainer rebuilds the exact conversation the model saw. The model answers with the whole program in
one fenced block, which is also the form of every training target.
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are an expert Rust programmer who fixes broken Rust programs.\n"
    "Answer with the whole corrected file in one ```rust fenced code block and nothing else: "
    "no explanation before or after it.\n"
    "Keep every public name and signature (types, fields, functions, methods) exactly as it is: "
    "other code calls them.\n"
    "Do not write tests: the task's tests are added to your program when it is checked."
)


def messages_for(user: str) -> list[dict[str, str]]:
    """The chat messages around a recorded user prompt."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_for(code: str) -> str:
    """A program as the model is asked to answer: one ```rust block holding the whole file."""
    return f"```rust\n{code.strip()}\n```"
