"""Training presets: named, documented hyper-parameter sets, and how a job's overrides change them.

A job names a preset and may override any field with a string (`lora_r=16`, `target_modules=q_proj,v_proj`);
`resolve_preset` parses each string by the field's type and refuses an unknown field or a bad value with
an error naming the field. `Preset.as_fields()` is the inverse: every field as a string, recorded in the
TrainingJobRequested event, so `resolve_preset(p.name, p.as_fields()) == p` rebuilds the job's preset.

Presets:
- `cpu-lora`: LoRA on the CPU (r 8, alpha 16, attention projections, lr 1e-4, 100 steps).
- `qlora`: the same adapter on a 4-bit NF4 base (bitsandbytes), CUDA only. `auto` picks it over
  `cpu-lora` when CUDA is available. It cannot run on a machine without CUDA or bitsandbytes, and says so.
- `naive`: the published experiment's settings (r 16, alpha 32, lr 2e-4, 500 steps, batch 4): the
  baseline that forgot, kept to reproduce it.
- `dpo`: direct preference optimisation on prompt/chosen/rejected pairs; the policy is the LoRA adapter
  and the reference is the same network without the adapter's update (no second model in memory).

The base weights' dtype is `auto` unless a job says otherwise: bfloat16 on a CUDA device and on a CPU
with bf16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo), float32 on any other CPU, where
torch emulates bf16 arithmetic and a step costs several times more. `resolve_preset` replaces `auto`
by the dtype it stands for on this machine, so a job records what it trained with.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

METHODS = ("sft", "dpo")
DTYPES = ("auto", "bfloat16", "float32", "float16")
# CPU flags of native bf16 arithmetic; without one, torch computes bf16 matmuls the slow way.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# PEFT module names of the qwen2 projections a LoRA adapter may target (the GGUF export maps each one).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
AUTO = "auto"


class PresetError(ValueError):
    """A preset name or an override that cannot be used; `field` names what was wrong."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Preset:
    """One training configuration; every field has a `help` text in its metadata."""

    name: str = _doc("the preset's name, recorded with the job", "cpu-lora")
    method: str = _doc("sft (supervised, loss on the completion only) or dpo (preference pairs)", "sft")
    lora_r: int = _doc("LoRA rank", 8)
    lora_alpha: float = _doc("LoRA alpha; the update is scaled by alpha / r", 16.0)
    lora_dropout: float = _doc("dropout on the LoRA input during training", 0.05)
    target_modules: tuple[str, ...] = _doc("projections that get a LoRA pair", ATTENTION_MODULES)
    learning_rate: float = _doc("peak AdamW learning rate", 1e-4)
    max_steps: int = _doc("optimizer steps to train", 100)
    batch_size: int = _doc("examples per forward pass", 1)
    gradient_accumulation: int = _doc("forward passes per optimizer step", 4)
    max_seq_len: int = _doc("tokens per example; longer ones lose the end of their completion", 1024)
    dtype: str = _doc(
        "dtype of the base weights: auto, bfloat16, float32 or float16 (LoRA weights stay float32); "
        "auto is bfloat16 on CUDA and on CPUs with bf16 instructions, float32 elsewhere",
        AUTO,
    )
    quantize_4bit: bool = _doc("load the base as bitsandbytes NF4 (QLoRA); CUDA only", False)
    warmup_steps: int = _doc("steps of linear learning-rate warm-up before the linear decay to 0", 10)
    weight_decay: float = _doc("AdamW weight decay on the LoRA weights", 0.0)
    l2_to_previous: float = _doc(
        "0 = off; else the weight of an L2 penalty on the distance between this adapter's update "
        "(alpha/r * B A) and the previous adapter's, summed over modules (EWC-style anchoring)",
        0.0,
    )
    checkpoint_every: int = _doc("save a resumable checkpoint every this many steps", 20)
    dpo_beta: float = _doc("DPO temperature beta (method dpo)", 0.1)
    seed: int = _doc("seed of the LoRA initialisation, the data order and the dropout masks", 0)
    log_every: int = _doc("report progress every this many steps", 5)
    max_grad_norm: float = _doc("clip the gradient norm to this (0 = no clipping)", 1.0)
    gradient_checkpointing: bool = _doc("recompute activations in the backward pass to save memory", False)

    def __post_init__(self) -> None:
        check_preset(self)

    def as_fields(self) -> dict[str, str]:
        """Every field as the string `resolve_preset` parses back to the same value."""
        return {f.name: _format(getattr(self, f.name)) for f in fields(self)}

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation


