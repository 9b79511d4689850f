"""PEFT LoRA adapter -> GGUF LoRA adapter, the form the agent's llama.cpp loads.

PEFT saves `...layers.{L}.self_attn.q_proj.lora_A.weight` (rank x in) and `...lora_B.weight` (out x rank);
the GGUF names the same matrices `blk.{L}.attn_q.weight.lora_a` / `.lora_b` (see nightshift.lora_gguf).
Both apply W + (alpha / r) * B A, so the tensors are copied unchanged and alpha goes to
`adapter.lora.alpha`. Every pair is checked against the base GGUF's weight dims before anything is
written, and whatever the GGUF form cannot express is refused with the reason rather than dropped:
modules other than the seven block projections (lm_head, embeddings, modules_to_save), rsLoRA's
alpha/sqrt(r) scaling, DoRA, per-module ranks or alphas, LoRA biases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from nightshift.lora_gguf import (
    LoraPair,
    LoraShapeError,
    check_pairs_fit,
    read_tensor_shapes,
    write_lora_gguf,
)

# PEFT module name -> GGUF tensor target (qwen2 / llama naming on both sides).
PEFT_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_PEFT_KEY = re.compile(r"(?:.*\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class ExportError(ValueError):
    """A PEFT adapter that cannot become a GGUF LoRA adapter for this base model; says why."""


def gguf_weight_name(peft_key: str) -> tuple[str, str]:
    """(GGUF base weight name, "a" | "b") for a PEFT tensor key; ExportError for anything else."""
    match = _PEFT_KEY.fullmatch(peft_key)
    if match is None or match.group(2) not in PEFT_TO_GGUF:
        raise ExportError(
            f"{peft_key}: not a LoRA weight of a block projection "
            f"({', '.join(PEFT_TO_GGUF)}); a GGUF LoRA adapter cannot carry it"
        )
    layer, module, which = match.groups()
    return f"blk.{int(layer)}.{PEFT_TO_GGUF[module]}.weight", which.lower()


def peft_pairs(tensors: Mapping[str, np.ndarray]) -> list[LoraPair]:
    """The LoRA pairs of a PEFT state dict in (layer, target) order; ExportError on a stray or lone tensor."""
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        weight, which = gguf_weight_name(key)
        halves.setdefault(weight, {})[which] = np.asarray(value, dtype=np.float32)
    targets = list(PEFT_TO_GGUF.values())
    pairs = []
    for weight in sorted(halves, key=lambda w: (int(w.split(".")[1]), targets.index(w.split(".")[2]))):
        half = halves[weight]
        if set(half) != {"a", "b"}:
            missing = "lora_B" if "a" in half else "lora_A"
            raise ExportError(f"{weight}: the PEFT adapter has no {missing} for it")
        pair = LoraPair(weight, half["a"], half["b"])
        try:
            pair.check()
        except LoraShapeError as err:
            raise ExportError(str(err)) from err
        pairs.append(pair)
    if not pairs:
        raise ExportError("the PEFT adapter holds no LoRA weights")
    return pairs


def check_peft_config(config: Mapping) -> float:
    """The adapter's alpha, after refusing every setting the GGUF LoRA form cannot express."""
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise ExportError(f"peft_type: {config.get('peft_type')!r} is not LORA")
    refusals = [
        (
            "use_rslora",
            bool(config.get("use_rslora")),
            "rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r",
        ),
        ("use_dora", bool(config.get("use_dora")), "DoRA's magnitude vectors have no GGUF LoRA form"),
        ("rank_pattern", bool(config.get("rank_pattern")), "per-module ranks are not supported"),
        ("alpha_pattern", bool(config.get("alpha_pattern")), "per-module alphas are not supported"),
        ("modules_to_save", bool(config.get("modules_to_save")), "fully trained modules cannot be exported"),
        ("bias", config.get("bias", "none") not in ("none", None), "LoRA biases cannot be exported"),
        (
            "fan_in_fan_out",
            bool(config.get("fan_in_fan_out")),
            "transposed (Conv1D) weights are not supported",
        ),
        ("lora_bias", bool(config.get("lora_bias")), "LoRA biases cannot be exported"),
    ]
    for name, refused, why in refusals:
        if refused:
            raise ExportError(f"{name}: {why}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, int | float) or alpha <= 0:
        raise ExportError(f"lora_alpha: expected a positive number, got {alpha!r}")
    return float(alpha)


def read_peft_adapter(peft_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """adapter_config.json and the tensors of adapter_model.safetensors in a PEFT adapter directory."""
    from safetensors.torch import load_file

    peft_dir = Path(peft_dir)
    config_path, weights_path = peft_dir / ADAPTER_CONFIG, peft_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ExportError(f"{peft_dir} is not a PEFT adapter directory: {path.name} is missing")
    # through torch: a bf16 adapter has no numpy dtype
    tensors = {key: value.float().numpy() for key, value in load_file(weights_path).items()}
    return json.loads(config_path.read_text()), tensors


def export_gguf_lora(peft_dir: Path, out_path: Path, *, base_model_path: Path) -> Path:
    """Write the PEFT adapter in `peft_dir` as a GGUF LoRA adapter for the GGUF base model; return out_path.

    Raises ExportError naming the module or setting when the adapter cannot be expressed, or when a pair
    does not fit the base model's weight dims.
    """
    config, tensors = read_peft_adapter(peft_dir)
    alpha = check_peft_config(config)
    pairs = peft_pairs(tensors)
    ranks = {pair.rank for pair in pairs}
    if ranks != {int(config.get("r", 0))}:
        raise ExportError(
            f"r: adapter_config.json says r={config.get('r')}, the tensors have ranks {sorted(ranks)}"
        )
    architecture, shapes = read_tensor_shapes(Path(base_model_path))
    try:
        check_pairs_fit(pairs, shapes, base_name=Path(base_model_path).name)
    except LoraShapeError as err:
        raise ExportError(f"the adapter does not fit the base model: {err}") from err
    return write_lora_gguf(Path(out_path), pairs, alpha=alpha, architecture=architecture)
