"""The koan corpus: loading koans and packs, sets and splits, and the leakage function.

Koans live as one TOML file each under `<corpus>/koans/<family>/<id>.toml` (see corpus/README.md).
Every service reads them from NIGHTSHIFT_CORPUS_DIR; imported packs live in `<data-dir>/packs/<name>`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nightshift.config import data_dir

SPLITS = ("train", "frozen", "heldout")
MODES = ("test", "build")
# Sets every corpus has; imported packs add their own names.
BUILTIN_SETS = ("train", "frozen", "heldout", "smoke", "all")


class CorpusError(ValueError):
    """A koan file or pack that cannot be used, with the path and the reason."""


@dataclass(frozen=True)
class Decoy:
    description: str
    source: str


@dataclass(frozen=True)
class Provenance:
    kind: str  # hand-written, variant, imported
    parent: str = ""  # the koan this one was derived from
    transformation: str = ""  # e.g. rename, retype, reorder, wrap, collection


@dataclass(frozen=True)
class Koan:
    id: str
    family: str
    difficulty: int
    title: str
    split: str  # train, frozen, heldout, or the name of an imported pack
    broken: str
    tests: str
    fix: str
    hint: str
    expected_codes: tuple[str, ...]
    expected_failing_tests: tuple[str, ...]
    mode: str = "test"
    edition: str = "2021"
    smoke: bool = False
    decoys: tuple[Decoy, ...] = ()
    provenance: Provenance = field(default_factory=lambda: Provenance("hand-written"))
    path: Path | None = None

    @property
    def sets(self) -> tuple[str, ...]:
        return (self.split, "smoke") if self.smoke else (self.split,)


def default_corpus_dir() -> Path:
    env = os.environ.get("NIGHTSHIFT_CORPUS_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    # A source checkout: <repo>/corpus next to libs/.
    return Path(__file__).resolve().parents[3] / "corpus"


def default_packs_dir() -> Path:
    return data_dir() / "packs"


def _text(data: dict, key: str, path: Path, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise CorpusError(f"{path}: `{key}` must be a string")
    if required and not value.strip():
        raise CorpusError(f"{path}: `{key}` is required")
    return value


def parse_koan(path: Path, data: dict, split_override: str | None = None) -> Koan:
    """Build a Koan from one parsed TOML document, checking every field."""
    koan_id = _text(data, "id", path)
    if path.stem != koan_id and split_override is None:
        raise CorpusError(f"{path}: file name must be the koan id {koan_id!r}")
    family = _text(data, "family", path)
    split = split_override or data.get("split", "train")
    if split_override is None and split not in SPLITS:
        raise CorpusError(f"{path}: `split` must be one of {SPLITS}, got {split!r}")
    mode = data.get("mode", "test")
    if mode not in MODES:
        raise CorpusError(f"{path}: `mode` must be one of {MODES}, got {mode!r}")
    expected = data.get("expected", {})
    codes = tuple(expected.get("codes", ()))
    failing = tuple(expected.get("failing_tests", ()))
    if split_override is None and not codes and not failing:
        raise CorpusError(f"{path}: [expected] needs `codes` or `failing_tests`")
    for code in codes:
        if not re.fullmatch(r"E\d{4}", code):
            raise CorpusError(f"{path}: expected code {code!r} is not a rustc error code like E0382")
    prov = data.get("provenance", {"kind": "hand-written"})
    decoys = tuple(
        Decoy(description=_text(d, "description", path), source=_text(d, "source", path))
        for d in data.get("decoys", ())
    )
    return Koan(
        id=koan_id,
        family=family,
        difficulty=int(data.get("difficulty", 1)),
        title=_text(data, "title", path, required=False),
        split=split,
        broken=_text(data, "broken", path),
        tests=_text(data, "tests", path, required=False),
        fix=_text(data, "fix", path, required=split_override is None),
        hint=_text(data, "hint", path, required=False),
        expected_codes=codes,
        expected_failing_tests=failing,
        mode=mode,
        edition=str(data.get("edition", "2021")),
        smoke=bool(data.get("smoke", False)),
        decoys=decoys,
        provenance=Provenance(
            kind=prov.get("kind", "hand-written"),
            parent=prov.get("parent", ""),
            transformation=prov.get("transformation", ""),
        ),
        path=path,
    )


def load_koan_file(path: Path) -> Koan:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CorpusError(f"{path}: not valid TOML: {exc}") from None
    return parse_koan(path, data)


class Corpus:
    """All koans of a corpus directory plus the imported packs, addressable by id and by set."""

    def __init__(self, koans: Iterable[Koan]):
        self._by_id: dict[str, Koan] = {}
        for koan in koans:
            if koan.id in self._by_id:
                raise CorpusError(
                    f"duplicate koan id {koan.id!r} ({koan.path} and {self._by_id[koan.id].path})"
                )
            self._by_id[koan.id] = koan
        self._evaluation_index: LeakageIndex | None = None

    @classmethod
    def load(cls, corpus_dir: Path | None = None, packs_dir: Path | None = None) -> Corpus:
        corpus_dir = corpus_dir or default_corpus_dir()
        packs_dir = packs_dir or default_packs_dir()
        koans = [load_koan_file(p) for p in sorted((corpus_dir / "koans").rglob("*.toml"))]
        if packs_dir.is_dir():
            from nightshift.packs import load_pack

            for pack in sorted(p for p in packs_dir.iterdir() if p.is_dir()):
                koans.extend(load_pack(pack))
        return cls(koans)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, koan_id: str) -> Koan:
        try:
            return self._by_id[koan_id]
        except KeyError:
            raise KeyError(f"no koan {koan_id!r}") from None

    def set_names(self) -> list[str]:
        packs = sorted({k.split for k in self._by_id.values()} - set(SPLITS))
        return [*BUILTIN_SETS, *packs]

    def koans(self, set_name: str = "all", family: str | None = None) -> list[Koan]:
        """Koans of a set (train, frozen, heldout, smoke, all = the corpus without packs, or a pack)."""
        if set_name not in self.set_names():
            raise KeyError(f"unknown set {set_name!r} (known: {', '.join(self.set_names())})")
        if set_name == "all":
            chosen = [k for k in self._by_id.values() if k.split in SPLITS]
        else:
            chosen = [k for k in self._by_id.values() if set_name in k.sets]
        if family:
            chosen = [k for k in chosen if k.family == family]
        return sorted(chosen, key=lambda k: k.id)

    def families(self) -> list[str]:
        return sorted({k.family for k in self._by_id.values() if k.split in SPLITS})

    def is_evaluation_text(self, text: str) -> bool:
        """Whether `text` is, or nearly is, a program of an evaluation koan (frozen, held-out, or a pack).

        The trainer asks this of every example; the leakage check asks it of every train koan.
        """
        if self._evaluation_index is None:
            evaluation = [k for k in self._by_id.values() if k.split != "train"]
            self._evaluation_index = LeakageIndex(evaluation)
        return self._evaluation_index.matches(text) is not None


# --- leakage -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""r\#*"|b?"(?:\\.|[^"\\])*"|b?'(?:\\.|[^'\\])'|'[A-Za-z_]\w*|[A-Za-z_]\w*|\d[\w.]*|::|->|=>|[^\s\w]"""
)
KEYWORDS = frozenset(
    """as async await break const continue crate dyn else enum extern false fn for if impl in let loop
    match mod move mut pub ref return self Self static struct super trait true type unsafe use where
    while i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize f32 f64 bool char str String Vec Option
    Some None Result Ok Err Box Rc RefCell Arc Mutex HashMap HashSet BTreeMap println print format
    assert assert_eq assert_ne panic test cfg derive Debug Clone Copy PartialEq Eq Hash Default impl
    iter into_iter map filter collect""".split()  # noqa: SIM905
)


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", " ", src)


