"""`nightshift archive save|load|show`: the stack's event log as one file, and back (nightshift.archive)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from nightshift import archive
from nightshift.bus import EventBus
from nightshift.config import data_dir, nats_url
from nightshift.events import STREAMS
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nightshift_cli.rpc import CliError

console = Console()


async def _connect(url: str) -> EventBus:
    try:
        return await EventBus.connect(url, name="nightshift-archive", connect_timeout=5.0)
    except Exception as exc:
        raise CliError(f"cannot reach NATS at {url} ({exc}); is the stack up (`nightshift up`)?") from None


def _configured(variable: str, default: Path) -> Path:
    configured = os.environ.get(variable, "")
    return Path(configured).expanduser() if configured else default


def adapters_dir_for(data: Path) -> Path:
    """Where the stack on data dir `data` keeps its adapters (as the trainer and the agent resolve it)."""
    return _configured("NIGHTSHIFT_ADAPTERS_DIR", data / "adapters")


def roots_for(data: Path) -> archive.FileRoots:
    """Where the stack on data dir `data` keeps what an archive carries: adapters, the trainer's jobs."""
    return archive.FileRoots(adapters_dir_for(data), _configured("NIGHTSHIFT_TRAINER_DIR", data / "trainer"))


def read_archive(path: Path) -> tuple[dict, list[archive.Record], list[archive.FileRecord]]:
    try:
        return archive.read(path)
    except archive.ArchiveError as exc:
        raise CliError(str(exc)) from None


Archive = tuple[Path, list[archive.Record], list[archive.FileRecord]]


def read_archives(paths: list[Path]) -> list[Archive]:
    """Each archive's path, events and adapter files; CliError naming the file and line of a bad one."""
    return [(path, *read_archive(path)[1:]) for path in paths]


def _job_files(job_id: str, step: int) -> str:
    checkpoint = f"its checkpoint at step {step}" if step else "no checkpoint (it starts from step 0)"
    return f"unfinished training job {job_id}: its examples and {checkpoint}"


