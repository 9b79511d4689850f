"""Docker backend: one real container per check, each command run in it through the exec API.

The container comes from the locally built base image (deploy/scripts/build-sandbox-image.sh): no
network, read-only root holding little more than /usr (no /etc/passwd, like under bwrap), private
/tmp, all capabilities dropped, no-new-privileges, cgroup memory and pid limits. Its PID 1 only reaps,
as a uid of its own; every command runs as the slot's unprivileged uid. The host's Rust toolchain is
mounted read-only at SANDBOX_RUST, so rustc is the same binary as under bwrap.

Each command goes through the image's `sandbox-exec` helper: it applies the same rlimits as the bwrap
backend, runs the command in a new session with only the given environment, kills whatever the
command left behind when it ends (like the end of bwrap's PID namespace), and appends an exact status
record (exit code or signal, the cgroup's OOM kill count) to stderr, which is stripped here. Wall time
and the output cap are enforced from this side, which reads the exec stream without blocking and, on
either limit, hangs up and kills every process of the slot uid in the container.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import selectors
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from nightshift_sandbox.backends.base import (
    SANDBOX_BASE_UID,
    SANDBOX_PATH,
    SANDBOX_RUST,
    SANDBOX_WORKDIR,
    ProcessLimits,
    ProcessResult,
)
from nightshift_sandbox.backends.bwrap import MAX_FILE_BYTES, MAX_OPEN_FILES

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "nightshift/sandbox-base:bookworm"
# Label the build script puts on the image; bump both together when the image contents change.
IMAGE_LABEL = "nightshift.sandbox-image"
IMAGE_VERSION = "4"
HELPER = "/usr/local/bin/sandbox-exec"
CONTAINER_LABEL = "nightshift.sandbox"
TMP_BYTES = MAX_FILE_BYTES
# The container's PID 1 runs as a uid of its own, so an idle container holds no process of a slot's uid.
INIT_UID = SANDBOX_BASE_UID - 1
# The helper runs as the slot uid too, so RLIMIT_NPROC (counted per uid) gets it on top of the command's
# own budget; the cgroup pid limit leaves room for PID 1 and a kill command as well.
HELPER_PROCESSES = 1
PIDS_HEADROOM = 16
STATUS_RE = re.compile(rb"\x00sandbox-exec (exit|signal) (\d+) oom (\d+)\n\Z")
STATUS_MAX = 64
STREAM_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
API_TIMEOUT = 60
ENGINE_ETC_FILES = ("resolv.conf", "hosts", "hostname")
SANDBOX_ENV = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_WORKDIR, "TMPDIR": "/tmp"}
KILL_SECONDS = 10


@dataclass
class _Container:
    """A started container with its cgroup sizes; a warm one waits with `staging` mounted at /sandbox."""

    container: Any
    memory: int
    pids: int
    staging: Path | None = None


class DockerBackend:
    """Runs every check in its own container from the local base image (see the module doc).

    With `warm` (the default), when a session ends the next container for its slot is created and
    started in the background, over an empty staging directory next to the session's work dir; the
    next session there moves its work dir's entries into that directory and renames it to the work
    dir's path (the bind mount follows the directory), so a check does not wait for a container start.
    Containers are removed in the background too; close() (also run at exit) waits for all of that.
    """

    name = "docker"

    def __init__(
        self,
        toolchain_sysroot: str,
        image: str = DEFAULT_IMAGE,
        memory_bytes: int | None = None,
        warm: bool = True,
    ):
        """`memory_bytes` fixes the container's cgroup memory limit; by default it is the largest
        per-command memory limit the session uses (the compile limit), which rlimits then refine."""
        self.sysroot = toolchain_sysroot
        self.image = image
        self.memory_bytes = memory_bytes
        self.warm = warm
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="docker-sandbox")
        self._warm: dict[int, Future[_Container]] = {}
        self._jobs: set[Future[None]] = set()
        self._closed = False
        self._swept = False
        atexit.register(self.close)

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = docker.from_env(timeout=API_TIMEOUT)
            return self._client

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "the docker backend needs root: it hands each work dir to the slot's sandbox uid"
        try:
            client = docker.from_env(timeout=5)
        except docker.errors.DockerException as exc:
            return f"no Docker engine answers ({_one_line(exc)})"
        try:
            try:
                client.ping()
            except Exception as exc:  # connection refused, missing socket, permissions: all mean "no engine"
                return f"no Docker engine answers ({_one_line(exc)})"
            try:
                image = client.images.get(self.image)
            except docker.errors.ImageNotFound:
                return f"image {self.image} missing: run make sandbox-image"
            version = (image.labels or {}).get(IMAGE_LABEL)
            if version != IMAGE_VERSION:
                have = version or "unlabelled"
                return f"image {self.image} is version {have}, need {IMAGE_VERSION}: run make sandbox-image"
        finally:
            client.close()
        if not (Path(self.sysroot) / "bin" / "rustc").exists():
            return f"no rustc in the toolchain sysroot {self.sysroot}"
        return None

    @contextlib.contextmanager
    def session(self, workdir: Path, slot: int) -> Iterator[DockerSession]:
        uid = SANDBOX_BASE_UID + slot
        workdir = Path(workdir).resolve()
        session = DockerSession(self, workdir, slot, uid, self._adopt_warm(slot, workdir))
        if os.geteuid() == 0:
            os.chown(workdir, uid, uid)
        try:
            yield session
        finally:
            used = session.detach()
            if used is not None:
                self._background(self._remove, used)
                if self.warm:
                    self._prestart(slot, workdir.parent, used.memory, used.pids)

    def close(self) -> None:
        """Remove the warm containers and wait for background removals; later sessions start cold."""
        with self._lock:
            self._closed = True
            warm = list(self._warm.values())
            self._warm.clear()
            jobs = list(self._jobs)
        for future in warm:
            with contextlib.suppress(Exception):
                self._remove(future.result())
        for job in jobs:
            with contextlib.suppress(Exception):
                job.result()

    # -- containers ----------------------------------------------------------------------------------

    def start_container(self, mount: Path, slot: int, memory: int, pids: int) -> Any:
        """Create and start a container for `slot` with `mount` bind-mounted at SANDBOX_WORKDIR."""
        if not self._swept:
            self._swept = True
            self._sweep_orphans()
        try:
            container = self.client.containers.create(
                self.image,
                command=[HELPER, "--init"],
                name=f"nightshift-sandbox-{slot}-{uuid.uuid4().hex[:12]}",
                labels={
                    CONTAINER_LABEL: "1",
                    f"{CONTAINER_LABEL}.slot": str(slot),
                    f"{CONTAINER_LABEL}.owner": f"{socket.gethostname()}:{os.getpid()}",
                },
                user=f"{INIT_UID}:{INIT_UID}",
                hostname="sandbox",
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={TMP_BYTES},mode=1777"},
                mem_limit=memory,
                memswap_limit=memory,
                pids_limit=pids,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ipc_mode="private",
                volumes=[
                    f"{mount}:{SANDBOX_WORKDIR}:rw",
                    f"{self.sysroot}:{SANDBOX_RUST}:ro",
                    # Mounted here, these stop the engine from providing its own (resolv.conf is the host's).
                    *(f"{os.devnull}:/etc/{name}:ro" for name in ENGINE_ETC_FILES),
                ],
                working_dir=SANDBOX_WORKDIR,
                environment=SANDBOX_ENV,
            )
        except docker.errors.ImageNotFound as exc:
            raise RuntimeError(f"image {self.image} missing: run make sandbox-image") from exc
        try:
            container.start()
        except BaseException:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise
        return container

    def _remove(self, used: _Container) -> None:
        try:
            used.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove sandbox container %s: %s", used.container.name, _one_line(exc))
        if used.staging is not None:
            with contextlib.suppress(OSError):
                used.staging.rmdir()

    def _background(self, job: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(RuntimeError):  # the interpreter is shutting down
                    future = self._workers.submit(job, *args)
                    self._jobs.add(future)
                    future.add_done_callback(self._jobs.discard)
                    return
        job(*args)

    def _prestart(self, slot: int, parent: Path, memory: int, pids: int) -> None:
        def start() -> _Container:
            staging = Path(tempfile.mkdtemp(prefix=f".docker-sandbox-{slot}-", dir=parent))
            try:
                if os.geteuid() == 0:
                    os.chown(staging, SANDBOX_BASE_UID + slot, SANDBOX_BASE_UID + slot)
                return _Container(self.start_container(staging, slot, memory, pids), memory, pids, staging)
            except BaseException:
                staging.rmdir()
                raise

        with self._lock:
            if self._closed or slot in self._warm:
                return
            with contextlib.suppress(RuntimeError):  # the interpreter is shutting down
                self._warm[slot] = self._workers.submit(start)

    def _adopt_warm(self, slot: int, workdir: Path) -> _Container | None:
        """The slot's warm container, its staging directory now standing as `workdir`; or None."""
        with self._lock:
            future = self._warm.pop(slot, None)
        if future is None:
            return None
        try:
            warm = future.result()
        except Exception as exc:
            log.warning("warm sandbox container for slot %d failed: %s", slot, _one_line(exc))
            return None
        if (
            warm.staging is None
            or warm.staging.parent != workdir.parent
            or not _swap_in(workdir, warm.staging)
        ):
            self._background(self._remove, warm)
            return None
        warm.staging = None
        return warm

    def _sweep_orphans(self) -> None:
        """Remove containers left by dead processes of this host (a crash skips close())."""
        host = socket.gethostname()
        try:
            leftovers = self.client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
        except docker.errors.APIError:
            return
        for container in leftovers:
            owner_host, _, pid = container.labels.get(f"{CONTAINER_LABEL}.owner", "").partition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)


