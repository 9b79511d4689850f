"""Isolation backends: `bwrap` (default, fast) and `docker` (a real container per check)."""

from __future__ import annotations

from nightshift_sandbox.backends.base import Backend

BACKEND_NAMES = ("bwrap", "docker")


def make_backend(name: str, toolchain_sysroot: str) -> Backend:
    """Build the backend called `name`; raises ValueError for an unknown name."""
    if name == "bwrap":
        from nightshift_sandbox.backends.bwrap import BwrapBackend

        return BwrapBackend(toolchain_sysroot)
    if name == "docker":
        from nightshift_sandbox.backends.docker import DockerBackend

        return DockerBackend(toolchain_sysroot)
    raise ValueError(f"unknown backend {name!r} (expected one of {', '.join(BACKEND_NAMES)})")
