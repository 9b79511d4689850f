"""Find the Rust program in a model's answer.

The answer should be one ```rust block holding the whole file, but small models also answer with
several blocks (a snippet, then the file), with no fences at all, with prose around the code, or are
cut off by the token cap. The rules:

- fenced blocks (```rust, ```rs or a bare ```) that hold a Rust item are candidates; the longest one
  that contains `fn` wins, otherwise the last one;
- a block left open at the end of the answer is the program when it is the longest candidate, but only
  when the model stopped by itself and the braces balance; a cut-off answer is refused;
- with no fences, the lines that belong to Rust items are kept and prose lines between them dropped;
- the program's own `#[cfg(test)]` items are removed: the sandbox re-attaches the task's tests;
- what remains must have balanced braces, else it is refused as cut off.

A refusal is an ExtractionError whose message is the one-line reason the loop records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nightshift.rustsrc import code_mask, split_tests

NO_PROGRAM = "no Rust program found in the answer"
CUT_OFF = "the answer was cut off before the program ended"
UNBALANCED = "the program in the answer is incomplete: its braces do not balance"
ONLY_TESTS = "the answer holds only tests, no program"

_FENCE = re.compile(r"^\s*```+\s*([^\s`]*)\s*$")
_RUST_TAGS = {"", "rust", "rs"}
# A line that starts a Rust item (or belongs between items) at the top level of a file.
_ITEM_START = re.compile(
    r"^\s*(?:(?:pub(?:\([\w\s:]+\))?\s+)?(?:(?:const|async|unsafe|extern(?:\s+\"C\")?)\s+)*"
    r"(?:fn|struct|enum|union|trait|impl|mod|type|const|static)\b"
    r"|macro_rules!|(?:pub(?:\([\w\s:]+\))?\s+)?use\s+[\w:{}*,\s]+;"
    r"|extern\s+crate\b|#!?\[)"
)
_COMMENT = re.compile(r"^\s*//")
_HAS_FN = re.compile(r"\bfn\b")


class ExtractionError(ValueError):
    """The answer holds no usable program; str(error) says why in one line."""


@dataclass(frozen=True)
class _Block:
    text: str
    closed: bool


def extract_program(answer: str, *, cut_off: bool = False) -> str:
    """The program in `answer`, without test modules; `cut_off` = the model hit its token cap.

    Raises ExtractionError when there is no program or it is incomplete.
    """
    blocks = [b for b in fenced_blocks(answer) if _looks_like_rust(b.text)]
    if blocks:
        chosen = _choose(blocks)
        if not chosen.closed and cut_off:
            raise ExtractionError(CUT_OFF)
        code = chosen.text
    else:
        code = strip_prose(answer)
    if not _looks_like_rust(code):
        raise ExtractionError(CUT_OFF if cut_off and "```" in answer else NO_PROGRAM)
    if not braces_balance(code):
        raise ExtractionError(CUT_OFF if cut_off else UNBALANCED)
    program, tests = split_tests(code)
    if tests.strip() and not _looks_like_rust(program):
        raise ExtractionError(ONLY_TESTS)
    return program


def fenced_blocks(answer: str) -> list[_Block]:
    """Rust (or untagged) fenced blocks in order; a block still open at the end has closed=False."""
    blocks: list[_Block] = []
    inside: list[str] | None = None
    rust = False
    for line in answer.splitlines():
        fence = _FENCE.match(line)
        if inside is None:
            if fence:
                inside, rust = [], fence.group(1).split(",")[0].lower() in _RUST_TAGS
            continue
        if fence and not fence.group(1):
            if rust:
                blocks.append(_Block("\n".join(inside).strip("\n") + "\n", closed=True))
            inside = None
        else:
            inside.append(line)
    if inside is not None and rust:
        blocks.append(_Block("\n".join(inside).strip("\n") + "\n", closed=False))
    return blocks


def _choose(blocks: list[_Block]) -> _Block:
    with_fn = [b for b in blocks if _HAS_FN.search(b.text)]
    if not with_fn:
        return blocks[-1]
    # max() keeps the first of equals; the later block is the model's final word.
    return max(reversed(with_fn), key=lambda b: len(b.text))


def strip_prose(answer: str) -> str:
    """The Rust items of an answer without fences: prose lines outside any item are dropped."""
    kept: list[str] = []
    depth = 0
    in_item = False
    for line in answer.splitlines():
        if _FENCE.match(line):
            continue
        if depth == 0 and not in_item:
            if _ITEM_START.match(line) or (kept and _COMMENT.match(line)):
                in_item = True
            elif not line.strip() and kept:
                kept.append("")
                continue
            else:
                continue
        kept.append(line)
        depth += _brace_delta(line)
        if depth <= 0:
            depth = 0
            stripped = _code_only(line).rstrip()
            if stripped.endswith(("}", ";")) or (stripped.startswith("#") and stripped.endswith("]")):
                in_item = False
    return "\n".join(kept).strip("\n") + "\n" if kept else ""


def braces_balance(code: str) -> bool:
    """Whether every `{`, `(` and `[` outside comments and literals is closed, in order."""
    mask = code_mask(code)
    stack: list[str] = []
    pairs = {"}": "{", ")": "(", "]": "["}
    for k, c in enumerate(code):
        if not mask[k]:
            continue
        if c in "{([":
            stack.append(c)
        elif c in pairs and (not stack or stack.pop() != pairs[c]):
            return False
    return not stack and not _open_literal(code)


def _open_literal(code: str) -> bool:
    """A string or block comment still open at the end swallows whatever follows it."""
    return not code_mask(code + "\n}")[-1]


def _brace_delta(line: str) -> int:
    code = _code_only(line)
    return code.count("{") - code.count("}")


def _code_only(line: str) -> str:
    mask = code_mask(line)
    return "".join(c if mask[k] else " " for k, c in enumerate(line))


def _looks_like_rust(text: str) -> bool:
    return any(_ITEM_START.match(line) for line in text.splitlines())