class DockerSession:
    """Commands in one container: the adopted warm one, or one created on the first command (sized by
    its limits); detach() hands it back to the backend for removal."""

    def __init__(self, backend: DockerBackend, workdir: Path, slot: int, uid: int, warm: _Container | None):
        self.backend = backend
        self.workdir = workdir
        self.slot = slot
        self.uid = uid
        self.user = f"{uid}:{uid}"
        self.current = warm
        self.oom_kills = 0  # the container's cgroup OOM kill count after the last command

    @property
    def container(self) -> Any:
        return self.current.container if self.current is not None else None

    def detach(self) -> _Container | None:
        current, self.current = self.current, None
        return current

    def _ensure_container(self, limits: ProcessLimits) -> None:
        memory = self.backend.memory_bytes or limits.memory_bytes
        pids = limits.max_processes + HELPER_PROCESSES + PIDS_HEADROOM
        if self.current is None:
            container = self.backend.start_container(self.workdir, self.slot, memory, pids)
            self.current = _Container(container, memory, pids)
            self.oom_kills = 0
            return
        grow: dict[str, int] = {}
        if memory > self.current.memory:
            grow.update(mem_limit=memory, memswap_limit=memory)
            self.current.memory = memory
        if pids > self.current.pids:
            grow["pids_limit"] = pids
            self.current.pids = pids
        if grow:
            self.current.container.update(**grow)

    def _replace(self) -> None:
        """Give up on the container (it no longer answers); the next command starts a new one."""
        log.warning("sandbox container %s unresponsive, replacing it", self.container.name)
        self.backend._remove(self.detach())

    def _kill_all(self) -> int | None:
        """SIGKILL every process of the slot user in the container (PID 1 excepted).

        Returns the container's OOM kill count, or None when the container had to go instead."""
        api = self.backend.client.api
        deadline = time.monotonic() + KILL_SECONDS
        output = None
        try:
            exec_id = api.exec_create(
                self.container.id, [HELPER, "--kill"], user=self.user, environment=SANDBOX_ENV
            )
            stream = _ExecStream(api.exec_start(exec_id["Id"], socket=True))
            try:
                output = stream.wait_end(deadline)
            finally:
                stream.close()
        except docker.errors.APIError:
            pass
        match = re.fullmatch(rb"oom (\d+)\n", output or b"")
        if match is None:
            # No room to start even that, or no answer: end the container; the next command gets a new one.
            self._replace()
            return None
        return int(match.group(1))

    # -- running commands ---------------------------------------------------------------------------

    def run(self, argv: list[str], limits: ProcessLimits, env: dict[str, str] | None = None) -> ProcessResult:
        full_env = {**SANDBOX_ENV, **(env or {})}
        if any("=" in key or not key for key in full_env):
            raise ValueError("environment variable names must be non-empty and contain no '='")
        self._ensure_container(limits)
        cpu = max(1, int(limits.cpu_seconds + 0.999))
        nproc = limits.max_processes + HELPER_PROCESSES
        command = [HELPER]
        for name, soft, hard in (
            ("cpu", cpu, cpu + 1),
            ("as", limits.memory_bytes, limits.memory_bytes),
            ("nproc", nproc, nproc),
            ("fsize", MAX_FILE_BYTES, MAX_FILE_BYTES),
            ("nofile", MAX_OPEN_FILES, MAX_OPEN_FILES),
            ("core", 0, 0),
        ):
            command += ["-r", f"{name}={soft}:{hard}"]
        for key, value in full_env.items():
            command += ["-e", f"{key}={value}"]
        return self._exec([*command, "--", *argv], limits)

    def _exec(self, command: list[str], limits: ProcessLimits) -> ProcessResult:
        api = self.backend.client.api
        start = time.monotonic()
        deadline = start + limits.wall_seconds
        exec_id = api.exec_create(
            self.container.id,
            command,
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            user=self.user,
            environment=SANDBOX_ENV,
            workdir=SANDBOX_WORKDIR,
        )["Id"]
        stream = _ExecStream(api.exec_start(exec_id, socket=True))
        chunks: list[list[Any]] = []  # [stream id, bytearray] in arrival order
        total = 0
        # The status record rides at the end of stderr: allow for it before calling the output too long.
        budget = limits.output_bytes + STATUS_MAX
        timed_out = over = ended = False
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(stream.sock, selectors.EVENT_READ)
                while not ended:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        timed_out = True
                        break
                    if not stream.pending and not sel.select(timeout=min(remaining, 0.5)):
                        continue
                    frames, ended = stream.read()
                    for stream_id, payload in frames:
                        room = max(budget - total, 0)
                        kept = payload[:room]
                        if kept:
                            if chunks and chunks[-1][0] == stream_id:
                                chunks[-1][1] += kept
                            else:
                                chunks.append([stream_id, bytearray(kept)])
                            total += len(kept)
                        if len(payload) > room:
                            over = True
                    if over:
                        break
        finally:
            # Hang up first: the engine stops relaying output nobody reads, which would hold up the kill.
            stream.close()
        oom_kills = self._kill_all() if timed_out or over else None

        status = _strip_status(chunks) if ended and not over else None
        truncated = _trim(chunks, limits.output_bytes) or over
        result = ProcessResult(
            exit_code=None,
            signal=None,
            stdout=b"".join(bytes(c[1]) for c in chunks if c[0] == STDOUT),
            stderr=b"".join(bytes(c[1]) for c in chunks if c[0] == STDERR),
            wall_seconds=0.0,
            timed_out=timed_out,
            output_truncated=truncated,
        )
        if status is not None:
            kind, number, oom_kills = status
            if kind == b"exit":
                result.exit_code = number
            else:
                result.signal = number
        elif timed_out or over:
            result.signal = int(signal.SIGKILL)
        else:
            # The helper itself was killed (the command may kill every process of its uid): docker's word,
            # and end what the command left running.
            code = api.exec_inspect(exec_id).get("ExitCode")
            if code is not None and code <= 128:
                result.exit_code = code
            else:
                result.signal = code - 128 if code is not None else int(signal.SIGKILL)
            oom_kills = self._kill_all()
        if oom_kills is not None:
            result.memory_exceeded = oom_kills > self.oom_kills
            self.oom_kills = oom_kills
        # RLIMIT_CPU ends a process with SIGXCPU.
        if result.signal == signal.SIGXCPU:
            result.timed_out = True
        result.wall_seconds = time.monotonic() - start
        return result


