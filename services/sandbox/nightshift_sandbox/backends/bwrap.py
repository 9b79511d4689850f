"""bubblewrap backend: fresh namespaces per command, host /usr read-only, nothing else of the host."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from nightshift_sandbox.backends.base import (
    SANDBOX_BASE_UID,
    SANDBOX_PATH,
    SANDBOX_RUST,
    SANDBOX_WORKDIR,
    ProcessLimits,
    ProcessResult,
)
from nightshift_sandbox.backends.process import run_capped

# Largest file the sandboxed code may write (the compiled test binary is a few MB).
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_OPEN_FILES = 256
STACK_BYTES = 8 * 1024 * 1024
TMPFS_BYTES = 256 * 1024 * 1024


class BwrapBackend:
    """Runs each command under `bwrap`; as root it drops to an unprivileged uid per worker slot."""

    name = "bwrap"

    def __init__(self, toolchain_sysroot: str):
        self.sysroot = toolchain_sysroot
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self.setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        self.prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"

    def available(self) -> str | None:
        if not shutil.which("bwrap"):
            return "bwrap is not installed (Debian package bubblewrap; `make setup` installs it)"
        if os.geteuid() == 0 and not shutil.which("setpriv"):
            return "setpriv (util-linux) is needed to drop root inside the sandbox"
        return None

    @contextlib.contextmanager
    def session(self, workdir: Path, slot: int) -> Iterator[BwrapSession]:
        uid = SANDBOX_BASE_UID + slot
        if os.geteuid() == 0:
            os.chown(workdir, uid, uid)
        yield BwrapSession(self, workdir, uid)


class BwrapSession:
    def __init__(self, backend: BwrapBackend, workdir: Path, uid: int):
        self.backend = backend
        self.workdir = workdir
        self.uid = uid

    def argv(self, command: list[str], env: dict[str, str]) -> list[str]:
        b = self.backend
        args = [b.bwrap, "--die-with-parent", "--new-session", "--clearenv"]
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
        args += ["--ro-bind", "/usr", "/usr", "--tmpfs", "/usr/local"]
        for top in ("bin", "lib", "lib64", "sbin"):
            host = Path("/") / top
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.exists():
                args += ["--ro-bind", str(host), f"/{top}"]
        # Only what the linker needs from /etc: `cc` resolves through alternatives.
        args += ["--perms", "0755", "--dir", "/etc"]
        for name in ("alternatives", "ld.so.cache"):
            if (Path("/etc") / name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        args += ["--perms", "0755", "--dir", "/opt", "--ro-bind", b.sysroot, SANDBOX_RUST]
        args += ["--bind", str(self.workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
        args += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        if os.geteuid() == 0:
            # No user namespace: the real uid changes, so RLIMIT_NPROC binds (it never binds root).
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
            args += [b.setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
            args += ["--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
        else:
            args += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.uid)]
        return [*args, "--", *command]

    def run(self, argv: list[str], limits: ProcessLimits, env: dict[str, str] | None = None) -> ProcessResult:
        full_env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_WORKDIR, "TMPDIR": "/tmp", **(env or {})}
        prlimit = [self.backend.prlimit, *rlimit_argv(limits), "--"]
        result = run_capped([*prlimit, *self.argv(argv, full_env)], limits)
        # bwrap reports a child killed by signal N as exit status 128 + N.
        if result.exit_code is not None and result.exit_code > 128:
            result.signal, result.exit_code = result.exit_code - 128, None
        # RLIMIT_CPU ends a process with SIGXCPU.
        if result.signal == signal.SIGXCPU:
            result.timed_out = True
        return result


def rlimit_argv(limits: ProcessLimits) -> list[str]:
    """`prlimit` options for one command (inherited by everything it starts)."""
    cpu = max(1, int(limits.cpu_seconds + 0.999))
    return [
        f"--cpu={cpu}:{cpu + 1}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.max_processes}",
        f"--fsize={MAX_FILE_BYTES}",
        f"--nofile={MAX_OPEN_FILES}",
        "--core=0",
        # An unlimited stack rlimit makes rustc's thread stacks fail under an address-space limit.
        f"--stack={STACK_BYTES}",
    ]
