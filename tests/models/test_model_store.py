"""The model store: resolution order, verification, joining chunks, refusing partial or corrupt files."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from nightshift.models import (
    MODELS,
    CorruptModelError,
    ModelError,
    ModelNotAvailableError,
    ModelSpec,
    ModelStore,
    _open_part,
)

PARTS = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail-bytes"]
WHOLE = b"".join(PARTS)
SPEC = ModelSpec(
    name="tiny-test-model",
    filename="tiny.gguf",
    size=len(WHOLE),
    sha256=hashlib.sha256(WHOLE).hexdigest(),
    hf_repo="example/Tiny-GGUF",
    chunk_packages=("tiny-part1", "tiny-part2", "tiny-part3"),
    chunk_version="1.0",
)


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    monkeypatch.delenv("NIGHTSHIFT_MODEL_PATH", raising=False)
    return ModelStore(models_dir=tmp_path / "models", hf_cache=tmp_path / "hf", specs={SPEC.name: SPEC})


def write_parts(tmp_path: Path) -> list[Path]:
    paths = []
    for i, data in enumerate(PARTS, 1):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_published_specs_match_the_design():
    small = MODELS["qwen2.5-coder-0.5b-instruct-q4_k_m"]
    assert (small.size, small.sha256[:12], len(small.chunk_packages)) == (491_400_064, "1d9614638d18", 6)
    big = MODELS["qwen2.5-coder-1.5b-instruct-q4_k_m"]
    assert (big.size, big.sha256[:12], len(big.chunk_packages)) == (1_117_320_768, "cc324af070c2", 22)


def test_missing_model_says_how_to_fetch_it(store):
    assert store.locate(SPEC.name).source == "missing"
    with pytest.raises(ModelNotAvailableError, match="nightshift models fetch tiny-test-model"):
        store.resolve(SPEC.name)
    with pytest.raises(ModelError, match="unknown model"):
        store.resolve("gpt-unknown")


def test_join_verifies_and_stores(store, tmp_path):
    path = store.join(SPEC, write_parts(tmp_path))
    assert path.read_bytes() == WHOLE
    assert store.locate(SPEC.name).source == "store"
    assert store.resolve(SPEC.name) == path


def test_join_refuses_wrong_bytes_and_leaves_nothing(store, tmp_path):
    parts = write_parts(tmp_path)
    parts[1].write_bytes(b"x" + PARTS[1][1:])
    with pytest.raises(CorruptModelError, match="refused"):
        store.join(SPEC, parts)
    assert not list((tmp_path / "models").iterdir())


def test_partial_and_corrupt_files_are_refused(store, tmp_path):
    target = tmp_path / "models" / SPEC.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(WHOLE[:-5])
    with pytest.raises(CorruptModelError, match="partial or wrong file"):
        store.resolve(SPEC.name)
    target.write_bytes(WHOLE[:-1] + b"?")
    with pytest.raises(CorruptModelError, match="corrupt, refused"):
        store.resolve(SPEC.name)


def test_verification_is_cached_until_the_file_changes(store, tmp_path):
    path = store.join(SPEC, write_parts(tmp_path))
    assert path.with_name(path.name + ".verified").exists()
    store.resolve(SPEC.name)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: verified again, and refused
    with pytest.raises(CorruptModelError):
        store.resolve(SPEC.name)


def test_resolution_order_explicit_then_hf_cache_then_store(store, tmp_path, monkeypatch):
    store.join(SPEC, write_parts(tmp_path))
    hf = tmp_path / "hf" / "models--example--Tiny-GGUF" / "snapshots" / "abc123"
    hf.mkdir(parents=True)
    (hf / SPEC.filename).write_bytes(WHOLE)
    assert store.locate(SPEC.name).source == "hf-cache"
    explicit = tmp_path / "mine.gguf"
    explicit.write_bytes(WHOLE)
    monkeypatch.setenv("NIGHTSHIFT_MODEL", SPEC.name)
    monkeypatch.setenv("NIGHTSHIFT_MODEL_PATH", str(explicit))
    assert store.locate(SPEC.name).source == "explicit"
    assert store.resolve(SPEC.name) == explicit
    monkeypatch.setenv("NIGHTSHIFT_MODEL_PATH", str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        store.locate(SPEC.name)


def test_chunk_wheel_member_is_read(tmp_path):
    wheel = tmp_path / "tiny_part1-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tiny_part1/__init__.py", "")
        z.writestr("tiny_part1/data/part01.bin", PARTS[0])
    with _open_part(wheel) as stream:
        assert stream.read() == PARTS[0]
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bad/__init__.py", "")
    with pytest.raises(CorruptModelError, match="expected one data"):
        _open_part(bad)


def test_fetch_of_a_missing_package_is_a_clear_error(tmp_path):
    spec = ModelSpec(
        name="ghost",
        filename="ghost.gguf",
        size=1,
        sha256="0" * 64,
        hf_repo="x/y",
        chunk_packages=("nightshift-no-such-package-xyz",),
        chunk_version="9.9.9",
    )
    store = ModelStore(models_dir=tmp_path / "models", hf_cache=tmp_path / "hf", specs={"ghost": spec})
    with pytest.raises(ModelNotAvailableError, match="could not download nightshift-no-such-package-xyz"):
        store.fetch("ghost")


@pytest.mark.model
def test_the_real_small_model_resolves_verified():
    """`make test` fetches it first (`make models`); this proves the store hands out the real file."""
    store = ModelStore()
    location = store.locate("qwen2.5-coder-0.5b-instruct-q4_k_m")
    if location.source == "missing":
        pytest.skip("the 0.5B model is not fetched: run `make models`")
    path = store.resolve("qwen2.5-coder-0.5b-instruct-q4_k_m")
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size == 491_400_064
