"""PEFT -> GGUF LoRA export (tiny model, fast) and the llama.cpp vs transformers+PEFT verification
(the real 0.5B: slow, model; run under `flock /tmp/nightshift-model.lock`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from nightshift.lora_gguf import (  # noqa: E402
    LORA_TARGETS,
    LoraPair,
    LoraShapeError,
    check_pairs_fit,
    read_lora_gguf,
    read_tensor_shapes,
    write_lora_gguf,
)
from nightshift.models import ModelStore  # noqa: E402
from nightshift_trainer.export import (  # noqa: E402
    PEFT_TO_GGUF,
    ExportError,
    export_gguf_lora,
    gguf_weight_name,
    peft_pairs,
)
from nightshift_trainer.presets import TARGET_MODULES, resolve_preset  # noqa: E402
from nightshift_trainer.training import train_adapter  # noqa: E402
from nightshift_trainer.verify import (  # noqa: E402
    EFFECT_FACTOR,
    FIXED_PROMPT,
    TOLERANCE,
    compare_deltas,
    reference_logits,
    verify_adapter,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from tiny_qwen import (  # noqa: E402
    HIDDEN,
    LAYERS,
    corpus_examples,
    sft_examples,
    write_tiny_base_gguf,
    write_tiny_model,
)

# --- name mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", ("blk.0.attn_q.weight", "a")),
        ("base_model.model.model.layers.7.self_attn.k_proj.lora_B.weight", ("blk.7.attn_k.weight", "b")),
        ("base_model.model.model.layers.12.self_attn.v_proj.lora_A.weight", ("blk.12.attn_v.weight", "a")),
        ("base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight", ("blk.3.attn_output.weight", "b")),
        ("base_model.model.model.layers.23.mlp.gate_proj.lora_A.weight", ("blk.23.ffn_gate.weight", "a")),
        ("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight", ("blk.1.ffn_up.weight", "b")),
        ("base_model.model.model.layers.5.mlp.down_proj.lora_A.weight", ("blk.5.ffn_down.weight", "a")),
    ],
)
def test_peft_names_map_to_the_gguf_names_llama_cpp_reads(key, expected):
    assert gguf_weight_name(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
        "base_model.model.model.layers.0.self_attn.q_proj.weight",
        "base_model.model.model.layers.0.mlp.experts.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.bias",
    ],
)
def test_anything_but_block_projections_is_refused_by_name(key):
    with pytest.raises(ExportError, match="not a LoRA weight of a block projection"):
        gguf_weight_name(key)


def test_every_preset_module_has_a_gguf_target():
    assert tuple(PEFT_TO_GGUF) == TARGET_MODULES
    assert tuple(PEFT_TO_GGUF.values()) == LORA_TARGETS


def test_a_lone_half_of_a_pair_is_refused():
    a = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(ExportError, match="blk.0.attn_q.weight: the PEFT adapter has no lora_B"):
        peft_pairs({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a})
    with pytest.raises(ExportError, match="holds no LoRA weights"):
        peft_pairs({})


# --- the shared GGUF writer ---------------------------------------------------------------------


def pair(weight: str, rank: int = 2, n_in: int = 4, n_out: int = 6, seed: int = 0) -> LoraPair:
    rng = np.random.default_rng(seed)
    return LoraPair(weight, rng.normal(size=(rank, n_in)).astype(np.float32), rng.normal(size=(n_out, rank)))


def test_written_pairs_read_back_with_ggml_dims(tmp_path):
    pairs = [pair("blk.0.attn_q.weight", seed=1), pair("blk.1.ffn_down.weight", n_in=6, n_out=4, seed=2)]
    path = write_lora_gguf(tmp_path / "a.gguf", pairs, alpha=4.0, architecture="qwen2")
    back = read_lora_gguf(path)
    assert (back.architecture, back.alpha, back.rank) == ("qwen2", 4.0, 2)
    for original in pairs:
        np.testing.assert_array_equal(back.pairs[original.weight].lora_a, original.lora_a)
        np.testing.assert_array_equal(back.pairs[original.weight].lora_b, original.lora_b.astype(np.float32))
    dims = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(path).tensors}
    assert dims["blk.0.attn_q.weight.lora_a"] == (4, 2) and dims["blk.0.attn_q.weight.lora_b"] == (2, 6)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "at least one LoRA pair"),
        ([pair("blk.0.attn_q.weight"), pair("blk.0.attn_q.weight")], "one LoRA pair only"),
        ([pair("blk.0.attn_q.weight", rank=2), pair("blk.0.attn_k.weight", rank=3)], "share one rank"),
        ([LoraPair("blk.0.attn_q.weight", np.zeros((2, 4)), np.zeros((6, 3)))], "disagree on the rank"),
    ],
)
def test_the_writer_refuses_inconsistent_pairs(tmp_path, pairs, message):
    with pytest.raises(LoraShapeError, match=message):
        write_lora_gguf(tmp_path / "bad.gguf", pairs, alpha=1.0, architecture="qwen2")
    assert not (tmp_path / "bad.gguf").exists()


def test_pairs_are_checked_against_the_base_dims():
    shapes = {"blk.0.attn_q.weight": (4, 6)}  # ne (in, out)
    check_pairs_fit([pair("blk.0.attn_q.weight")], shapes)
    with pytest.raises(LoraShapeError, match=r"in=6 -> out=4, but the base model's weight has ne=\(4, 6\)"):
        check_pairs_fit([pair("blk.0.attn_q.weight", n_in=6, n_out=4)], shapes)
    with pytest.raises(LoraShapeError, match="blk.1.attn_q.weight: the base model has no such tensor"):
        check_pairs_fit([pair("blk.1.attn_q.weight")], shapes)


# --- export of a trained tiny adapter -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory) -> Path:
    """A PEFT adapter on all seven projections, trained two steps on the tiny model."""
    root = tmp_path_factory.mktemp("tiny-export")
    model = write_tiny_model(root / "model")
    preset = resolve_preset(
        "cpu-lora",
        {
            "dtype": "float32",
            "max_steps": "2",
            "learning_rate": "0.05",
            "warmup_steps": "0",
            "target_modules": ",".join(TARGET_MODULES),
            "lora_r": "4",
            "lora_alpha": "8",
            "max_seq_len": "256",
        },
    )
    return train_adapter(
        model_path=model, examples=sft_examples(), preset=preset, work_dir=root / "work"
    ).peft_dir


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return write_tiny_base_gguf(tmp_path_factory.mktemp("tiny-base") / "base.gguf")


def copy_adapter(source: Path, target: Path, config_changes: dict | None = None, drop: str = "") -> Path:
    target.mkdir(parents=True)
    config = json.loads((source / "adapter_config.json").read_text())
    config.update(config_changes or {})
    (target / "adapter_config.json").write_text(json.dumps(config))
    tensors = {
        k: v for k, v in load_file(source / "adapter_model.safetensors").items() if drop not in k or not drop
    }
    save_file(tensors, target / "adapter_model.safetensors")
    return target


def test_a_trained_adapter_exports_tensor_for_tensor(tiny_adapter, tiny_base, tmp_path):
    out = export_gguf_lora(tiny_adapter, tmp_path / "adapter.gguf", base_model_path=tiny_base)
    exported = read_lora_gguf(out)
    assert (exported.architecture, exported.alpha, exported.rank) == ("qwen2", 8.0, 4)
    targets = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert set(exported.pairs) == {f"blk.{layer}.{t}.weight" for layer in range(LAYERS) for t in targets}
    peft = load_file(tiny_adapter / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.1.mlp.down_proj"
    np.testing.assert_array_equal(
        exported.pairs["blk.1.ffn_down.weight"].lora_a, peft[f"{prefix}.lora_A.weight"]
    )
    np.testing.assert_array_equal(
        exported.pairs["blk.1.ffn_down.weight"].lora_b, peft[f"{prefix}.lora_B.weight"]
    )
    assert np.abs(exported.pairs["blk.1.ffn_down.weight"].lora_b).max() > 0  # trained, not the zero init
    # ggml dims against the base weight's ne (in, out): lora_a ne (in, r), lora_b ne (r, out)
    _, base = read_tensor_shapes(tiny_base)
    dims = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(out).tensors}
    for weight in exported.pairs:
        n_in, n_out = base[weight]
        assert dims[weight + ".lora_a"] == (n_in, 4) and dims[weight + ".lora_b"] == (4, n_out)
    assert not any(name.startswith(("token_embd.", "output.")) for name in dims)


def test_a_base_with_other_dims_is_refused(tiny_adapter, tmp_path):
    wider = write_tiny_base_gguf(tmp_path / "wider.gguf", hidden=HIDDEN * 2)
    with pytest.raises(
        ExportError, match=r"does not fit the base model: blk\.0\.attn_q\.weight: .* ne=\(64, 64\)"
    ):
        export_gguf_lora(tiny_adapter, tmp_path / "a.gguf", base_model_path=wider)
    assert not (tmp_path / "a.gguf").exists()


def test_a_base_without_the_layers_is_refused(tiny_adapter, tmp_path):
    shallow = write_tiny_base_gguf(tmp_path / "shallow.gguf", layers=1)
    with pytest.raises(ExportError, match="blk.1.attn_q.weight: shallow.gguf has no such tensor"):
        export_gguf_lora(tiny_adapter, tmp_path / "a.gguf", base_model_path=shallow)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"use_rslora": True}, "use_rslora: rsLoRA scales by alpha/sqrt"),
        ({"use_dora": True}, "use_dora"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias: LoRA biases"),
        ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"),
        ({"alpha_pattern": {"q_proj": 8}}, "alpha_pattern"),
        ({"peft_type": "IA3"}, "peft_type: 'IA3' is not LORA"),
        ({"lora_alpha": 0}, "lora_alpha: expected a positive number"),
        ({"r": 8}, "r: adapter_config.json says r=8, the tensors have ranks"),
    ],
)
def test_settings_gguf_cannot_express_are_refused(tiny_adapter, tiny_base, tmp_path, changes, message):
    changed = copy_adapter(tiny_adapter, tmp_path / "changed", changes)
    with pytest.raises(ExportError, match=message):
        export_gguf_lora(changed, tmp_path / "a.gguf", base_model_path=tiny_base)


def test_an_adapter_that_is_not_there_is_refused(tiny_adapter, tiny_base, tmp_path):
    with pytest.raises(ExportError, match="is not a PEFT adapter directory: adapter_config.json is missing"):
        export_gguf_lora(tmp_path, tmp_path / "a.gguf", base_model_path=tiny_base)
    lopsided = copy_adapter(tiny_adapter, tmp_path / "lopsided", drop="layers.1.self_attn.v_proj.lora_B")
    with pytest.raises(ExportError, match="blk.1.attn_v.weight: the PEFT adapter has no lora_B"):
        export_gguf_lora(lopsided, tmp_path / "a.gguf", base_model_path=tiny_base)


# --- the comparison rule --------------------------------------------------------------------------


def logits(seed: int, shape=(4, 50)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, size=shape)


def noisy(array: np.ndarray, seed: int, amplitude: float = 0.3) -> np.ndarray:
    return array + np.random.default_rng(seed).uniform(-amplitude, amplitude, size=array.shape)


def test_an_applied_adapter_passes_within_the_noise():
    base = logits(0)
    delta = np.zeros_like(base)
    delta[:, 7] = 5.0
    result = compare_deltas(base, base + delta, noisy(base, 1), noisy(base + delta, 2))
    assert result.passed, result.detail
    assert result.reference_effect == pytest.approx(5.0)
    assert result.max_abs_diff <= 0.6 + 1e-9 and result.tolerance == pytest.approx(TOLERANCE + 0.5)
    assert 0 < result.base_noise <= 0.3 and result.positions == 4


def test_an_adapter_llama_cpp_ignores_fails():
    base = logits(0)
    delta = np.full_like(base, 0.0)
    delta[2, 3] = -4.0
    ignored = noisy(base, 3)
    result = compare_deltas(base, base + delta, ignored, ignored)
    assert not result.passed
    assert result.adapter_effect == 0.0 and result.max_abs_diff == pytest.approx(4.0)
    assert "llama.cpp is not applying it" in result.detail


def test_an_adapter_applied_at_twice_its_scale_fails():
    base = logits(0)
    delta = logits(5) / 3 * 2  # effects of a few logits
    result = compare_deltas(base, base + delta, base, base + 2 * delta)
    assert not result.passed and "more than the tolerance" in result.detail


def test_an_adapter_too_weak_to_tell_from_noise_fails():
    base = logits(0)
    result = compare_deltas(base, base + 0.5, noisy(base, 1), noisy(base + 0.5, 2))
    assert not result.passed and "too weak to verify" in result.detail
    assert EFFECT_FACTOR * TOLERANCE > 0.5


def test_runs_of_different_shapes_are_an_error():
    with pytest.raises(ValueError, match="disagree on the shape"):
        compare_deltas(logits(0), logits(1), logits(2), logits(3, shape=(3, 50)))


# --- the real model -------------------------------------------------------------------------------


def real_model_path() -> Path:
    location = ModelStore().locate("qwen2.5-coder-0.5b-instruct-q4_k_m")
    if location.path is None:
        pytest.skip("the 0.5B model is not fetched (make models)")
    return location.path


def write_random_peft(directory: Path, model_path: Path, *, scale: float, seed: int = 0) -> Path:
    """A PEFT adapter (r 8, alpha 16, q/k/v/o) with N(0, scale^2) A and B, shaped from the base GGUF."""
    from peft import LoraConfig

    modules = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
    _, shapes = read_tensor_shapes(model_path)
    layers = sorted({int(name.split(".")[1]) for name in shapes if name.startswith("blk.")})
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in layers:
        for module, target in modules.items():
            n_in, n_out = shapes[f"blk.{layer}.{target}.weight"]
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(8, n_in, generator=generator) * scale
            tensors[f"{key}.lora_B.weight"] = torch.randn(n_out, 8, generator=generator) * scale
    directory.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=8, lora_alpha=16, target_modules=list(modules), task_type="CAUSAL_LM").save_pretrained(
        directory
    )
    save_file(tensors, directory / "adapter_model.safetensors")
    return directory


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory):
    """(model, PEFT dir, exported GGUF, transformers reference) for a random adapter on the real 0.5B."""
    model_path = real_model_path()
    root = tmp_path_factory.mktemp("real-random")
    peft_dir = write_random_peft(root / "peft", model_path, scale=0.02)
    exported = export_gguf_lora(peft_dir, root / "adapter.gguf", base_model_path=model_path)
    return model_path, peft_dir, exported, reference_logits(model_path, peft_dir, FIXED_PROMPT)


def report(label: str, result) -> None:
    print(
        f"\n{label}: passed={result.passed} max|D_llama-D_hf|={result.max_abs_diff:.3f} "
        f"tolerance={result.tolerance:.3f} effect llama={result.adapter_effect:.3f} "
        f"hf={result.reference_effect:.3f} base noise={result.base_noise:.3f}"
    )


@pytest.mark.model
@pytest.mark.slow
def test_an_exported_adapter_matches_transformers_in_llama_cpp(random_adapter):
    model_path, peft_dir, exported, reference = random_adapter
    result = verify_adapter(
        model_path=model_path, peft_dir=peft_dir, gguf_adapter_path=exported, reference=reference
    )
    report("random s=0.02 q/k/v/o", result)
    assert result.passed, result.detail
    assert result.prompt == FIXED_PROMPT and result.positions == 16
    assert result.reference_effect >= EFFECT_FACTOR * TOLERANCE


@pytest.mark.model
@pytest.mark.slow
def test_lora_b_zeroed_in_the_gguf_only_fails(random_adapter, tmp_path):
    model_path, peft_dir, exported, reference = random_adapter
    pairs = read_lora_gguf(exported)
    zeroed = write_lora_gguf(
        tmp_path / "zeroed.gguf",
        [LoraPair(p.weight, p.lora_a, np.zeros_like(p.lora_b)) for p in pairs.pairs.values()],
        alpha=pairs.alpha,
        architecture="qwen2",
    )
    result = verify_adapter(
        model_path=model_path, peft_dir=peft_dir, gguf_adapter_path=zeroed, reference=reference
    )
    report("lora_b zeroed", result)
    assert not result.passed
    assert result.adapter_effect == 0.0 and "llama.cpp is not applying it" in result.detail


@pytest.mark.model
@pytest.mark.slow
def test_tensors_llama_cpp_cannot_place_fail(random_adapter, tmp_path):
    """llama.cpp refuses the file; llama-cpp-python would carry on without the adapter."""
    model_path, peft_dir, exported, reference = random_adapter
    pairs = read_lora_gguf(exported)
    renamed = write_lora_gguf(
        tmp_path / "renamed.gguf",
        [
            LoraPair(p.weight.replace(".weight", ".weight_renamed"), p.lora_a, p.lora_b)
            for p in pairs.pairs.values()
        ],
        alpha=pairs.alpha,
        architecture="qwen2",
    )
    result = verify_adapter(
        model_path=model_path, peft_dir=peft_dir, gguf_adapter_path=renamed, reference=reference
    )
    report("renamed tensors", result)
    assert not result.passed and "llama.cpp refused to load the adapter" in result.detail


@pytest.mark.model
@pytest.mark.slow
def test_an_adapter_exported_at_twice_its_alpha_fails(random_adapter, tmp_path):
    model_path, peft_dir, exported, reference = random_adapter
    pairs = read_lora_gguf(exported)
    doubled = write_lora_gguf(
        tmp_path / "doubled.gguf", pairs.pairs.values(), alpha=2 * pairs.alpha, architecture="qwen2"
    )
    result = verify_adapter(
        model_path=model_path, peft_dir=peft_dir, gguf_adapter_path=doubled, reference=reference
    )
    report("alpha doubled", result)
    assert not result.passed and "more than the tolerance" in result.detail


@pytest.mark.model
@pytest.mark.slow
def test_a_trained_adapter_exports_and_verifies(tmp_path):
    """The job's path end to end on the real model: train (cpu-lora, 20 short steps), export, verify."""
    model_path = real_model_path()
    examples = corpus_examples(20)
    preset = resolve_preset(
        "cpu-lora", {"max_steps": "20", "gradient_accumulation": "1", "warmup_steps": "2"}, cuda=False
    )
    trained = train_adapter(
        model_path=model_path, examples=examples, preset=preset, work_dir=tmp_path / "work"
    )
    exported = export_gguf_lora(trained.peft_dir, tmp_path / "adapter.gguf", base_model_path=model_path)
    result = verify_adapter(model_path=model_path, peft_dir=trained.peft_dir, gguf_adapter_path=exported)
    print(
        f"\ntrained 20 steps: {trained.seconds_per_step:.2f} s/step, "
        f"{trained.tokens_per_second:.0f} tokens/s, final loss {trained.final_loss:.3f}, "
        f"peak RSS {trained.peak_rss_bytes / 2**30:.2f} GiB"
    )
    report("trained cpu-lora", result)
    assert result.passed, result.detail
    assert math.isfinite(result.max_abs_diff)
