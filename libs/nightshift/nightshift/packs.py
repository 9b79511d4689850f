"""External packs: folders of single-file Rust exercises imported for evaluation, never for training.

`import_pack` copies a folder into `<data-dir>/packs/<name>`; `load_pack` turns it into koans whose
split is the pack's name. A pack has no reference fixes: validation only proves each program fails.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from nightshift.corpus import BUILTIN_SETS, MODES, CorpusError, Koan, Provenance
from nightshift.rustsrc import split_tests

MANIFEST = "manifest.toml"
PACK_FILE = "pack.toml"
EDITIONS = ("2021", "2024")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CorpusError(f"{path}: not valid TOML: {exc}") from None


def import_pack(source: Path, packs_dir: Path, name: str, edition: str = "2021", force: bool = False) -> Path:
    """Copy a folder of `.rs` exercises (and its optional manifest.toml) into `packs_dir/name`."""
    if not _NAME.fullmatch(name) or name in BUILTIN_SETS or name in ("train", "frozen", "heldout"):
        raise CorpusError(
            f"pack name {name!r}: use lowercase letters, digits, - and _, not a built-in set name"
        )
    if edition not in EDITIONS:
        raise CorpusError(f"edition must be one of {EDITIONS}, got {edition!r}")
    if not source.is_dir():
        raise CorpusError(f"{source}: not a directory")
    files = sorted(p for p in source.iterdir() if p.suffix == ".rs" and p.is_file())
    if not files:
        raise CorpusError(f"{source}: no .rs files")
    manifest = _read_manifest(source / MANIFEST)
    entries = manifest.get("files", {})
    unknown = sorted(set(entries) - {p.name for p in files})
    if unknown:
        raise CorpusError(f"{source / MANIFEST}: entries for missing files {unknown}")
    for entry_name, entry in entries.items():
        if entry.get("mode", "test") not in MODES:
            raise CorpusError(f"{source / MANIFEST}: {entry_name}: mode must be one of {MODES}")
    for path in files:
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CorpusError(f"{path}: not UTF-8 text") from None
    target = packs_dir / name
    if target.exists():
        if not force:
            raise CorpusError(f"pack {name!r} already exists at {target} (use --force to replace it)")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, target / path.name)
    if (source / MANIFEST).exists():
        shutil.copy2(source / MANIFEST, target / MANIFEST)
    (target / PACK_FILE).write_text(
        f'name = "{name}"\nedition = "{edition}"\nsource = {str(source.resolve())!r}\n'
        f'imported_at = "{datetime.now(UTC).isoformat(timespec="seconds")}"\n'
    )
    return target


def load_pack(pack_dir: Path) -> list[Koan]:
    """The koans of an imported pack, in the manifest's order (then by file name)."""
    info = _read_manifest(pack_dir / PACK_FILE)
    name = info.get("name", pack_dir.name)
    manifest = _read_manifest(pack_dir / MANIFEST)
    edition = info.get("edition", manifest.get("edition", "2021"))
    entries = manifest.get("files", {})
    order = {file: i for i, file in enumerate(manifest.get("order", []))}
    files = sorted(pack_dir.glob("*.rs"), key=lambda p: (order.get(p.name, len(order)), p.name))
    koans = []
    for path in files:
        entry = entries.get(path.name, {})
        program, tests = split_tests(path.read_text())
        koans.append(
            Koan(
                id=f"{name}:{path.stem}",
                family=entry.get("family", name),
                difficulty=int(entry.get("difficulty", 1)),
                title=path.stem,
                split=name,
                broken=program if tests else path.read_text(),
                tests=tests,
                fix="",
                hint=entry.get("hint", ""),
                expected_codes=(),
                expected_failing_tests=(),
                mode=entry.get("mode", "test" if tests else "build"),
                edition=edition,
                provenance=Provenance(kind="imported", parent=str(path.name)),
                path=path,
            )
        )
    return koans
