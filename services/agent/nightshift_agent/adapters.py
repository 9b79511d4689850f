"""LoRA adapters in GGUF form: the adapter directory the agent loads them from, header checks, test adapters.

An adapter lives at `<root>/<adapter_id>/adapter.gguf`, written by the trainer's GGUF export. Tensors are
`blk.{L}.{target}.weight.lora_a` (numpy shape rank x in) and `.lora_b` (out x rank); GGUF stores dims in
reverse (ggml `ne`), so llama.cpp sees lora_a as ne=(in, rank) and lora_b as ne=(rank, out), and checks
them against the base weight's ne=(in, out). Every file is checked here before llama.cpp sees it, because
llama-cpp-python 0.3.36 neither shows llama.cpp's reason for refusing an adapter (its log-level table files
errors under debug) nor notices the refusal at all (see LlamaGenerator).
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from nightshift.lora_gguf import LORA_TARGETS, LoraPair, write_lora_gguf

ADAPTER_FILENAME = "adapter.gguf"
NO_ADAPTER = "none"  # the adapter id a request names to get the base model
_ADAPTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LORA_SUFFIXES = (".lora_a", ".lora_b")


class AdapterError(Exception):
    """An adapter that cannot be used; the message says which and why."""


class InvalidAdapterIdError(AdapterError, ValueError):
    pass


class AdapterNotFoundError(AdapterError, LookupError):
    pass


class CorruptAdapterError(AdapterError):
    pass


class IncompatibleAdapterError(AdapterError):
    pass


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter file's GGUF header says about it."""

    path: Path
    architecture: str
    alpha: float
    rank: int
    size_bytes: int
    tensors: dict[str, tuple[int, ...]]  # name -> ggml dims (ne), as llama.cpp sees them
    adapter_id: str | None = None

    @property
    def layers(self) -> list[int]:
        found = {int(name.split(".")[1]) for name in self.tensors if name.startswith("blk.")}
        return sorted(found)


def validate_adapter_id(adapter_id: str) -> str:
    """Return the id when it names one directory under the adapter root, else raise InvalidAdapterIdError."""
    if not isinstance(adapter_id, str) or not _ADAPTER_ID.fullmatch(adapter_id) or ".." in adapter_id:
        raise InvalidAdapterIdError(
            f"adapter id {adapter_id!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators)"
        )
    if adapter_id == NO_ADAPTER:
        raise InvalidAdapterIdError(f"adapter id {NO_ADAPTER!r} is reserved for the base model")
    return adapter_id


