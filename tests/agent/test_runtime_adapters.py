"""The adapter directory and adapter GGUF checks, on tiny GGUF files written here (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip(
    "gguf", reason="the agent's dependencies are not installed (pip install -e services/agent)"
)

from nightshift_agent.adapters import (  # noqa: E402
    NO_ADAPTER,
    AdapterDirectory,
    AdapterNotFoundError,
    CorruptAdapterError,
    IncompatibleAdapterError,
    InvalidAdapterIdError,
    base_model_shapes,
    check_adapter_compatible,
    read_adapter_header,
    validate_adapter_id,
    write_random_lora_gguf,
)

HIDDEN, KV, FFN, LAYERS = 16, 4, 24, 2


def write_tiny_base(path: Path, hidden: int = HIDDEN) -> Path:
    """A 'model' GGUF with the qwen2 weight names and tiny dims; numpy (out, in) is ggml ne (in, out)."""
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.add_type("model")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "<|im_end|>"])
    writer.add_uint32("qwen2.block_count", LAYERS)
    dims = {
        "attn_q": (hidden, hidden),
        "attn_k": (KV, hidden),
        "attn_v": (KV, hidden),
        "attn_output": (hidden, hidden),
        "ffn_gate": (FFN, hidden),
        "ffn_up": (FFN, hidden),
        "ffn_down": (hidden, FFN),
    }
    writer.add_tensor("token_embd.weight", np.zeros((8, hidden), dtype=np.float32))
    for layer in range(LAYERS):
        for name, shape in dims.items():
            writer.add_tensor(f"blk.{layer}.{name}.weight", np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def base(tmp_path) -> Path:
    return write_tiny_base(tmp_path / "base.gguf")


@pytest.fixture
def directory(tmp_path) -> AdapterDirectory:
    return AdapterDirectory(tmp_path / "adapters")


@pytest.mark.parametrize("bad", ["../escape", "a/b", "a\\b", "", "..", ".hidden", "x" * 129, "a..b", "/abs"])
def test_ids_with_path_tricks_are_refused(directory, bad):
    with pytest.raises(InvalidAdapterIdError, match="invalid"):
        directory.path_for(bad)


def test_none_is_the_base_model_and_not_an_adapter_id(directory):
    assert directory.resolve(NO_ADAPTER) is None
    assert directory.resolve("") is None
    with pytest.raises(InvalidAdapterIdError, match="reserved"):
        validate_adapter_id(NO_ADAPTER)


@pytest.mark.parametrize("good", ["a1", "cycle-3.r2", "2026_01_01-champion"])
def test_plain_ids_map_to_one_directory(directory, good):
    assert directory.path_for(good) == directory.root / good / "adapter.gguf"


def test_missing_adapter_names_the_id_and_the_file(directory):
    with pytest.raises(AdapterNotFoundError, match=r"'nope' not found: no file .*nope/adapter\.gguf"):
        directory.resolve("nope")


def test_a_model_gguf_is_not_an_adapter(directory, base):
    target = directory.path_for("model-in-disguise")
    target.parent.mkdir(parents=True)
    target.write_bytes(base.read_bytes())
    with pytest.raises(CorruptAdapterError, match="general.type='model', expected 'adapter'"):
        directory.resolve("model-in-disguise")


def test_a_file_that_is_not_gguf_is_refused(directory):
    target = directory.path_for("garbage")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"definitely not a gguf file")
    with pytest.raises(CorruptAdapterError, match="not a readable GGUF file"):
        directory.resolve("garbage")


def test_an_adapter_that_is_not_lora_is_refused(tmp_path):
    path = tmp_path / "cvec.gguf"
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "cvec")
    writer.add_tensor("direction.1", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CorruptAdapterError, match="adapter.type='cvec', expected 'lora'"):
        read_adapter_header(path)


def test_an_unpaired_lora_tensor_is_refused(tmp_path):
    path = tmp_path / "half.gguf"
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((2, HIDDEN), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CorruptAdapterError, match="no matching blk.0.attn_q.weight.lora_b"):
        read_adapter_header(path)


def test_random_lora_has_the_layout_llama_cpp_expects(directory, base):
    path = write_random_lora_gguf(directory.path_for("r4"), base, rank=4, alpha=8.0, scale=0.1, seed=3)
    info = directory.inspect("r4")
    assert info.path == path and info.adapter_id == "r4"
    assert (info.architecture, info.rank, info.alpha) == ("qwen2", 4, 8.0)
    assert info.layers == list(range(LAYERS))
    assert len(info.tensors) == LAYERS * 7 * 2
    # ggml dims: lora_a ne=(in, rank), lora_b ne=(rank, out), against the base weight's ne=(in, out)
    _, shapes = base_model_shapes(base)
    for target in ("attn_q", "attn_k", "ffn_down"):
        n_in, n_out = shapes[f"blk.1.{target}.weight"]
        assert info.tensors[f"blk.1.{target}.weight.lora_a"] == (n_in, 4)
        assert info.tensors[f"blk.1.{target}.weight.lora_b"] == (4, n_out)
    assert check_adapter_compatible(path, base).rank == 4


def test_random_lora_is_reproducible_and_zero_b_writes_zeros(tmp_path, base):
    one = write_random_lora_gguf(tmp_path / "one.gguf", base, rank=2, seed=5, layers=[1])
    two = write_random_lora_gguf(tmp_path / "two.gguf", base, rank=2, seed=5, layers=[1])
    assert one.read_bytes() == two.read_bytes()
    zero = write_random_lora_gguf(tmp_path / "zero.gguf", base, rank=2, seed=5, layers=[1], zero_b=True)
    tensors = {t.name: t for t in gguf.GGUFReader(zero).tensors}
    assert not np.any(tensors["blk.1.ffn_up.weight.lora_b"].data)
    assert np.any(tensors["blk.1.ffn_up.weight.lora_a"].data)
    assert read_adapter_header(zero).layers == [1]


def test_adapter_for_other_dims_is_incompatible(tmp_path, base):
    other = write_tiny_base(tmp_path / "wider.gguf", hidden=HIDDEN * 2)
    adapter = write_random_lora_gguf(tmp_path / "a.gguf", other, rank=2, layers=[0])
    with pytest.raises(IncompatibleAdapterError, match=r"blk\.0\.\w+\.weight lora_a ne=.* do not fit"):
        check_adapter_compatible(adapter, base)


def test_adapter_for_missing_layers_is_incompatible(tmp_path, base):
    adapter = tmp_path / "deep.gguf"
    writer = gguf.GGUFWriter(adapter, arch="qwen2")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_tensor("blk.9.attn_q.weight.lora_a", np.zeros((2, HIDDEN), dtype=np.float32))
    writer.add_tensor("blk.9.attn_q.weight.lora_b", np.zeros((HIDDEN, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(IncompatibleAdapterError, match="targets blk.9.attn_q.weight, which the base model"):
        check_adapter_compatible(adapter, base)


def test_listing_separates_usable_and_broken_adapters(directory, base):
    write_random_lora_gguf(directory.path_for("good"), base, rank=2, layers=[0])
    broken = directory.path_for("broken")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\0" * 64)
    (directory.root / "empty-dir").mkdir()
    usable, unusable = directory.list()
    assert [info.adapter_id for info in usable] == ["good"]
    assert list(unusable) == ["broken"] and "not a readable GGUF" in unusable["broken"]
    assert directory.ids() == ["broken", "good"]


def test_base_shapes_scan_matches_the_gguf_reader(base):
    architecture, shapes = base_model_shapes(base)
    reader = gguf.GGUFReader(base)
    assert architecture == "qwen2"
    assert shapes == {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