def check_preset(preset: Preset) -> None:
    """Raise PresetError naming the first field whose value is out of range."""
    rules: list[tuple[str, bool, str]] = [
        ("name", bool(preset.name), "must not be empty"),
        ("method", preset.method in METHODS, f"must be one of {', '.join(METHODS)}"),
        ("lora_r", preset.lora_r >= 1, "must be at least 1"),
        ("lora_alpha", preset.lora_alpha > 0, "must be positive"),
        ("lora_dropout", 0.0 <= preset.lora_dropout < 1.0, "must be in [0, 1)"),
        ("target_modules", bool(preset.target_modules), "must name at least one module"),
        ("learning_rate", preset.learning_rate > 0, "must be positive"),
        ("max_steps", preset.max_steps >= 1, "must be at least 1"),
        ("batch_size", preset.batch_size >= 1, "must be at least 1"),
        ("gradient_accumulation", preset.gradient_accumulation >= 1, "must be at least 1"),
        ("max_seq_len", preset.max_seq_len >= 16, "must be at least 16"),
        ("dtype", preset.dtype in DTYPES, f"must be one of {', '.join(DTYPES)}"),
        ("warmup_steps", preset.warmup_steps >= 0, "must be at least 0"),
        ("weight_decay", preset.weight_decay >= 0, "must be at least 0"),
        ("l2_to_previous", preset.l2_to_previous >= 0, "must be at least 0"),
        ("checkpoint_every", preset.checkpoint_every >= 1, "must be at least 1"),
        ("dpo_beta", preset.dpo_beta > 0, "must be positive"),
        ("seed", preset.seed >= 0, "must be at least 0"),
        ("log_every", preset.log_every >= 1, "must be at least 1"),
        ("max_grad_norm", preset.max_grad_norm >= 0, "must be at least 0"),
    ]
    for name, ok, message in rules:
        if not ok:
            raise PresetError(name, f"{name}: {message}, got {_format(getattr(preset, name))!r}")
    unknown = [m for m in preset.target_modules if m not in TARGET_MODULES]
    if unknown:
        raise PresetError(
            "target_modules",
            f"target_modules: {', '.join(unknown)} cannot be exported to GGUF "
            f"(use {', '.join(TARGET_MODULES)})",
        )
    if len(set(preset.target_modules)) != len(preset.target_modules):
        raise PresetError("target_modules", "target_modules: a module is named twice")
    for name in ("lora_alpha", "lora_dropout", "learning_rate", "weight_decay", "l2_to_previous", "dpo_beta"):
        if not math.isfinite(getattr(preset, name)):
            raise PresetError(name, f"{name}: must be a finite number")


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(name="cpu-lora"),
        Preset(name="qlora", quantize_4bit=True, batch_size=4, gradient_accumulation=1),
        Preset(
            name="naive",
            lora_r=16,
            lora_alpha=32.0,
            learning_rate=2e-4,
            max_steps=500,
            batch_size=4,
            gradient_accumulation=1,
            warmup_steps=0,
            checkpoint_every=50,
            log_every=10,
            gradient_checkpointing=True,
        ),
        Preset(name="dpo", method="dpo", learning_rate=5e-5, max_steps=100, dpo_beta=0.1),
    )
}


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is not installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def default_preset_name(*, cuda: bool | None = None) -> str:
    """The SFT preset `auto` stands for: qlora where CUDA is available, cpu-lora otherwise."""
    return "qlora" if (cuda_available() if cuda is None else cuda) else "cpu-lora"


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU lists a native bf16 instruction set (False when that cannot be read)."""
    try:
        flags = set(cpuinfo.read_text(errors="replace").split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def auto_dtype(*, cuda: bool | None = None, bf16_cpu: bool | None = None) -> str:
    """The dtype `auto` stands for on this machine: bfloat16 where it is native, float32 elsewhere."""
    if cuda_available() if cuda is None else cuda:
        return "bfloat16"
    return "bfloat16" if (cpu_has_bf16() if bf16_cpu is None else bf16_cpu) else "float32"


def check_runnable(preset: Preset, *, cuda: bool | None = None) -> None:
    """Raise PresetError when this machine cannot train the preset (4-bit without CUDA or bitsandbytes)."""
    if not preset.quantize_4bit:
        return
    if not (cuda_available() if cuda is None else cuda):
        raise PresetError(
            "quantize_4bit",
            f"quantize_4bit: preset {preset.name} loads the base in 4-bit NF4, which needs a CUDA GPU; "
            "this machine has none (use cpu-lora)",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PresetError(
            "quantize_4bit",
            f"quantize_4bit: preset {preset.name} needs bitsandbytes "
            "(pip install 'nightshift-trainer[cuda]')",
        )


def resolve_preset(
    name: str, overrides: Mapping[str, str] | None = None, *, cuda: bool | None = None
) -> Preset:
    """The named preset with `overrides` applied; PresetError (a ValueError) names the bad field.

    `auto` (or an empty name) is qlora where CUDA is available, cpu-lora otherwise. A preset this machine
    cannot run (qlora without CUDA or bitsandbytes) is refused here, before any job is queued. A dtype
    of `auto` becomes the one it stands for here (`auto_dtype`).
    """
    name = (name or AUTO).strip()
    if name == AUTO:
        name = default_preset_name(cuda=cuda)
    if name not in PRESETS:
        raise PresetError("preset", f"preset: unknown preset {name!r} (known: {', '.join([AUTO, *PRESETS])})")
    preset = PRESETS[name]
    known = {f.name: f for f in fields(Preset)}
    changes: dict[str, Any] = {}
    for key, raw in (overrides or {}).items():
        if key not in known:
            raise PresetError(key, f"{key}: unknown field (fields: {', '.join(known)})")
        changes[key] = _parse(key, known[key].type, raw)
    preset = replace(preset, **changes)  # __post_init__ range-checks the result
    check_runnable(preset, cuda=cuda)
    if preset.dtype == AUTO:
        preset = replace(preset, dtype=auto_dtype(cuda=cuda))
    return preset


def describe_fields() -> dict[str, str]:
    """Field name -> help text, for a CLI or an API listing."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Preset)}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse(key: str, kind: Any, raw: str) -> Any:
    if not isinstance(raw, str):
        raise PresetError(key, f"{key}: expected a string value, got {type(raw).__name__}")
    text = raw.strip()
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise PresetError(key, f"{key}: expected true or false, got {raw!r}")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise PresetError(key, f"{key}: expected an integer, got {raw!r}") from None
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise PresetError(key, f"{key}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise PresetError(key, f"{key}: expected a finite number, got {raw!r}")
        return value
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text
