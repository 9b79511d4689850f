"""Training presets: the named sets, override parsing, the round trip through the job event, qlora's guard."""

from __future__ import annotations

import dataclasses

import pytest
from nightshift_trainer.presets import (
    PRESETS,
    Preset,
    PresetError,
    auto_dtype,
    check_runnable,
    cpu_has_bf16,
    default_preset_name,
    describe_fields,
    resolve_preset,
)


def test_the_four_presets_carry_their_documented_settings():
    cpu = PRESETS["cpu-lora"]
    assert (cpu.method, cpu.dtype, cpu.lora_r, cpu.lora_alpha, cpu.learning_rate, cpu.max_steps) == (
        "sft",
        "auto",
        8,
        16.0,
        1e-4,
        100,
    )
    assert cpu.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj") and not cpu.quantize_4bit
    naive = PRESETS["naive"]
    assert (naive.lora_r, naive.lora_alpha, naive.learning_rate, naive.max_steps, naive.batch_size) == (
        16,
        32.0,
        2e-4,
        500,
        4,
    )
    assert PRESETS["qlora"].quantize_4bit
    assert PRESETS["dpo"].method == "dpo" and PRESETS["dpo"].dpo_beta > 0


def test_every_field_is_documented():
    helps = describe_fields()
    assert set(helps) == {f.name for f in dataclasses.fields(Preset)}
    assert all(text for text in helps.values())


@pytest.mark.parametrize("name", ["cpu-lora", "naive", "dpo"])
def test_as_fields_round_trips_through_resolve(name):
    preset = resolve_preset(name, {})  # what a job records: `auto` already resolved
    assert preset.dtype in ("bfloat16", "float32")
    fields = preset.as_fields()
    assert all(isinstance(value, str) for value in fields.values())
    assert resolve_preset(name, fields) == preset


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"lora_r": "16"}, "lora_r", 16),
        ({"learning_rate": "3e-5"}, "learning_rate", 3e-5),
        ({"lora_alpha": "8"}, "lora_alpha", 8.0),
        ({"target_modules": "q_proj, v_proj"}, "target_modules", ("q_proj", "v_proj")),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing", True),
        ({"quantize_4bit": "false"}, "quantize_4bit", False),
        ({"dtype": "float32"}, "dtype", "float32"),
        ({"l2_to_previous": "0.5"}, "l2_to_previous", 0.5),
        ({"max_steps": " 7 "}, "max_steps", 7),
    ],
)
def test_overrides_are_parsed_by_field_type(overrides, field, value):
    preset = resolve_preset("cpu-lora", overrides)
    assert getattr(preset, field) == value
    unchanged = {f.name for f in dataclasses.fields(Preset)} - {field}
    default = resolve_preset("cpu-lora", {})
    assert all(getattr(preset, name) == getattr(default, name) for name in unchanged)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"lora_rank": "8"}, "lora_rank", "lora_rank: unknown field"),
        ({"lora_r": "eight"}, "lora_r", "lora_r: expected an integer, got 'eight'"),
        ({"lora_r": "0"}, "lora_r", "lora_r: must be at least 1"),
        ({"learning_rate": "fast"}, "learning_rate", "learning_rate: expected a number"),
        ({"learning_rate": "nan"}, "learning_rate", "learning_rate: expected a finite number"),
        ({"learning_rate": "-1e-4"}, "learning_rate", "learning_rate: must be positive"),
        ({"lora_dropout": "1.5"}, "lora_dropout", r"lora_dropout: must be in \[0, 1\)"),
        ({"quantize_4bit": "maybe"}, "quantize_4bit", "quantize_4bit: expected true or false"),
        ({"method": "ppo"}, "method", "method: must be one of sft, dpo"),
        ({"dtype": "int8"}, "dtype", "dtype: must be one of"),
        ({"target_modules": "lm_head"}, "target_modules", "lm_head cannot be exported to GGUF"),
        ({"target_modules": "q_proj,q_proj"}, "target_modules", "named twice"),
        ({"target_modules": ""}, "target_modules", "must name at least one module"),
        ({"max_seq_len": "8"}, "max_seq_len", "max_seq_len: must be at least 16"),
    ],
)
def test_bad_overrides_name_the_field(overrides, field, message):
    with pytest.raises(PresetError, match=message) as caught:
        resolve_preset("cpu-lora", overrides)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_unknown_preset_is_refused_with_the_known_names():
    with pytest.raises(
        PresetError, match=r"preset: unknown preset 'turbo' \(known: auto, cpu-lora"
    ) as caught:
        resolve_preset("turbo", {})
    assert caught.value.field == "preset"


def test_auto_picks_qlora_only_where_cuda_is():
    assert default_preset_name(cuda=False) == "cpu-lora"
    assert default_preset_name(cuda=True) == "qlora"
    cpu = dataclasses.replace(PRESETS["cpu-lora"], dtype=auto_dtype(cuda=False))
    assert resolve_preset("auto", {}, cuda=False) == cpu
    assert resolve_preset("", None, cuda=False) == cpu


def test_auto_dtype_is_bf16_only_where_the_hardware_computes_it(tmp_path):
    assert auto_dtype(cuda=True, bf16_cpu=False) == "bfloat16"
    assert auto_dtype(cuda=False, bf16_cpu=True) == "bfloat16"
    assert auto_dtype(cuda=False, bf16_cpu=False) == "float32"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_has_bf16(cpuinfo)
    assert not cpu_has_bf16(tmp_path / "missing")
    # this machine: whatever it has, a job never trains with `auto` and an explicit dtype is kept
    assert resolve_preset("cpu-lora", {}).dtype == auto_dtype()
    assert resolve_preset("cpu-lora", {"dtype": "bfloat16"}).dtype == "bfloat16"


def test_qlora_without_cuda_is_refused_with_the_reason():
    with pytest.raises(PresetError, match="needs a CUDA GPU; this machine has none") as caught:
        resolve_preset("qlora", {}, cuda=False)
    assert caught.value.field == "quantize_4bit"
    with pytest.raises(PresetError, match="quantize_4bit"):
        resolve_preset("cpu-lora", {"quantize_4bit": "true"}, cuda=False)
    check_runnable(PRESETS["cpu-lora"], cuda=False)  # nothing to refuse


def test_qlora_is_refused_on_this_machine_unless_it_can_run():
    """Here there is no GPU: the real check (torch.cuda and bitsandbytes) must refuse it."""
    from nightshift_trainer.presets import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PresetError, match="CUDA"):
        resolve_preset("qlora", {})


def test_a_preset_with_a_bad_value_cannot_be_built():
    with pytest.raises(PresetError, match="batch_size"):
        Preset(batch_size=0)
