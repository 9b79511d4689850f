"""One check: write the program, compile it with rustc (JSON diagnostics), run its tests, decide."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from nightshift.rustsrc import has_main, split_tests
from nightshift.v1 import sandbox_pb2

from nightshift_sandbox.backends.base import Backend, ProcessLimits, ProcessResult, SandboxSession
from nightshift_sandbox.diagnostics import (
    allocation_failed,
    normalise_paths,
    parse_rustc_json,
    parse_test_output,
)

S = sandbox_pb2
SOURCE_FILE = "main.rs"
TEST_BINARY = "main_test"


@dataclass(frozen=True)
class CheckInput:
    """A validated request: what to compile and how."""

    source: str
    tests: str
    edition: str
    mode: int
    run_limits: ProcessLimits


def assemble(source: str, tests: str) -> tuple[str, bool]:
    """The program the sandbox compiles: the candidate without its own tests, plus the task's tests.

    Returns (program, tests_replaced). With no task tests the candidate is compiled as it is.
    """
    if not tests.strip():
        return source, False
    program, own_tests = split_tests(source)
    return program.rstrip() + "\n\n" + tests.strip() + "\n", bool(own_tests.strip())


def run_check(
    backend: Backend, work_root: Path, slot: int, check: CheckInput, compile_limits: ProcessLimits
) -> sandbox_pb2.Verdict:
    """Run one check in a fresh work dir through `backend`; always returns a verdict."""
    started = time.monotonic()
    program, tests_replaced = assemble(check.source, check.tests)
    verdict = S.Verdict(
        backend=backend.name,
        tests_replaced=tests_replaced,
        source_sha256=hashlib.sha256(check.source.encode()).hexdigest(),
    )
    work_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="check-", dir=work_root))
    try:
        (workdir / SOURCE_FILE).write_text(program)
        workdir.chmod(0o755)
        with backend.session(workdir, slot) as session:
            _compile_and_test(session, check, program, compile_limits, verdict)
    except Exception as exc:  # the verdict says what broke; the service keeps serving
        verdict.status = S.SANDBOX_ERROR
        verdict.detail = f"sandbox failure: {exc}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    verdict.total_seconds = time.monotonic() - started
    return verdict


def _rustc(check: CheckInput, program: str, *, tool: str = "rustc") -> list[str]:
    argv = [tool, f"--edition={check.edition}", "--error-format=json", "-C", "debuginfo=0"]
    if check.mode == S.MODE_BUILD or tool != "rustc":
        argv += ["--emit=metadata", "-o", "main.rmeta"]
        if not has_main(program):
            argv += ["--crate-type=lib"]
    else:
        argv += ["--test", "-o", TEST_BINARY]
    return [*argv, SOURCE_FILE]


def _compile_and_test(
    session: SandboxSession,
    check: CheckInput,
    program: str,
    compile_limits: ProcessLimits,
    verdict: sandbox_pb2.Verdict,
) -> None:
    compiled = session.run(_rustc(check, program), compile_limits)
    verdict.compile_seconds = compiled.wall_seconds
    diagnostics, other = parse_rustc_json(compiled.stderr.decode(errors="replace"))
    verdict.diagnostics.extend(diagnostics)
    if _limit_status(compiled, verdict, phase="compiling"):
        return
    if compiled.exit_code != 0:
        verdict.status = S.COMPILE_ERROR
        if not any(d.level == "error" for d in diagnostics):
            verdict.detail = "; ".join(other)[-2000:] or _exit_detail(compiled, "rustc")
        return
    if check.mode != S.MODE_BUILD:
        ran = session.run([f"./{TEST_BINARY}", "--color=never"], check.run_limits)
        verdict.run_seconds = ran.wall_seconds
        verdict.stdout = normalise_paths(ran.stdout.decode(errors="replace"))
        verdict.stderr = normalise_paths(ran.stderr.decode(errors="replace"))
        verdict.tests.extend(sorted(parse_test_output(verdict.stdout), key=lambda t: t.name))
        if _limit_status(ran, verdict, phase="running the tests"):
            return
        if ran.exit_code != 0:
            verdict.status = S.TEST_FAILED
            failed = [t.name for t in verdict.tests if not t.passed]
            verdict.detail = f"failed: {', '.join(failed)}" if failed else _exit_detail(ran, "test binary")
            return
    if check.mode == S.MODE_CLIPPY:
        linted = session.run(
            [*_rustc(check, program, tool="clippy-driver"), "-D", "warnings"], compile_limits
        )
        lints, other = parse_rustc_json(linted.stderr.decode(errors="replace"))
        verdict.diagnostics.extend(lints)
        verdict.compile_seconds += linted.wall_seconds
        if _limit_status(linted, verdict, phase="linting"):
            return
        if linted.exit_code != 0:
            verdict.status = S.LINT_FAILED
            if not lints:
                verdict.detail = "; ".join(other)[-2000:] or _exit_detail(linted, "clippy")
            return
    verdict.status = S.OK


def _limit_status(result: ProcessResult, verdict: sandbox_pb2.Verdict, *, phase: str) -> bool:
    """Set TIMEOUT / MEMORY_LIMIT / OUTPUT_LIMIT when a limit stopped the process."""
    if result.output_truncated:
        verdict.status = S.OUTPUT_LIMIT
        verdict.output_truncated = True
        verdict.detail = f"output limit reached while {phase}; output truncated"
    elif result.memory_exceeded or allocation_failed(result.stderr):
        verdict.status = S.MEMORY_LIMIT
        verdict.detail = f"memory limit reached while {phase}"
    elif result.timed_out:
        verdict.status = S.TIMEOUT
        verdict.detail = f"time limit reached while {phase} ({result.wall_seconds:.1f}s wall)"
    else:
        return False
    return True


def _exit_detail(result: ProcessResult, what: str) -> str:
    if result.signal is not None:
        return f"{what} killed by signal {result.signal}"
    return f"{what} exited with {result.exit_code}"


def effective_limits(requested: sandbox_pb2.CheckLimits, defaults: ProcessLimits) -> ProcessLimits:
    """The request's limits, each zero field taken from the service defaults."""
    return replace(
        defaults,
        cpu_seconds=requested.cpu_seconds or defaults.cpu_seconds,
        wall_seconds=requested.wall_seconds or defaults.wall_seconds,
        memory_bytes=requested.memory_bytes or defaults.memory_bytes,
        max_processes=requested.max_processes or defaults.max_processes,
        output_bytes=requested.output_bytes or defaults.output_bytes,
    )