async def restore(url: str, archives: list[Archive], out: Console, roots: archive.FileRoots) -> None:
    """Write the archives' files (adapters, unfinished training jobs) under `roots` and publish their
    events into the JetStream at `url` (files and events already there are skipped)."""
    for path, _records, files in archives:
        try:
            restored = archive.restore_files(files, roots)
        except archive.ArchiveError as exc:
            raise CliError(str(exc)) from None
        if any(f.kind == "adapter" for f in files):
            out.print(
                f"{path}: {len(restored.adapters)} adapter files written to {roots.adapters}, "
                f"{len(restored.adapters_present)} already there",
                highlight=False,
            )
        for job_id, step in restored.jobs.items():
            out.print(f"{path}: {_job_files(job_id, step)} written to {roots.trainer}", highlight=False)
        for job_id in restored.jobs_present:
            out.print(f"{path}: training job {job_id} already there, as far along", highlight=False)
    bus = await _connect(url)
    try:
        for path, records, _files in archives:
            with Progress(
                TextColumn(f"restoring {path.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=out,
                transient=True,
            ) as bar:
                task = bar.add_task("events", total=len(records))
                result = await archive.load(
                    bus, records, lambda done, _n, task=task: bar.update(task, completed=done)
                )
            out.print(
                f"{path}: {result.total_published} events published, {result.total_skipped} already there",
                highlight=False,
            )
    finally:
        await bus.close()


async def _save(url: str, path: Path, streams: list[str] | None, roots: archive.FileRoots | None):
    bus = await _connect(url)
    try:
        return await archive.save(bus, path, streams, roots)
    except archive.ArchiveError as exc:
        raise CliError(str(exc)) from None
    finally:
        await bus.close()


def _data_dir(args) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else data_dir()


def cmd_save(args) -> int:
    path = Path(args.file).expanduser()
    roots = None if args.no_files else roots_for(_data_dir(args))
    with console.status(f"reading every event from {nats_url()}"):
        counts, carried = asyncio.run(_save(nats_url(), path, args.stream, roots))
    summary = ", ".join(f"{stream} {n}" for stream, n in counts.items())
    console.print(
        f"wrote {sum(counts.values())} events, {len(carried.adapters)} adapter files and "
        f"{len(carried.jobs)} unfinished training jobs ({path.stat().st_size:,} bytes) to {path}: {summary}",
        highlight=False,
    )
    for job_id, step in carried.jobs.items():
        console.print(_job_files(job_id, step), highlight=False)
    if carried.missing_adapters:
        console.print(
            f"[yellow]no file in {roots.adapters} for {len(carried.missing_adapters)} trained adapters[/] "
            f"({', '.join(carried.missing_adapters)}); is --data-dir the stack's?",
            highlight=False,
        )
    if carried.missing_jobs:
        console.print(
            f"[yellow]no examples in {roots.trainer / 'jobs'} for {len(carried.missing_jobs)} unfinished "
            f"training jobs[/] ({', '.join(carried.missing_jobs)}); a restore would fail them",
            highlight=False,
        )
    return 0


def cmd_load(args) -> int:
    archives = read_archives([Path(p).expanduser() for p in args.file])
    asyncio.run(restore(nats_url(), archives, console, roots_for(_data_dir(args))))
    return 0


def cmd_show(args) -> int:
    header, records, files = read_archive(Path(args.file).expanduser())
    types = Counter((r.stream, r.envelope.type) for r in records)
    table = Table(title=f"{args.file}: {len(records)} events, saved {header.get('saved_at', '?')}")
    for column in ("stream", "type", "events"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for (stream, kind), n in sorted(types.items()):
        table.add_row(stream, kind.rsplit(".", 1)[-1], str(n))
    console.print(table)
    if records:
        first, last = records[0].envelope.occurred_at, records[-1].envelope.occurred_at
        console.print(f"from {first.ToJsonString()} to {last.ToJsonString()}", highlight=False)
    for f in files:
        what = "adapter file" if f.kind == "adapter" else f"training job {f.owner}:"
        console.print(f"{what} {f.path} ({len(f.data):,} bytes)", highlight=False)
    return 0


def add_parsers(sub) -> None:
    parser = sub.add_parser(
        "archive",
        help="save the stack's event log to one file, or load one back (carry runs to another store)",
        description="The event log is what every service rebuilds its state from. `save` writes every "
        "event of the running stack's JetStream (gzip'd JSON lines); `load` publishes an archive's events "
        "into JetStream, skipping those already there; load it before the services start, which `nightshift "
        "up --restore FILE` does, so they rebuild runs, tables, the registry and cycles from it. The archive "
        "also carries the adapter files its AdapterTrained events name, and the examples and latest "
        "checkpoint of every training job that never ended; `load` writes them into the adapter directory "
        "(NIGHTSHIFT_ADAPTERS_DIR or <data-dir>/adapters) and the trainer's store (NIGHTSHIFT_TRAINER_DIR or "
        "<data-dir>/trainer), so a restored job resumes from its checkpoint.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    save = verbs.add_parser("save", help="write every event of the running stack to FILE")
    save.add_argument("file", metavar="FILE", help="e.g. docs/results/events/baselines.jsonl.gz")
    save.add_argument(
        "--stream", action="append", choices=list(STREAMS), help="only this stream (repeatable; default all)"
    )
    save.add_argument(
        "--data-dir",
        help="the stack's data dir, for its adapter files and jobs (default: NIGHTSHIFT_DATA_DIR)",
    )
    save.add_argument(
        "--no-files",
        "--no-adapters",
        dest="no_files",
        action="store_true",
        help="events only: no adapter files, no training checkpoints",
    )
    save.set_defaults(func=cmd_save)
    load = verbs.add_parser("load", help="publish the events of FILE that JetStream does not hold yet")
    load.add_argument("file", metavar="FILE", nargs="+")
    load.add_argument("--data-dir", help="where the adapter files and jobs go (default: NIGHTSHIFT_DATA_DIR)")
    load.set_defaults(func=cmd_load)
    show = verbs.add_parser("show", help="what an archive holds: events per stream and type")
    show.add_argument("file", metavar="FILE")
    show.set_defaults(func=cmd_show)