def normalise_tokens(src: str) -> list[str]:
    """Tokens with identifiers and literals canonicalised: `ID`, `NUM`, `STR`, `CHR`, `LT`."""
    out = []
    for tok in _TOKEN.findall(_strip_comments(src)):
        if tok.startswith(('"', 'b"', "r#", 'r"')):
            out.append("STR")
        elif tok.startswith(("'", "b'")) and tok.endswith("'") and len(tok) > 2:
            out.append("CHR")
        elif tok.startswith("'"):
            out.append("LT")
        elif tok[0].isdigit():
            out.append("NUM")
        elif tok[0].isalpha() or tok[0] == "_":
            out.append(tok if tok in KEYWORDS else "ID")
        else:
            out.append(tok)
    return out


def normalised_fingerprint(src: str) -> str:
    return hashlib.sha256(" ".join(normalise_tokens(src)).encode()).hexdigest()


def _shingles(tokens: list[str], k: int = 8) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + k]) for i in range(max(1, len(tokens) - k + 1))}


class LeakageIndex:
    """Finds the evaluation koan a text copies, exactly or nearly, after normalisation."""

    # Jaccard similarity of 8-token shingles above which two programs count as near-duplicates.
    NEAR_DUPLICATE = 0.8

    def __init__(self, koans: Iterable[Koan]):
        self._exact: dict[str, str] = {}
        self._shingles: list[tuple[str, set]] = []
        for koan in koans:
            for text in (koan.broken, koan.fix):
                if not text:
                    continue
                tokens = normalise_tokens(text)
                self._exact[hashlib.sha256(" ".join(tokens).encode()).hexdigest()] = koan.id
                self._shingles.append((koan.id, _shingles(tokens)))

    def matches(self, text: str) -> str | None:
        """The id of the evaluation koan `text` duplicates, or None."""
        tokens = normalise_tokens(text)
        exact = self._exact.get(hashlib.sha256(" ".join(tokens).encode()).hexdigest())
        if exact:
            return exact
        mine = _shingles(tokens)
        for koan_id, theirs in self._shingles:
            union = len(mine | theirs)
            if union and len(mine & theirs) / union >= self.NEAR_DUPLICATE:
                return koan_id
        return None
