"""Lexically aware surgery on Rust source: find, strip and split `#[cfg(test)]` items."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
_FN_MAIN = re.compile(r"\bfn\s+main\s*\(")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def code_mask(src: str) -> list[bool]:
    """True for each character that is code (not inside a comment, string or char literal)."""
    mask = [True] * len(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            _blank(mask, i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            _blank(mask, i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (i == 0 or not _ident(src[i - 1])):
            close = '"' + m.group(1)
            j = src.find(close, m.end())
            j = n if j < 0 else j + len(close)
            _blank(mask, i, j)
            i = j
        elif c == '"' or (c == "b" and src.startswith('b"', i) and (i == 0 or not _ident(src[i - 1]))):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            _blank(mask, i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') - not a lifetime ('a) or a label.
            m = re.compile(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'").match(src, i)
            if m:
                _blank(mask, i, m.end())
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return mask


def _ident(c: str) -> bool:
    return c.isalnum() or c == "_"


def _blank(mask: list[bool], start: int, end: int) -> None:
    for k in range(start, min(end, len(mask))):
        mask[k] = False


def _item_end(src: str, mask: list[bool], start: int) -> int:
    """End (exclusive) of the item starting at `start`: its `;` or its matching `}`."""
    depth = 0
    for k in range(start, len(src)):
        if not mask[k]:
            continue
        c = src[k]
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
            if depth == 0 and c == "}":
                return k + 1
        elif c == ";" and depth == 0:
            return k + 1
    return len(src)


def cfg_test_items(src: str) -> list[Span]:
    """Spans of every top-level-or-nested item annotated `#[cfg(test)]`, attribute included."""
    mask = code_mask(src)
    spans: list[Span] = []
    pos = 0
    while m := _CFG_TEST.search(src, pos):
        if not mask[m.start()]:
            pos = m.end()
            continue
        end = _item_end(src, mask, m.end())
        spans.append(Span(m.start(), end))
        pos = end
    return spans


def split_tests(src: str) -> tuple[str, str]:
    """Split a file into (program without its #[cfg(test)] items, those items)."""
    spans = cfg_test_items(src)
    program, tests, last = [], [], 0
    for span in spans:
        program.append(src[last : span.start])
        tests.append(src[span.start : span.end])
        last = span.end
    program.append(src[last:])
    body = re.sub(r"\n{3,}", "\n\n", "".join(program)).strip("\n").rstrip() + "\n"
    return body, "\n\n".join(tests).strip() + ("\n" if tests else "")


def has_main(src: str) -> bool:
    """Whether the program defines `fn main` outside comments and strings."""
    mask = code_mask(src)
    return any(mask[m.start()] for m in _FN_MAIN.finditer(src))