def _field_value(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def read_adapter_header(path: Path) -> AdapterInfo:
    """Read and check an adapter GGUF header: general.type=adapter, adapter.type=lora, paired tensors."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise AdapterNotFoundError(f"adapter file {path} does not exist")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, IndexError, ... on a damaged file
        raise CorruptAdapterError(f"adapter file {path} is not a readable GGUF file: {err}") from err
    general_type = _field_value(reader, gguf.Keys.General.TYPE)
    if general_type != "adapter":
        raise CorruptAdapterError(
            f"{path} is not an adapter: its GGUF header has general.type={general_type!r}, expected 'adapter'"
        )
    adapter_type = _field_value(reader, gguf.Keys.Adapter.TYPE)
    if adapter_type != "lora":
        raise CorruptAdapterError(
            f"{path} is not a LoRA adapter: adapter.type={adapter_type!r}, expected 'lora'"
        )
    architecture = _field_value(reader, gguf.Keys.General.ARCHITECTURE) or ""
    alpha = _field_value(reader, gguf.Keys.Adapter.LORA_ALPHA)
    tensors = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    del reader
    if not tensors:
        raise CorruptAdapterError(f"adapter {path} holds no tensors")
    ranks = set()
    for name, dims in tensors.items():
        if not name.endswith(_LORA_SUFFIXES):
            raise CorruptAdapterError(
                f"adapter {path} has tensor {name!r}, which is neither lora_a nor lora_b"
            )
        base = name[: -len(".lora_a")]
        partner = base + (".lora_b" if name.endswith(".lora_a") else ".lora_a")
        if partner not in tensors:
            raise CorruptAdapterError(f"adapter {path}: {name} has no matching {partner}")
        if name.endswith(".lora_a"):
            b_dims = tensors[partner]
            if len(dims) != 2 or len(b_dims) != 2 or dims[1] != b_dims[0]:
                raise CorruptAdapterError(
                    f"adapter {path}: {name} ne={dims} and {partner} ne={b_dims} disagree on the rank"
                )
            ranks.add(dims[1])
    if len(ranks) != 1:
        raise CorruptAdapterError(f"adapter {path} mixes ranks {sorted(ranks)}")
    rank = ranks.pop()
    return AdapterInfo(
        path=path,
        architecture=architecture,
        alpha=float(alpha) if alpha is not None else 0.0,
        rank=rank,
        size_bytes=path.stat().st_size,
        tensors=tensors,
    )


_GGUF_MAGIC = b"GGUF"
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


def base_model_shapes(base_model_path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The base model's architecture and its weight dims (ggml ne order), read from its GGUF header.

    A direct scan of the header: gguf.GGUFReader takes seconds on a model file because it materialises
    every tokenizer string, and only a handful of values are needed here.
    """
    path = Path(base_model_path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _scan_gguf_header(data)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not a readable GGUF model file: {err}") from err


def _scan_gguf_header(data) -> tuple[str, dict[str, tuple[int, ...]]]:
    if data[:4] != _GGUF_MAGIC:
        raise ValueError("no GGUF magic")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    offset = 24

    def read_string(at: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", data, at)
        return data[at + 8 : at + 8 + length].decode("utf-8"), at + 8 + length

    def skip_value(kind: int, at: int) -> int:
        if kind == _STRING:
            (length,) = struct.unpack_from("<Q", data, at)
            return at + 8 + length
        if kind == _ARRAY:
            item_kind, count = struct.unpack_from("<IQ", data, at)
            at += 12
            if item_kind in _SCALAR_FORMATS:
                return at + count * struct.calcsize(_SCALAR_FORMATS[item_kind])
            for _ in range(count):
                at = skip_value(item_kind, at)
            return at
        return at + struct.calcsize(_SCALAR_FORMATS[kind])

    architecture = ""
    for _ in range(n_kv):
        key, offset = read_string(offset)
        (kind,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if key == "general.architecture" and kind == _STRING:
            architecture, offset = read_string(offset)
        else:
            offset = skip_value(kind, offset)
    shapes = {}
    for _ in range(n_tensors):
        name, offset = read_string(offset)
        (n_dims,) = struct.unpack_from("<I", data, offset)
        shapes[name] = struct.unpack_from(f"<{n_dims}Q", data, offset + 4)
        offset += 4 + 8 * n_dims + 4 + 8  # dims, then the ggml type and the data offset
    return architecture, shapes


def check_adapter_compatible(adapter_path: Path, base_model_path: Path) -> AdapterInfo:
    """Check an adapter against the base model it will be applied to; return its header on success."""
    info = read_adapter_header(adapter_path)
    architecture, shapes = base_model_shapes(base_model_path)
    if info.architecture != architecture:
        raise IncompatibleAdapterError(
            f"adapter {adapter_path} is for architecture {info.architecture!r}, "
            f"the base model {base_model_path.name} is {architecture!r}"
        )
    for name, dims in info.tensors.items():
        if not name.endswith(".lora_a"):
            continue
        weight = name[: -len(".lora_a")]
        if weight not in shapes:
            raise IncompatibleAdapterError(
                f"adapter {adapter_path} targets {weight}, which the base model {base_model_path.name} lacks"
            )
        n_in, n_out = shapes[weight][0], shapes[weight][1]
        b_dims = info.tensors[weight + ".lora_b"]
        if dims[0] != n_in or b_dims[1] != n_out:
            raise IncompatibleAdapterError(
                f"adapter {adapter_path}: {weight} lora_a ne={dims}, lora_b ne={b_dims} do not fit the base "
                f"weight ne=({n_in}, {n_out}) of {base_model_path.name}"
            )
    return info


class AdapterDirectory:
    """Adapter id -> `<root>/<adapter_id>/adapter.gguf`, checked before anything loads it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, adapter_id: str) -> Path:
        """Where an adapter with this id lives (whether or not it exists yet)."""
        return self.root / validate_adapter_id(adapter_id) / ADAPTER_FILENAME

    def resolve(self, adapter_id: str) -> Path | None:
        """The checked file of an adapter, or None for the base model ('none' or an empty id)."""
        return None if adapter_id in ("", NO_ADAPTER) else self.inspect(adapter_id).path

    def inspect(self, adapter_id: str) -> AdapterInfo:
        """The header of an existing adapter; raises AdapterNotFoundError or CorruptAdapterError."""
        path = self.path_for(adapter_id)
        if not path.is_file():
            raise AdapterNotFoundError(f"adapter {adapter_id!r} not found: no file {path}")
        info = read_adapter_header(path)
        return replace(info, adapter_id=adapter_id)

    def ids(self) -> list[str]:
        """Ids of every directory under the root that holds an adapter file, valid or not."""
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if (child / ADAPTER_FILENAME).is_file() and _ADAPTER_ID.fullmatch(child.name):
                found.append(child.name)
        return found

    def list(self) -> tuple[list[AdapterInfo], dict[str, str]]:
        """Every adapter under the root: the usable ones, and the unusable ones with the reason."""
        usable, unusable = [], {}
        for adapter_id in self.ids():
            try:
                usable.append(self.inspect(adapter_id))
            except AdapterError as err:
                unusable[adapter_id] = str(err)
        return usable, unusable


def write_random_lora_gguf(
    path: Path,
    base_model_path: Path,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    scale: float = 0.02,
    seed: int = 0,
    layers: Iterable[int] | None = None,
    targets: Sequence[str] = LORA_TARGETS,
    zero_b: bool = False,
) -> Path:
    """Write a LoRA adapter GGUF for the base model with random N(0, scale^2) weights.

    The layout is the trainer's export layout: lora_a is (rank x in), lora_b is (out x rank) as numpy
    arrays, F32, with general.type=adapter, adapter.type=lora and adapter.lora.alpha. `zero_b` writes
    lora_b as zeros, like a freshly initialised PEFT adapter: loaded but without effect.
    """
    architecture, shapes = base_model_shapes(base_model_path)
    n_layers = len({name.split(".")[1] for name in shapes if name.startswith("blk.")})
    chosen = sorted(set(range(n_layers) if layers is None else layers))
    rng = np.random.default_rng(seed)
    pairs = []
    for layer in chosen:
        for target in targets:
            weight = f"blk.{layer}.{target}.weight"
            if weight not in shapes:
                raise IncompatibleAdapterError(f"the base model {base_model_path} has no tensor {weight}")
            n_in, n_out = shapes[weight][0], shapes[weight][1]
            lora_a = rng.normal(0.0, scale, size=(rank, n_in)).astype(np.float32)
            lora_b = (
                np.zeros((n_out, rank), dtype=np.float32)
                if zero_b
                else rng.normal(0.0, scale, size=(n_out, rank)).astype(np.float32)
            )
            pairs.append(LoraPair(weight, lora_a, lora_b))
    return write_lora_gguf(Path(path), pairs, alpha=alpha, architecture=architecture)
