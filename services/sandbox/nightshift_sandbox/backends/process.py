"""Run a host process with a wall-clock limit and an output cap; nothing it started outlives it."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time

from nightshift_sandbox.backends.base import ProcessLimits, ProcessResult

# After a kill, how long to wait for every process holding the output pipes to be gone.
REAP_SECONDS = 10.0


def run_capped(argv: list[str], limits: ProcessLimits, *, env: dict[str, str] | None = None) -> ProcessResult:
    """Run argv; kill it on wall time or when stdout+stderr exceed the cap.

    The arguments keep subprocess on its posix_spawn path: a plain fork() from a worker thread
    runs gRPC's fork handlers in the child, which crash it before it can exec. The command that
    reaches here (bwrap) keeps its children in a PID namespace that dies with it.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else {},
        close_fds=False,  # our descriptors are non-inheritable (PEP 446); only the pipes pass
    )
    out, err = bytearray(), bytearray()
    truncated = timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        deadline = start + limits.wall_seconds
        while sel.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                room = limits.output_bytes - len(out) - len(err)
                key.data.extend(chunk[: max(room, 0)])
                truncated = truncated or len(chunk) > room
        if timed_out or truncated:
            _kill(proc)
            _drain(sel, time.monotonic() + REAP_SECONDS)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    code = proc.returncode
    return ProcessResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=bytes(out),
        stderr=bytes(err),
        wall_seconds=time.monotonic() - start,
        timed_out=timed_out,
        output_truncated=truncated,
    )


def _kill(proc: subprocess.Popen) -> None:
    """Kill the direct child; bwrap's --die-with-parent then takes the sandbox's PID namespace down."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)


def _drain(sel: selectors.BaseSelector, until: float) -> None:
    """Discard output until every writer has exited (end of file on both pipes) or `until`."""
    while sel.get_map() and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.2):
            if not os.read(key.fd, 65536):
                sel.unregister(key.fileobj)
