"""Sandbox latency and throughput, as ratios against bare rustc and against cargo-new-per-attempt.

    .venv/bin/python bench/sandbox/run.py [--repeats N] [--out bench/results/sandbox.json]

Baselines, measured in the same run on the same programs:
  * bare rustc: the toolchain's rustc with `--emit=metadata` (build) or `--test` + run (test) on the
    host, no isolation;
  * cargo-new: what the published system did per attempt: `cargo new` + write main.rs + `cargo check`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nightshift.natsserver import NatsServer
from nightshift.rustsrc import split_tests
from nightshift.v1 import sandbox_pb2
from nightshift_sandbox.backends import make_backend
from nightshift_sandbox.checker import CheckInput, run_check
from nightshift_sandbox.config import SandboxConfig
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from programs import PROGRAMS  # noqa: E402

MODES = {"build": sandbox_pb2.MODE_BUILD, "test": sandbox_pb2.MODE_TEST}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_rustc(rustc: str, source: str, mode: str, workdir: Path) -> None:
    (workdir / "main.rs").write_text(source)
    if mode == "build":
        subprocess.run(
            [
                rustc,
                "--edition=2021",
                "--error-format=json",
                "--emit=metadata",
                "-o",
                str(workdir / "main.rmeta"),
                "main.rs",
            ],
            cwd=workdir,
            capture_output=True,
        )
        return
    built = subprocess.run(
        [
            rustc,
            "--edition=2021",
            "--error-format=json",
            "-C",
            "debuginfo=0",
            "--test",
            "-o",
            "main_test",
            "main.rs",
        ],
        cwd=workdir,
        capture_output=True,
    )
    if built.returncode == 0:
        subprocess.run(["./main_test"], cwd=workdir, capture_output=True)


def cargo_new_check(source: str, workdir: Path) -> None:
    crate = workdir / f"attempt_{time.monotonic_ns()}"
    subprocess.run(["cargo", "new", "--quiet", "--vcs", "none", str(crate)], capture_output=True, check=True)
    (crate / "src" / "main.rs").write_text(source)
    subprocess.run(["cargo", "check", "--quiet", "--message-format=json"], cwd=crate, capture_output=True)
    shutil.rmtree(crate, ignore_errors=True)


def stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000, "n": len(ordered)}


def measure(config: SandboxConfig, repeats: int, console: Console) -> dict:
    results: dict[str, dict] = {}
    backends = {}
    for name in ("bwrap", "docker"):
        backend = make_backend(name, config.sysroot)
        reason = backend.available()
        if reason:
            console.print(f"[yellow]skipping {name}: {reason}[/]")
        else:
            backends[name] = backend
    # The toolchain's own rustc, as the sandbox runs it (not the rustup proxy on PATH).
    rustc = str(Path(config.sysroot) / "bin" / "rustc")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mode in ("build", "test"):
            samples: dict[str, list[float]] = {"bare rustc": [], **{b: [] for b in backends}}
            if mode == "build":
                samples["cargo-new"] = []
            for _ in range(repeats):
                for source in PROGRAMS.values():
                    bare = timed(lambda s=source, m=mode: bare_rustc(rustc, s, m, work))
                    samples["bare rustc"].append(bare)
                    program, tests = split_tests(source)
                    check = CheckInput(program, tests, "2021", MODES[mode], config.run_limits)
                    for name, backend in backends.items():
                        samples[name].append(
                            timed(
                                lambda b=backend, c=check: run_check(
                                    b, work / "checks", 0, c, config.compile_limits
                                )
                            )
                        )
                    if mode == "build":
                        samples["cargo-new"].append(timed(lambda s=source: cargo_new_check(s, work)))
            results[mode] = {name: stats(values) for name, values in samples.items()}
    return results


async def throughput(config: SandboxConfig, total: int) -> dict:
    """Checks per second through the real gRPC service with its worker pool."""
    import grpc
    from nightshift.v1 import sandbox_pb2_grpc
    from nightshift_sandbox.server import start

    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        service = await start(replace(config, addr="127.0.0.1:0", nats_url=nats.url, queue_size=total))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = sandbox_pb2_grpc.SandboxStub(channel)
                sources = list(PROGRAMS.values())
                requests = []
                for i in range(total):
                    program, tests = split_tests(sources[i % len(sources)])
                    requests.append(sandbox_pb2.CheckRequest(source=program, tests=tests))
                start_time = time.perf_counter()
                replies = await asyncio.gather(*(stub.Check(r, timeout=300) for r in requests))
                elapsed = time.perf_counter() - start_time
        finally:
            await service.stop(grace=5)
            nats.stop()
    statuses: dict[str, int] = {}
    for reply in replies:
        name = sandbox_pb2.CheckStatus.Name(reply.verdict.status)
        statuses[name] = statuses.get(name, 0) + 1
    return {
        "checks": total,
        "workers": config.workers,
        "seconds": elapsed,
        "checks_per_second": total / elapsed,
        "statuses": statuses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="passes over the programs (default 5)")
    parser.add_argument("--throughput-checks", type=int, default=24)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "sandbox.json"))
    args = parser.parse_args()
    console = Console()
    config = SandboxConfig.from_env()
    console.print(f"{len(PROGRAMS)} programs x {args.repeats} repeats, {config.workers} workers")
    latency = measure(config, args.repeats, console)
    pool = asyncio.run(throughput(config, args.throughput_checks))

    table = Table(title="sandbox latency per check (ms)")
    for column in ("mode", "runner", "median", "p95", "median vs bare rustc", "overhead (ms)"):
        table.add_column(column)
    for mode, runners in latency.items():
        base = runners["bare rustc"]["median_ms"]
        for name, s in runners.items():
            table.add_row(
                mode,
                name,
                f"{s['median_ms']:.1f}",
                f"{s['p95_ms']:.1f}",
                f"{s['median_ms'] / base:.2f}x",
                f"{s['median_ms'] - base:+.1f}",
            )
    console.print(table)
    build = latency["build"]
    ratios = {}
    if "bwrap" in build:
        ratios["cargo_new_over_bwrap"] = build["cargo-new"]["median_ms"] / build["bwrap"]["median_ms"]
        console.print(
            f"bwrap is {ratios['cargo_new_over_bwrap']:.1f}x faster than cargo-new-per-attempt (build)"
        )
    console.print(
        f"pool: {pool['checks']} test-mode checks in {pool['seconds']:.1f}s = "
        f"{pool['checks_per_second']:.2f} checks/s with {pool['workers']} workers {pool['statuses']}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "make bench (bench/sandbox/run.py)",
                "machine": {"cpus": config.workers, "platform": platform.platform()},
                "repeats": args.repeats,
                "programs": sorted(PROGRAMS),
                "latency": latency,
                "ratios": ratios,
                "throughput": pool,
            },
            indent=2,
        )
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
