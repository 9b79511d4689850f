"""Parse rustc's JSON diagnostics and libtest's output into verdict messages, paths normalised."""

from __future__ import annotations

import json
import re

from nightshift.v1 import sandbox_pb2

from nightshift_sandbox.backends.base import SANDBOX_RUST, SANDBOX_WORKDIR

# Paths that would leak the sandbox layout or the toolchain location into prompts.
_PATH_PATTERNS = [
    (re.compile(re.escape(SANDBOX_WORKDIR) + r"/"), ""),
    (re.compile(re.escape(SANDBOX_RUST) + r"/lib/rustlib/src/rust/"), "<rust>/"),
    (re.compile(re.escape(SANDBOX_RUST) + r"/"), "<rust>/"),
    (re.compile(r"/rustc/[0-9a-f]{40}/"), "<rust>/"),
    (re.compile(r"/tmp/[^\s:'\"`]+/"), ""),
]
# rustc's closing summaries carry no information about the program.
_SUMMARY = re.compile(
    r"^(aborting due to|could not compile|Some errors have detailed|For more information about)"
)
_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", re.MULTILINE)
_ALLOC_FAILED = re.compile(rb"memory allocation of \d+ bytes failed")


def normalise_paths(text: str) -> str:
    for pattern, replacement in _PATH_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def parse_rustc_json(stderr: str) -> tuple[list[sandbox_pb2.Diagnostic], list[str]]:
    """Diagnostics from `--error-format=json` output, plus the non-JSON lines (e.g. linker noise)."""
    diagnostics, other = [], []
    for line in stderr.splitlines():
        if not line.startswith("{"):
            if line.strip():
                other.append(normalise_paths(line))
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            other.append(normalise_paths(line))
            continue
        if data.get("$message_type", "diagnostic") != "diagnostic":
            continue
        level = data.get("level", "")
        message = data.get("message", "")
        if level not in ("error", "warning") or _SUMMARY.match(message):
            continue
        if level == "error" and not data.get("spans") and message.startswith("aborting"):
            continue
        code = (data.get("code") or {}).get("code") or ""
        primary = next((s for s in data.get("spans", []) if s.get("is_primary")), None)
        diagnostics.append(
            sandbox_pb2.Diagnostic(
                code=code,
                level=level,
                message=normalise_paths(message),
                line=int(primary["line_start"]) if primary else 0,
                column=int(primary["column_start"]) if primary else 0,
                rendered=normalise_paths(data.get("rendered") or message).rstrip(),
            )
        )
    return diagnostics, other


def parse_test_output(stdout: str) -> list[sandbox_pb2.TestResult]:
    """Per-test results from libtest's plain output (ignored tests are left out)."""
    results = []
    for name, outcome in _TEST_LINE.findall(stdout):
        if outcome != "ignored":
            results.append(sandbox_pb2.TestResult(name=name, passed=outcome == "ok"))
    return results


def allocation_failed(stderr: bytes) -> bool:
    return bool(_ALLOC_FAILED.search(stderr))
