"""LoRA adapters as GGUF files: the one writer (and reader) of the layout llama.cpp loads.

A LoRA pair adapts one base weight `blk.{L}.{target}.weight` with two F32 tensors named
`<weight>.lora_a` (numpy shape rank x in) and `<weight>.lora_b` (out x rank), so that the adapted weight
is W + (alpha / rank) * lora_b @ lora_a. The file's header says general.type=adapter, adapter.type=lora and
adapter.lora.alpha. GGUF stores dims in reverse (ggml `ne`): llama.cpp sees lora_a as ne=(in, rank),
lora_b as ne=(rank, out) and the base weight as ne=(in, out), which is what `check_pairs_fit` compares.

The trainer writes its exported adapters with it, the agent its test adapters. `gguf` is imported inside
the functions: it is a dependency of those services, not of this library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The base weights a LoRA pair may adapt (qwen2 names); never token_embd or output (lm_head).
LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LORA_A, LORA_B = ".lora_a", ".lora_b"


class LoraShapeError(ValueError):
    """LoRA tensors that do not fit each other or the base model's weights; the message names the tensor."""


@dataclass(frozen=True)
class LoraPair:
    """The two matrices that adapt one base weight."""

    weight: str  # the base tensor, e.g. "blk.3.attn_q.weight"
    lora_a: np.ndarray  # (rank, in)
    lora_b: np.ndarray  # (out, rank)

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.lora_a.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.lora_b.shape[0])

    def check(self) -> None:
        """Raise LoraShapeError unless lora_a is (rank x in) and lora_b is (out x rank) for one rank."""
        a, b = self.lora_a, self.lora_b
        if a.ndim != 2 or b.ndim != 2:
            raise LoraShapeError(
                f"{self.weight}: lora_a and lora_b must be matrices, got shapes {a.shape} and {b.shape}"
            )
        if a.shape[0] != b.shape[1]:
            raise LoraShapeError(
                f"{self.weight}: lora_a {a.shape} (rank x in) and lora_b {b.shape} (out x rank) "
                "disagree on the rank"
            )


@dataclass(frozen=True)
class LoraFile:
    """What an adapter GGUF holds."""

    architecture: str
    alpha: float
    pairs: dict[str, LoraPair]  # base weight name -> pair

    @property
    def rank(self) -> int:
        return next(iter(self.pairs.values())).rank if self.pairs else 0


def check_pairs_fit(
    pairs: Iterable[LoraPair], base_shapes: Mapping[str, tuple[int, ...]], base_name: str = "the base model"
) -> None:
    """Raise LoraShapeError unless every pair adapts a weight of the base with matching dims.

    `base_shapes` maps tensor names to ggml dims (ne), as GGUF stores them: a weight of numpy shape
    (out, in) has ne=(in, out).
    """
    for pair in pairs:
        pair.check()
        if pair.weight not in base_shapes:
            raise LoraShapeError(f"{pair.weight}: {base_name} has no such tensor")
        dims = tuple(base_shapes[pair.weight])
        if len(dims) != 2 or (pair.n_in, pair.n_out) != (dims[0], dims[1]):
            raise LoraShapeError(
                f"{pair.weight}: the LoRA pair maps in={pair.n_in} -> out={pair.n_out}, but {base_name}'s "
                f"weight has ne={dims} (in, out)"
            )


def write_lora_gguf(path: Path, pairs: Iterable[LoraPair], *, alpha: float, architecture: str) -> Path:
    """Write the pairs, in the order given, as a LoRA adapter GGUF (F32 tensors); return the path.

    The file is written under a temporary name and renamed, so a reader never sees half of it.
    """
    import gguf

    pairs = list(pairs)
    if not pairs:
        raise LoraShapeError("an adapter needs at least one LoRA pair")
    names = [pair.weight for pair in pairs]
    if len(set(names)) != len(names):
        raise LoraShapeError("each base weight may be adapted by one LoRA pair only")
    for pair in pairs:
        pair.check()
    ranks = {pair.rank for pair in pairs}
    if len(ranks) != 1:
        raise LoraShapeError(f"all LoRA pairs must share one rank, got {sorted(ranks)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(partial, arch=architecture)
    writer.add_type("adapter")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for pair in pairs:
        writer.add_tensor(pair.weight + LORA_A, np.ascontiguousarray(pair.lora_a, dtype=np.float32))
        writer.add_tensor(pair.weight + LORA_B, np.ascontiguousarray(pair.lora_b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path


def read_lora_gguf(path: Path) -> LoraFile:
    """The pairs, alpha and architecture of an adapter GGUF (tensors copied out of the file)."""
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str):
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    if value(gguf.Keys.General.TYPE) != "adapter" or value(gguf.Keys.Adapter.TYPE) != "lora":
        raise LoraShapeError(f"{path} is not a LoRA adapter GGUF")
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    pairs = {}
    for name, a in tensors.items():
        if not name.endswith(LORA_A):
            continue
        weight = name[: -len(LORA_A)]
        if weight + LORA_B not in tensors:
            raise LoraShapeError(f"{path}: {name} has no matching {weight + LORA_B}")
        pairs[weight] = LoraPair(weight, a, tensors[weight + LORA_B])
    alpha = value(gguf.Keys.Adapter.LORA_ALPHA)
    return LoraFile(
        architecture=value(gguf.Keys.General.ARCHITECTURE) or "",
        alpha=float(alpha) if alpha is not None else 0.0,
        pairs=pairs,
    )


def read_tensor_shapes(model_path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """A GGUF model's architecture and its tensors' ggml dims (ne), read with gguf.GGUFReader."""
    import gguf

    reader = gguf.GGUFReader(model_path)
    field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    architecture = field.contents() if field is not None else ""
    return architecture, {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
