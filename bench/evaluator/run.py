"""Evaluator projection throughput and report generation time.

    .venv/bin/python bench/evaluator/run.py [--events 100000] [--quick] [--baseline-events 5000]
                                            [--batch N] [--out bench/results/evaluator.json]

Projection: publishes synthetic events (TaskSubmitted, CheckCompleted, AttemptRecorded with about
1 KB of prompt, EpisodeCompleted, KoanEvaluated) to a real nats-server. Each measurement starts a
Projector on a fresh DuckDB file and times it until every stream's position reaches the stream's
end (events/s), then deletes the file and times a full replay (opening the store and its migrations
included). The baseline is one event per transaction and per ack (`Projector(batch_size=1)`); it
manages about a hundred events a second, so it and the batched mode beside it (same stream, same
run) project the first `--baseline-events`; the batched mode then projects all `--events`. Every
projection must rebuild identical tables on replay, the baseline's and the batched mode's tables
must be identical (a fingerprint of every table), and the row counts must be what the stream implies.
The machine is shared: the load average and the projector's CPU time per event are recorded too.

Report: two finished evaluation runs of 1,000 koans x 10 repeats (10,000 episodes each) over ten
families; times `metrics.summarise` of one run and `decisions.build_report` (summaries, paired
comparison, Markdown, JSON and PNG figures) of one run against the other.

Targets (reported, not enforced): at least 20,000 events/s batched, the report in under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from nightshift import events
from nightshift.bus import EventBus
from nightshift.natsserver import NatsServer, find_nats_server
from nightshift.v1 import evaluator_pb2
from nightshift_evaluator import decisions, metrics
from nightshift_evaluator.projection import projected_streams
from nightshift_evaluator.projector import DEFAULT_BATCH_SIZE, PROJECTION_CONSUMER, Projector
from nightshift_evaluator.runs import Run, outcome_of, summary_message
from nightshift_evaluator.store import ProjectionStore
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import evaluation_run, event_stream  # noqa: E402

TARGET_EVENTS_PER_SECOND = 20_000
TARGET_REPORT_SECONDS = 3.0
QUICK_EVENTS = 5_000
# The one-event-per-transaction baseline runs at about a hundred events/s: measured on a prefix.
BASELINE_EVENTS = 5_000
PUBLISH_WINDOW = 512
POLL_SECONDS = 0.05
# Tables whose rows carry a wall-clock time of their own writing: left out of the fingerprint.
UNSTABLE_TABLES = {"schema_migrations", "dead_letters"}


# --- projection -----------------------------------------------------------------------------------


async def publish_envelopes(url: str, envelopes: list) -> tuple[float, dict[str, int]]:
    """Publish envelopes (a window of them in flight at once); seconds taken and each stream's end."""
    bus = await EventBus.connect(url, "bench-publisher")
    try:
        start = time.perf_counter()
        for i in range(0, len(envelopes), PUBLISH_WINDOW):
            await asyncio.gather(*(bus.publish_envelope(e) for e in envelopes[i : i + PUBLISH_WINDOW]))
        seconds = time.perf_counter() - start
        ends = {name: await bus.stream_last_sequence(name) for name in events.STREAMS}
    finally:
        await bus.close()
    return seconds, ends


def read_positions(store: ProjectionStore) -> dict[str, int]:
    cur = store.read_cursor()
    try:
        return dict(
            cur.execute(
                "SELECT stream, last_sequence FROM projection_positions WHERE consumer = ?",
                [PROJECTION_CONSUMER],
            ).fetchall()
        )
    finally:
        cur.close()


