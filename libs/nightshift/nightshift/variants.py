"""Semantics-preserving transformations of a koan: the variant generator's candidates.

Each transformation is applied the same way to the broken program, the fix and every decoy, and never
touches a name the koan's tests use, so the tests still decide. Candidates are only proposals: the
caller keeps those that validate in the Sandbox.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import replace

from nightshift.corpus import KEYWORDS, Decoy, Koan, Provenance
from nightshift.rustsrc import code_mask

# Names that look like user names but belong to Rust or std (renaming them breaks the program).
RESERVED = KEYWORDS | frozenset(
    """main new len push pop get insert remove contains iter iter_mut into_iter next map filter fold sum
    collect clone to_string to_owned as_str as_ref unwrap expect ok err is_some is_none is_empty min
    max sort sort_by sort_by_key entry or_insert or_default and_then unwrap_or unwrap_or_else from into
    borrow borrow_mut lock join spawn send recv fmt write writeln Display Formatter Ord PartialOrd Hash
    Iterator Item Output Add Sub Mul Div Neg Error self Self super crate drop tests test first last
    chars bytes split trim parse keys values retain extend any all count enumerate zip rev take skip
    find position windows chunks abs pow sqrt default partial_cmp cmp eq ne""".split()  # noqa: SIM905
)
_DECLARED = re.compile(
    r"\b(?:let(?:\s+mut)?|fn|struct|enum|const|static|type|trait)\s+([A-Za-z_]\w*)"
    r"|[(,]\s*(?:mut\s+)?([a-z_]\w*)\s*:(?!:)"
    r"|\|\s*(?:mut\s+)?([a-z_]\w*)\s*[|,:]"
)
_IDENT = re.compile(r"\b[A-Za-z_]\w*\b")
_INT_SWAPS = {"i32": "i64", "i64": "i32", "u32": "u64", "u64": "u32", "f32": "f64", "f64": "f32"}
_WORDS = [
    "alpha",
    "delta",
    "kappa",
    "omega",
    "sigma",
    "theta",
    "lumen",
    "ember",
    "quill",
    "vault",
    "cedar",
    "prism",
    "orbit",
    "pixel",
    "rune",
    "slate",
    "tally",
    "umbra",
    "vista",
    "willow",
]


def _code_identifiers(src: str) -> list[re.Match]:
    mask = code_mask(src)
    return [m for m in _IDENT.finditer(src) if mask[m.start()]]


def _substitute(src: str, mapping: dict[str, str]) -> str:
    """Replace whole identifiers (outside strings and comments) by `mapping`."""
    out, last = [], 0
    for m in _code_identifiers(src):
        if m.group(0) in mapping:
            out.append(src[last : m.start()])
            out.append(mapping[m.group(0)])
            last = m.end()
    out.append(src[last:])
    return "".join(out)


def _map_all(koan: Koan, fn: Callable[[str], str]) -> Koan:
    return replace(
        koan,
        broken=fn(koan.broken),
        fix=fn(koan.fix),
        decoys=tuple(Decoy(d.description, fn(d.source)) for d in koan.decoys),
    )


def declared_names(koan: Koan) -> list[str]:
    """Names the program declares that its tests never mention: safe to rename."""
    mask = code_mask(koan.fix)
    names = set()
    for m in _DECLARED.finditer(koan.fix):
        if mask[m.start()]:
            names.update(g for g in m.groups() if g)
    in_tests = {m.group(0) for m in _IDENT.finditer(koan.tests)}
    return sorted(n for n in names - in_tests - RESERVED if len(n) > 1 and not n.startswith("_"))


def rename(koan: Koan, rng: random.Random) -> Koan | None:
    names = declared_names(koan)
    if not names:
        return None
    chosen = rng.sample(names, k=max(1, (len(names) + 1) // 2))
    taken = {m.group(0) for m in _IDENT.finditer(koan.fix + koan.broken + koan.tests)}
    mapping = {}
    for name in chosen:
        word = rng.choice(_WORDS)
        if name.isupper():
            new = f"{word.upper()}_{name}"
        elif name[0].isupper():
            new = word.capitalize() + name
        else:
            new = f"{word}_{name}"
        if new not in taken:
            mapping[name] = new
            taken.add(new)
    return _map_all(koan, lambda s: _substitute(s, mapping)) if mapping else None


def retype(koan: Koan, rng: random.Random) -> Koan | None:
    used = {m.group(0) for m in _code_identifiers(koan.fix)}
    in_tests = {m.group(0) for m in _IDENT.finditer(koan.tests)}
    options = [t for t in _INT_SWAPS if t in used and t not in in_tests and _INT_SWAPS[t] not in used]
    if not options:
        return None
    old = rng.choice(options)
    return _map_all(koan, lambda s: _substitute(s, {old: _INT_SWAPS[old]}))


def _top_level_items(src: str) -> list[str] | None:
    """Split a program into top-level items (attributes and doc comments stay with their item)."""
    mask = code_mask(src)
    items, depth, start = [], 0, 0
    for i, c in enumerate(src):
        if not mask[i]:
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                items.append(src[start : i + 1].strip("\n"))
                start = i + 1
        elif c == ";" and depth == 0:
            items.append(src[start : i + 1].strip("\n"))
            start = i + 1
    if src[start:].strip() or depth != 0:
        return None
    return [item for item in items if item.strip()]


def reorder(koan: Koan, rng: random.Random) -> Koan | None:
    """Permute the top-level items (keeping `use` declarations first) the same way in every program."""

    def keyed(src: str) -> list[tuple[str, str]] | None:
        items = _top_level_items(src)
        if items is None:
            return None
        return [(re.sub(r"\s+", " ", item.split("{")[0].split("(")[0]).strip(), item) for item in items]

    base = keyed(koan.fix)
    if not base or len(base) < 3:
        return None
    keys = [k for k, _ in base if not k.startswith("use ")]
    shuffled = keys[:]
    for _ in range(5):
        rng.shuffle(shuffled)
        if shuffled != keys:
            break
    else:
        return None
    rank = {k: i for i, k in enumerate(shuffled)}

    def permute(src: str) -> str:
        items = keyed(src)
        if items is None:
            return src
        uses = [item for k, item in items if k.startswith("use ")]
        rest = sorted(
            (item for item in items if not item[0].startswith("use ")),
            key=lambda ki: rank.get(ki[0], len(rank)),
        )
        return "\n\n".join(uses + [item for _, item in rest]) + "\n"

    return _map_all(koan, permute)


TRANSFORMATIONS: dict[str, Callable[[Koan, random.Random], Koan | None]] = {
    "rename": rename,
    "retype": retype,
    "reorder": reorder,
}


def propose_variants(koan: Koan, n: int, seed: int = 0, split: str | None = None) -> list[Koan]:
    """Up to `n` distinct candidate variants of `koan`, each a combination of transformations.

    Variants of a frozen koan are held-out koans; variants of a train koan stay in the train pool.
    """
    rng = random.Random(f"{koan.id}:{seed}")
    split = split or ("heldout" if koan.split in ("frozen", "heldout") else "train")
    combos = [
        ["rename"],
        ["rename", "reorder"],
        ["rename", "retype"],
        ["retype", "reorder"],
        ["rename", "retype", "reorder"],
        ["reorder"],
        ["retype"],
    ]
    seen = {koan.fix}
    out: list[Koan] = []
    for attempt in range(n * 6):
        combo = combos[attempt % len(combos)]
        candidate: Koan | None = koan
        applied = []
        for name in combo:
            result = TRANSFORMATIONS[name](candidate, rng)
            if result is not None:
                candidate, applied = result, [*applied, name]
        if not applied or candidate.fix in seen:
            continue
        seen.add(candidate.fix)
        out.append(
            replace(
                candidate,
                id=f"{koan.id}-v{len(out) + 1}",
                split=split,
                smoke=False,
                path=None,
                provenance=Provenance(kind="variant", parent=koan.id, transformation="+".join(applied)),
            )
        )
        if len(out) == n:
            break
    return out


def koan_to_toml(koan: Koan) -> str:
    """Serialise a koan in the corpus format (corpus/README.md)."""

    def lit(text: str) -> str:
        if "'''" in text:
            raise ValueError("a program containing ''' cannot be written as a TOML literal string")
        return "'''\n" + text.strip("\n") + "\n'''"

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    expected = (
        "{ codes = [" + ", ".join(q(c) for c in koan.expected_codes) + "] }"
        if koan.expected_codes
        else "{ failing_tests = [" + ", ".join(q(t) for t in koan.expected_failing_tests) + "] }"
    )
    p = koan.provenance
    lines = [
        f"id = {q(koan.id)}",
        f"family = {q(koan.family)}",
        f"title = {q(koan.title)}",
        f"difficulty = {koan.difficulty}",
        f"split = {q(koan.split)}",
        f"mode = {q(koan.mode)}",
        f"hint = {q(koan.hint)}",
        f"expected = {expected}",
        f"provenance = {{ kind = {q(p.kind)}, parent = {q(p.parent)}, "
        f"transformation = {q(p.transformation)} }}",
        "",
        f"broken = {lit(koan.broken)}",
        "",
        f"tests = {lit(koan.tests)}",
        "",
        f"fix = {lit(koan.fix)}",
    ]
    for d in koan.decoys:
        lines += ["", "[[decoys]]", f"description = {q(d.description)}", f"source = {lit(d.source)}"]
    return "\n".join(lines) + "\n"
