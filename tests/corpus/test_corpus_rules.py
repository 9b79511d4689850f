"""The corpus as data: coverage, splits, the frozen lock, and the leakage function."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from nightshift.corpus import KEYWORDS, Corpus, CorpusError, LeakageIndex, load_koan_file, normalise_tokens

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT / "corpus"
FROZEN_LOCK = CORPUS_DIR / "frozen-v1.lock"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.load(CORPUS_DIR, packs_dir=ROOT / "no-packs")


def test_coverage(corpus):
    koans = corpus.koans("all")
    per_family = Counter(k.family for k in koans)
    assert len(koans) >= 200
    assert len(per_family) >= 12
    assert min(per_family.values()) >= 10, per_family


def test_frozen_set_is_stratified_and_large_enough(corpus):
    frozen = corpus.koans("frozen")
    assert len(frozen) >= 60
    assert set(Counter(k.family for k in frozen)) == set(corpus.families())


def test_heldout_koans_are_variants_of_frozen_koans(corpus):
    frozen_ids = {k.id for k in corpus.koans("frozen")}
    for koan in corpus.koans("heldout"):
        assert koan.provenance.kind == "variant", koan.id
        assert koan.provenance.parent in frozen_ids, koan.id
        parent = corpus.get(koan.provenance.parent)
        assert parent.family == koan.family
        assert koan.broken != parent.broken


def test_smoke_set_is_small_easy_and_trainable(corpus):
    smoke = corpus.koans("smoke")
    assert 6 <= len(smoke) <= 8
    assert all(k.split == "train" and k.difficulty == 1 for k in smoke)


def test_every_koan_is_complete(corpus):
    for koan in corpus.koans("all"):
        assert koan.tests.strip() and "#[cfg(test)]" in koan.tests, koan.id
        assert koan.decoys, koan.id
        for text in (koan.broken, koan.fix, *(d.source for d in koan.decoys)):
            assert "#[cfg(test)]" not in text, koan.id
        lines = len(koan.broken.strip().splitlines())
        assert 10 <= lines <= 80, (koan.id, lines)


def frozen_digest(koan) -> str:
    return hashlib.sha256("\0".join([koan.broken, koan.tests, koan.fix]).encode()).hexdigest()


def test_frozen_set_never_changes(corpus):
    """frozen-v1 is fixed forever: changing it needs a new set name."""
    locked = dict(line.split() for line in FROZEN_LOCK.read_text().splitlines() if line and line[0] != "#")
    current = {k.id: frozen_digest(k) for k in corpus.koans("frozen")}
    assert current == locked


def test_no_evaluation_koan_leaks_into_the_train_pool(corpus):
    for koan in corpus.koans("train"):
        assert not corpus.is_evaluation_text(koan.broken), koan.id
        assert not corpus.is_evaluation_text(koan.fix), koan.id


def test_leakage_function_sees_through_renames_and_literals(corpus):
    koan = corpus.koans("frozen")[0]

    def rename(match: re.Match) -> str:
        word = match.group(0)
        return word if word in KEYWORDS else f"renamed_{word}"

    disguised = re.sub(r"\b[A-Za-z_]\w*\b", rename, koan.fix)
    disguised = re.sub(r"\b\d+\b", "7", disguised)
    assert disguised != koan.fix
    assert corpus.is_evaluation_text(disguised)
    assert corpus.is_evaluation_text(koan.broken.replace("(", " ( "))
    assert not corpus.is_evaluation_text('fn main() { println!("unrelated"); }')


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (
            "fn total(v: &[u32]) -> u32 { v.iter().sum() }",
            "fn sum_all(xs: &[u32]) -> u32 { xs.iter().sum() }",
            True,
        ),
        ('let s = "hello"; let n = 42;', 'let t = "bye"; let m = 7;', True),
        ("// comment\nfn f() {}", "fn g() {} /* other */", True),
        ("fn f(x: u32) -> u32 { x + 1 }", "fn f(x: u32) -> u32 { x * 1 }", False),
    ],
)
def test_normalised_tokens(a, b, same):
    assert (normalise_tokens(a) == normalise_tokens(b)) is same


def test_leakage_index_near_duplicates(corpus):
    frozen = corpus.koans("frozen")
    index = LeakageIndex(frozen[:1])
    original = frozen[0].fix
    extra_line = original.rstrip() + "\n\npub fn helper_added() -> u8 {\n    3\n}\n"
    assert index.matches(extra_line) == frozen[0].id
    assert index.matches(frozen[1].fix) is None
    assert index.matches("fn other() -> u8 { 3 }") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'id = "x-1"\nfamily = "f"\nbroken = "fn main() {}"\nfix = "fn main() {}"',
            "needs `codes` or `failing_tests`",
        ),
        ('id = "x-1"\nfamily = "f"\nfix = "a"\nexpected = { codes = ["E0382"] }', "`broken` is required"),
        (
            'id = "x-1"\nfamily = "f"\nbroken = "a"\nfix = "a"\nsplit = "test"\n'
            'expected = { codes = ["E0382"] }',
            "`split` must be one of",
        ),
        (
            'id = "x-1"\nfamily = "f"\nbroken = "a"\nfix = "a"\nexpected = { codes = ["0382"] }',
            "not a rustc error code",
        ),
        (
            'id = "other"\nfamily = "f"\nbroken = "a"\nfix = "a"\nexpected = { codes = ["E0382"] }',
            "file name must be",
        ),
        ("id = ", "not valid TOML"),
    ],
)
def test_bad_koan_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "x-1.toml"
    path.write_text(text)
    with pytest.raises(CorpusError, match=message):
        load_koan_file(path)


def test_duplicate_ids_are_refused(tmp_path):
    for family in ("a", "b"):
        (tmp_path / "koans" / family).mkdir(parents=True)
        (tmp_path / "koans" / family / "x-1.toml").write_text(
            f'id = "x-1"\nfamily = "{family}"\nbroken = "a"\nfix = "a"\nexpected = {{ codes = ["E0382"] }}'
        )
    with pytest.raises(CorpusError, match="duplicate koan id"):
        Corpus.load(tmp_path, packs_dir=tmp_path / "packs")