class _ExecStream:
    """The multiplexed stdout/stderr stream of a started exec, read without blocking."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.sock: socket.socket = getattr(raw, "_sock", raw)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        # http.client may have read past the response headers: those bytes sit in its buffer.
        self.pending = self._buffered()

    def _buffered(self) -> bool:
        response = getattr(self.raw, "_response", None)
        reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
        if reader is None:
            return False
        try:
            early = reader.peek()
        except (BlockingIOError, OSError, ValueError):
            return False
        if early:
            self.buffer += reader.read(len(early))
        return bool(self.buffer)

    def read(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Frames now complete, and whether the stream has ended."""
        ended = False
        if self.pending:
            self.pending = False
        else:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data is not None:
                ended = not data
                self.buffer += data
        frames = []
        while len(self.buffer) >= STREAM_HEADER.size:
            stream_id, size = STREAM_HEADER.unpack_from(self.buffer)
            if len(self.buffer) < STREAM_HEADER.size + size:
                break
            frames.append((stream_id, bytes(self.buffer[STREAM_HEADER.size : STREAM_HEADER.size + size])))
            del self.buffer[: STREAM_HEADER.size + size]
        return [(s, p) for s, p in frames if s in (STDOUT, STDERR) and p], ended

    def wait_end(self, deadline: float) -> bytes | None:
        """Everything on stdout until the stream ends; None if it is still open at `deadline`."""
        out = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if self.pending or sel.select(timeout=remaining):
                    frames, ended = self.read()
                    out += b"".join(payload for stream_id, payload in frames if stream_id == STDOUT)
                    if ended:
                        return bytes(out)

    def close(self) -> None:
        response = getattr(self.raw, "_response", None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


def _strip_status(chunks: list[list[Any]]) -> tuple[bytes, int, int] | None:
    """Remove the helper's status record from the end of stderr and decode it."""
    tail = bytearray()
    for stream_id, data in reversed(chunks):
        if stream_id == STDERR:
            tail[:0] = data
            if len(tail) >= STATUS_MAX:
                break
    match = STATUS_RE.search(bytes(tail[-STATUS_MAX:]))
    if match is None:
        return None
    drop = len(match.group(0))
    for chunk in reversed(chunks):
        if not drop:
            break
        if chunk[0] == STDERR:
            cut = min(drop, len(chunk[1]))
            del chunk[1][len(chunk[1]) - cut :]
            drop -= cut
    chunks[:] = [c for c in chunks if c[1]]
    return match.group(1), int(match.group(2)), int(match.group(3))


def _trim(chunks: list[list[Any]], cap: int) -> bool:
    """Keep the first `cap` bytes of output in arrival order; True when something was cut."""
    excess = sum(len(c[1]) for c in chunks) - cap
    if excess <= 0:
        return False
    while excess > 0:
        data = chunks[-1][1]
        cut = min(excess, len(data))
        del data[len(data) - cut :]
        excess -= cut
        if not data:
            chunks.pop()
    return True


def _swap_in(workdir: Path, staging: Path) -> bool:
    """Move workdir's entries into the (mounted, empty) staging dir, then rename staging to workdir."""
    mode = stat.S_IMODE(workdir.stat().st_mode)
    moved: list[str] = []
    try:
        for name in os.listdir(workdir):
            os.rename(workdir / name, staging / name)
            moved.append(name)
        os.chmod(staging, mode)
        os.rename(staging, workdir)
        return True
    except OSError as exc:
        log.warning("could not use the warm sandbox container for %s: %s", workdir, exc)
        for name in moved:
            with contextlib.suppress(OSError):
                os.rename(staging / name, workdir / name)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
