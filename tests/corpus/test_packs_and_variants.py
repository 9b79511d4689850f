"""Imported packs and the variant generator."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from nightshift.corpus import Corpus, CorpusError, load_koan_file
from nightshift.packs import import_pack, load_pack
from nightshift.variants import koan_to_toml, propose_variants, rename, reorder, retype
from nightshift_sandbox.server import start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.load(ROOT / "corpus", packs_dir=ROOT / "no-packs")


@pytest.fixture
def exercises(tmp_path) -> Path:
    src = tmp_path / "exercises"
    src.mkdir()
    (src / "moved.rs").write_text(
        'fn main() {\n    let s = String::new();\n    let t = s;\n    println!("{s}{t}");\n}\n'
    )
    (src / "wrong.rs").write_text(
        "pub fn two() -> i32 {\n    3\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n"
        "    #[test]\n    fn is_two() {\n        assert_eq!(two(), 2);\n    }\n}\n"
    )
    (src / "manifest.toml").write_text(
        'order = ["wrong.rs", "moved.rs"]\n[files."moved.rs"]\nmode = "build"\nhint = "borrow it"\n'
    )
    return src


def test_import_and_load_a_pack(exercises, tmp_path):
    target = import_pack(exercises, tmp_path / "packs", "mini", edition="2024")
    koans = load_pack(target)
    assert [k.id for k in koans] == ["mini:wrong", "mini:moved"]
    wrong, moved = koans
    assert wrong.split == "mini" and wrong.edition == "2024" and wrong.mode == "test"
    assert "#[cfg(test)]" in wrong.tests and "#[cfg(test)]" not in wrong.broken
    assert moved.mode == "build" and moved.hint == "borrow it" and not moved.fix
    corpus = Corpus.load(ROOT / "corpus", packs_dir=tmp_path / "packs")
    assert "mini" in corpus.set_names()
    assert [k.id for k in corpus.koans("mini")] == ["mini:moved", "mini:wrong"]
    assert all(k.split != "mini" for k in corpus.koans("train"))
    # Pack programs are evaluation material: the trainer's question says so.
    assert corpus.is_evaluation_text(moved.broken)


@pytest.mark.parametrize(
    ("name", "message"),
    [("frozen", "not a built-in set name"), ("Bad Name", "lowercase"), ("all", "not a built-in set name")],
)
def test_bad_pack_names_are_refused(exercises, tmp_path, name, message):
    with pytest.raises(CorpusError, match=message):
        import_pack(exercises, tmp_path / "packs", name)


def test_pack_errors(exercises, tmp_path):
    import_pack(exercises, tmp_path / "packs", "mini")
    with pytest.raises(CorpusError, match="already exists"):
        import_pack(exercises, tmp_path / "packs", "mini")
    import_pack(exercises, tmp_path / "packs", "mini", force=True)
    with pytest.raises(CorpusError, match="no .rs files"):
        import_pack(tmp_path / "packs" / "mini" / "..", tmp_path / "elsewhere", "empty")
    (exercises / "bad.rs").write_bytes(b"\xff\xfe")
    with pytest.raises(CorpusError, match="not UTF-8"):
        import_pack(exercises, tmp_path / "packs", "other")


def test_transformations_keep_test_names_and_change_the_programs(corpus):
    koan = corpus.get("clos-001")
    rng = random.Random(1)
    renamed = rename(koan, rng)
    assert renamed is not None and renamed.fix != koan.fix and renamed.tests == koan.tests
    for name in ("discount", "sale_prices", "Product"):  # the tests call these
        assert name in renamed.fix
    retyped = retype(koan, random.Random(2))
    assert retyped is not None and "u64" in retyped.fix and "u64" in retyped.broken
    reordered = reorder(koan, random.Random(3))
    before = [block.strip() for block in koan.fix.strip().split("\n\n")]
    after = [block.strip() for block in reordered.fix.strip().split("\n\n")]
    assert sorted(after) == sorted(before) and after != before


def test_variants_of_frozen_koans_are_heldout_and_of_train_koans_train(corpus):
    frozen_variants = propose_variants(corpus.get("clos-001"), 3)
    assert frozen_variants and all(v.split == "heldout" for v in frozen_variants)
    assert all(v.provenance.kind == "variant" and v.provenance.parent == "clos-001" for v in frozen_variants)
    assert len({v.fix for v in frozen_variants}) == len(frozen_variants)
    train = corpus.koans("train")[0]
    assert all(v.split == "train" and not v.smoke for v in propose_variants(train, 2))


def test_toml_round_trip(corpus, tmp_path):
    koan = corpus.get("match-001")
    variant = replace(koan, id="match-001-v9")
    path = tmp_path / "match-001-v9.toml"
    path.write_text(koan_to_toml(variant))
    loaded = load_koan_file(path)
    for field in ("id", "family", "split", "broken", "tests", "fix", "expected_codes", "decoys", "hint"):
        assert (
            getattr(loaded, field) == getattr(variant, field)
            or field == "broken"
            and (loaded.broken.strip() == variant.broken.strip())
        ), field


async def test_generate_keeps_only_valid_variants(nats_server, sandbox_config, tmp_path):
    corpus_dir = tmp_path / "corpus"
    (corpus_dir / "koans" / "closures").mkdir(parents=True)
    source = ROOT / "corpus" / "koans" / "closures" / "clos-009.toml"
    (corpus_dir / "koans" / "closures" / "clos-009.toml").write_text(source.read_text())
    service = await start(replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url))
    try:
        env = {
            **os.environ,
            "NIGHTSHIFT_SANDBOX_ADDR": f"127.0.0.1:{service.port}",
            "NIGHTSHIFT_CORPUS_DIR": str(corpus_dir),
            "NIGHTSHIFT_DATA_DIR": str(tmp_path / "data"),
        }
        import asyncio

        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "nightshift_cli", "koans", "generate", "--from", "clos-009", "--n", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        written = sorted(p.name for p in (corpus_dir / "koans" / "closures").glob("clos-009-v*.toml"))
        assert written == ["clos-009-v1.toml", "clos-009-v2.toml"]
        listed = subprocess.run(
            [sys.executable, "-m", "nightshift_cli", "koans", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ids = {k["id"]: k["set"] for k in json.loads(listed.stdout)}
        assert ids == {"clos-009": "train", "clos-009-v1": "train", "clos-009-v2": "train"}
        validated = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "nightshift_cli", "koans", "validate", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert validated.returncode == 0, validated.stdout
    finally:
        await service.stop(grace=5)