async def wait_projected(store: ProjectionStore, ends: dict[str, int], timeout: float) -> None:
    """Poll the positions (on a reader cursor, so the writer's queue is left alone) until `ends`."""
    wanted = {s: n for s, n in ends.items() if n > 0 and s in projected_streams()}
    deadline = time.perf_counter() + timeout
    while True:
        positions = await asyncio.to_thread(read_positions, store)
        if all(positions.get(s, 0) >= n for s, n in wanted.items()):
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"projection stuck at {positions}, streams end at {wanted}")
        await asyncio.sleep(POLL_SECONDS)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of process `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def project_once(
    nats: NatsServer, db_path: Path, batch_size: int, ends: dict[str, int], timeout: float
) -> dict:
    """Project every stream to its end into a fresh file; seconds with and without opening the store."""
    for path in db_path.parent.glob(db_path.name + "*"):
        path.unlink()
    bus = await EventBus.connect(nats.url, f"bench-projector-{batch_size}")
    try:
        cpu_before, broker_before = cpu_seconds(), cpu_seconds(nats.proc.pid)
        opened_at = time.perf_counter()
        store = await ProjectionStore.open(db_path)
        started_at = time.perf_counter()
        projector = Projector(store, bus, batch_size=batch_size)
        projector.start()
        try:
            await wait_projected(store, ends, timeout)
            done_at = time.perf_counter()
            cpu, broker = cpu_seconds() - cpu_before, cpu_seconds(nats.proc.pid) - broker_before
        finally:
            await projector.stop()
            await store.close()
    finally:
        await bus.close()
    return {
        "seconds": done_at - started_at,
        "seconds_with_open": done_at - opened_at,
        "cpu_seconds": cpu,
        "broker_cpu_seconds": broker,
        "fingerprint": fingerprint(db_path),
    }


def fingerprint(db_path: Path) -> dict[str, list[int]]:
    """(rows, sum of row hashes) of every stable table: equal tables give equal fingerprints."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY table_name"
            ).fetchall()
            if name not in UNSTABLE_TABLES
        ]
        out = {}
        for name in tables:
            count, total = conn.execute(
                f'SELECT count(*), coalesce(sum(hash(t)), 0) FROM "{name}" t'
            ).fetchone()
            out[name] = [int(count), int(total)]
        return out
    finally:
        conn.close()


async def measure_mode(
    nats: NatsServer, workdir: Path, name: str, batch_size: int, events_total: int, ends: dict[str, int]
) -> tuple[dict, dict]:
    """Project and then replay the stream in one mode; its numbers and its tables' fingerprint."""
    # Generous: the one-event-per-transaction baseline is far slower than the target.
    timeout = max(120.0, events_total / 50)
    db_path = workdir / f"{name}-{events_total}".replace(" ", "-") / "nightshift.duckdb"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    first = await project_once(nats, db_path, batch_size, ends, timeout)
    replay = await project_once(nats, db_path, batch_size, ends, timeout)
    if replay["fingerprint"] != first["fingerprint"]:
        raise AssertionError(f"{name}: the replay of {events_total} events differs from the first projection")
    return {
        "mode": name,
        "batch_size": batch_size,
        "events": events_total,
        "projection_seconds": first["seconds"],
        "events_per_second": events_total / first["seconds"],
        "cpu_us_per_event": 1e6 * first["cpu_seconds"] / events_total,
        "broker_cpu_us_per_event": 1e6 * first["broker_cpu_seconds"] / events_total,
        "replay_seconds": replay["seconds_with_open"],
        "replay_events_per_second": events_total / replay["seconds_with_open"],
        "load_average": os.getloadavg()[0],
    }, first["fingerprint"]


def check_rows(label: str, expected: dict[str, int], fingerprint: dict[str, list[int]]) -> None:
    wrong = {
        t: (fingerprint.get(t, [0])[0], n) for t, n in expected.items() if fingerprint.get(t, [0])[0] != n
    }
    if wrong:
        raise AssertionError(f"{label}: rows (got, expected) {wrong}")


async def measure_projection(
    events_total: int, baseline_events: int, batch_size: int, baseline: str, console: Console
) -> dict:
    """The baseline and the batched mode on the first `baseline_events` of the stream, then the
    batched mode on all of it."""
    stream = event_stream(events_total)
    prefix = min(baseline_events, events_total)
    payload = sum(len(e.SerializeToString()) for e in stream.envelopes)
    console.print(
        f"{events_total} events ({payload / 1e6:.1f} MB of envelopes): "
        + ", ".join(f"{n} {name}" for name, n in sorted(stream.types.items()))
    )
    batched = f"batched ({batch_size})"
    runs = []
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-evaluator-") as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        try:
            publish_seconds, ends = await publish_envelopes(nats.url, stream.envelopes[:prefix])
            reference = None
            for name, size in ((baseline, 1), (batched, batch_size)):
                result, tables = await measure_mode(nats, Path(tmp), name, size, prefix, ends)
                if reference is not None and tables != reference:
                    raise AssertionError(f"{name}: tables differ from the baseline's")
                reference = reference or tables
                console.print(f"{name}, {prefix} events: {result['events_per_second']:,.0f} events/s")
                runs.append(result)
            if prefix < events_total:
                rest_seconds, ends = await publish_envelopes(nats.url, stream.envelopes[prefix:])
                publish_seconds += rest_seconds
                result, tables = await measure_mode(nats, Path(tmp), batched, batch_size, events_total, ends)
                check_rows(f"{batched}, {events_total} events", stream.expected_rows, tables)
                console.print(
                    f"{batched}, {events_total} events: {result['events_per_second']:,.0f} events/s"
                )
                runs.append(result)
            elif prefix == events_total:
                check_rows(f"{events_total} events", stream.expected_rows, reference)
        finally:
            nats.stop()
    return {
        "events": events_total,
        "baseline_events": prefix,
        "envelope_megabytes": payload / 1e6,
        "types": stream.types,
        "publish_seconds": publish_seconds,
        "runs": runs,
    }


# --- report ---------------------------------------------------------------------------------------


def finished_run(run_id: str, seed: int, pass_rate: float, koans: int, repeats: int) -> Run:
    started, evaluated = evaluation_run(run_id, koans, repeats, seed, pass_rate)
    run = Run.from_started(started, {e.koan_id: e.family for e in evaluated})
    for event in evaluated:
        run.record(event)
    run.completed = summary_message(run, [outcome_of(e) for e in run.order], finished=True)
    return run


def measure_report(koans: int, repeats: int, rounds: int) -> dict:
    runs = {
        "candidate": finished_run("candidate", 1, 0.62, koans, repeats),
        "champion": finished_run("champion", 2, 0.58, koans, repeats),
    }
    outcomes = decisions.outcomes(runs["candidate"])
    request = evaluator_pb2.GetReportRequest(run_id="candidate", compare_run_id="champion")
    summarise, build = [], []
    files: dict[str, bytes] = {}
    for _ in range(rounds):
        start = time.perf_counter()
        metrics.summarise(outcomes, expected=len(outcomes))
        summarise.append(time.perf_counter() - start)
        start = time.perf_counter()
        files = decisions.build_report(runs.__getitem__, request)
        build.append(time.perf_counter() - start)
    return {
        "koans": koans,
        "repeats": repeats,
        "episodes_per_run": len(outcomes),
        "rounds": rounds,
        "summarise_seconds": statistics.median(summarise),
        "report_seconds": statistics.median(build),
        "report_seconds_max": max(build),
        "files": {name: len(content) for name, content in sorted(files.items())},
    }


# --- main -----------------------------------------------------------------------------------------


def nats_server_version() -> str:
    try:
        out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unknown ({exc})"
    return out.stdout.strip()


def print_tables(console: Console, projection: dict, report: dict) -> None:
    base = projection["runs"][0]
    table = Table(title="projection into DuckDB from a real nats-server")
    for column in (
        "mode",
        "events",
        "projection (s)",
        "events/s",
        "vs baseline",
        "CPU µs/event",
        "replay (s)",
        "replay events/s",
        "load",
    ):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for run in projection["runs"]:
        table.add_row(
            run["mode"],
            f"{run['events']:,}",
            f"{run['projection_seconds']:.2f}",
            f"{run['events_per_second']:,.0f}",
            f"{run['events_per_second'] / base['events_per_second']:.1f}x",
            f"{run['cpu_us_per_event']:,.0f}",
            f"{run['replay_seconds']:.2f}",
            f"{run['replay_events_per_second']:,.0f}",
            f"{run['load_average']:.1f}",
        )
    console.print(table)
    targets = Table(title="targets")
    for column in ("what", "measured", "target", "met"):
        targets.add_column(column)
    full = projection["runs"][-1]
    targets.add_row(
        f"projection, {full['mode']}, {full['events']:,} events",
        f"{full['events_per_second']:,.0f} events/s",
        f">= {TARGET_EVENTS_PER_SECOND:,} events/s",
        "yes" if full["events_per_second"] >= TARGET_EVENTS_PER_SECOND else "no",
    )
    targets.add_row(
        f"full replay, {full['events']:,} events (store open included)",
        f"{full['replay_seconds']:.2f} s",
        "",
        "",
    )
    targets.add_row(
        f"report of a {report['episodes_per_run']:,}-episode run vs another (median of {report['rounds']})",
        f"{report['report_seconds']:.2f} s",
        f"< {TARGET_REPORT_SECONDS:.0f} s",
        "yes" if report["report_seconds"] < TARGET_REPORT_SECONDS else "no",
    )
    targets.add_row(
        f"metrics.summarise of {report['episodes_per_run']:,} outcomes",
        f"{report['summarise_seconds']:.3f} s",
        "",
        "",
    )
    console.print(targets)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to publish (default 100000)")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: {QUICK_EVENTS} events, one report rendering"
    )
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=BASELINE_EVENTS,
        help=f"events the baseline (and the batched mode beside it) projects (default {BASELINE_EVENTS})",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH_SIZE, help=f"batch size (default {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument("--report-rounds", type=int, default=3, help="report renderings to time (default 3)")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "evaluator.json"))
    args = parser.parse_args()
    events_total = QUICK_EVENTS if args.quick else args.events
    rounds = 1 if args.quick else args.report_rounds
    if min(events_total, args.baseline_events, args.batch, rounds) < 1:
        parser.error("--events, --baseline-events, --batch and --report-rounds must be at least 1")
    console = Console(width=max(Console().width, 120))
    baseline = "one event per transaction"
    load = os.getloadavg()
    console.print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start (the machine is shared); "
        f"duckdb {duckdb.__version__}"
    )
    projection = asyncio.run(
        measure_projection(events_total, args.baseline_events, args.batch, baseline, console)
    )
    report = measure_report(koans=1_000, repeats=10, rounds=rounds)
    print_tables(console, projection, report)
    base = projection["runs"][0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "bench/evaluator/run.py " + " ".join(sys.argv[1:]),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_average_at_start": load,
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "duckdb": duckdb.__version__,
                    "nats_server": nats_server_version(),
                },
                "baseline": baseline,
                "projection": projection,
                "ratios": {
                    f"{run['mode']}, {run['events']} events, over the baseline": run["events_per_second"]
                    / base["events_per_second"]
                    for run in projection["runs"][1:]
                },
                "report": report,
                "targets": {
                    "events_per_second": TARGET_EVENTS_PER_SECOND,
                    "report_seconds": TARGET_REPORT_SECONDS,
                },
            },
            indent=2,
        )
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
