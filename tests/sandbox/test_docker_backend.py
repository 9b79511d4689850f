"""The docker backend on its own: real containers from the local image, rustc from the host toolchain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest
from nightshift_sandbox.backends.base import SANDBOX_BASE_UID, ProcessLimits
from nightshift_sandbox.backends.docker import DockerBackend

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
SLOT = 5
UID = SANDBOX_BASE_UID + SLOT
HOST_ENV = "NIGHTSHIFT_DOCKER_TEST_HOST_SECRET"
COMPILE = ProcessLimits(
    cpu_seconds=60, wall_seconds=180, memory_bytes=3 * 1024 * MIB, max_processes=128, output_bytes=4 * MIB
)
RUN = ProcessLimits(
    cpu_seconds=10, wall_seconds=30, memory_bytes=512 * MIB, max_processes=64, output_bytes=MIB
)

# One program, many behaviours: compiled once per module, each test picks one with argv[1].
PROGRAM = r"""
use std::io::Write;
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "hello" => println!("hello from the sandbox"),
        "abort" => std::process::abort(),
        "exit" => {
            eprint!("partial line");
            std::process::exit(arg(2).parse().unwrap());
        }
        "read" => match std::fs::read_to_string(arg(2)) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("unreadable: {e}"),
        },
        "connect" => match std::net::TcpStream::connect(("127.0.0.1", arg(2).parse::<u16>().unwrap())) {
            Ok(_) => println!("connected"),
            Err(e) => println!("refused: {e}"),
        },
        "spin" => loop {
            std::hint::black_box(0u64);
        },
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(1000)),
        "flood" => {
            let block = vec![b'x'; 1 << 20];
            let mut out = std::io::stdout().lock();
            for _ in 0..50 {
                if out.write_all(&block).is_err() {
                    break;
                }
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 64 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "forkbomb" => {
            let mut children = Vec::new();
            loop {
                match Command::new("sleep").arg("1000").spawn() {
                    Ok(child) => children.push(child),
                    Err(e) => {
                        println!("spawned {} then: {e}", children.len());
                        break;
                    }
                }
            }
        }
        "killall" => {
            Command::new("sh").args(["-c", "sleep 1000 & kill -9 -1"]).status().unwrap();
        }
        "env" => {
            println!("compile time: {:?}", option_env!("NIGHTSHIFT_DOCKER_TEST_HOST_SECRET"));
            println!("run time: {:?}", std::env::var("NIGHTSHIFT_DOCKER_TEST_HOST_SECRET").ok());
            println!("given: {:?}", std::env::var("GIVEN").ok());
        }
        "whoami" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            for line in status.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("CapEff:")) {
                println!("{line}");
            }
        }
        other => panic!("unknown mode {other:?}"),
    }
}
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerBackend]:
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()
    backend = DockerBackend(sysroot)
    reason = backend.available()
    if reason:
        pytest.skip(f"docker backend unavailable: {reason}")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def built(backend, tmp_path_factory) -> Path:
    """A work dir holding the compiled PROGRAM (the host env carries a secret while it compiles)."""
    workdir = tmp_path_factory.mktemp("docker-built")
    (workdir / "main.rs").write_text(PROGRAM)
    os.environ[HOST_ENV] = "leaked"
    try:
        with backend.session(workdir, SLOT) as session:
            result = session.run(["rustc", "--edition=2021", "-o", "prog", "main.rs"], COMPILE)
    finally:
        del os.environ[HOST_ENV]
    assert result.exit_code == 0, result.stderr.decode(errors="replace")
    return workdir


def run(backend, workdir: Path, *args: str, env=None, **limits):
    with backend.session(workdir, SLOT) as session:
        return session.run(["./prog", *args], replace(RUN, **limits), env)


def test_compile_and_run_prints(backend, built):
    result = run(backend, built, "hello")
    assert (result.exit_code, result.signal) == (0, None)
    assert result.stdout == b"hello from the sandbox\n"
    assert result.stderr == b""
    assert not (result.timed_out or result.output_truncated or result.memory_exceeded)


def test_exit_code_signal_and_stderr_are_exact(backend, built):
    exited = run(backend, built, "exit", "3")
    assert (exited.exit_code, exited.signal) == (3, None)
    assert exited.stderr == b"partial line"
    aborted = run(backend, built, "abort")
    assert (aborted.exit_code, aborted.signal) == (None, signal.SIGABRT)
    assert not aborted.timed_out


def test_runs_unprivileged_as_the_slot_user(backend, built):
    out = run(backend, built, "whoami").stdout.decode()
    assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in out
    assert "CapEff:\t0000000000000000" in out


def test_host_files_are_not_visible(backend, built, tmp_path):
    token = f"host-secret-{uuid.uuid4()}"
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    secret.chmod(0o644)
    at_run_time = run(backend, built, "read", str(secret))
    assert token.encode() not in at_run_time.stdout
    assert b"unreadable" in at_run_time.stdout
    # Like under bwrap, the container has no /etc/passwd at all, and the engine's /etc files are empty.
    for path in ("/etc/passwd", "/etc/shadow", "/root/.bashrc"):
        assert run(backend, built, "read", path).stdout.startswith(b"unreadable"), path
    for path in ("/etc/resolv.conf", "/etc/hosts", "/etc/hostname"):
        assert run(backend, built, "read", path).stdout == b"", path

    workdir = tmp_path / "include"
    workdir.mkdir()
    (workdir / "main.rs").write_text(
        f'fn main() {{ print!("{{}}{{}}", include_str!("{secret}"), include_str!("/etc/passwd")); }}\n'
    )
    with backend.session(workdir, SLOT) as session:
        compiled = session.run(["rustc", "-o", "prog", "main.rs"], COMPILE)
    assert compiled.exit_code not in (0, None)
    assert token.encode() not in compiled.stdout + compiled.stderr
    assert compiled.stderr.count(b"No such file or directory") == 2


def test_network_is_unreachable(backend, built):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = run(backend, built, "connect", str(listener.getsockname()[1]))
    assert b"refused" in result.stdout
    assert b"connected" not in result.stdout


def test_infinite_loop_hits_the_cpu_limit(backend, built):
    result = run(backend, built, "spin", cpu_seconds=1, wall_seconds=20)
    assert result.timed_out
    assert result.exit_code is None and result.signal == signal.SIGXCPU


def test_sleeping_forever_hits_the_wall_limit(backend, built):
    result = run(backend, built, "sleep", wall_seconds=1)
    assert result.timed_out
    assert result.exit_code is None and result.signal == signal.SIGKILL


def test_huge_output_is_truncated(backend, built):
    cap = 256 * 1024
    result = run(backend, built, "flood", output_bytes=cap)
    assert result.output_truncated
    assert len(result.stdout) + len(result.stderr) <= cap
    assert result.stdout == b"x" * len(result.stdout) and len(result.stdout) > cap // 2


def test_allocation_bomb_fails(backend, built):
    result = run(backend, built, "alloc", memory_bytes=256 * MIB)
    assert result.exit_code != 0
    assert result.memory_exceeded or b"memory allocation of" in result.stderr


def test_container_memory_limit_is_reported(built, backend):
    # A cgroup smaller than the address-space limit: the container's OOM killer stops the program.
    small = DockerBackend(backend.sysroot, memory_bytes=128 * MIB, warm=False)
    try:
        result = run(small, built, "alloc", memory_bytes=2048 * MIB)
    finally:
        small.close()
    assert result.memory_exceeded
    assert result.signal == signal.SIGKILL


def test_fork_bomb_is_contained(backend, built):
    result = run(backend, built, "forkbomb", max_processes=16)
    assert result.exit_code == 0
    spawned = int(result.stdout.split()[1])
    assert 0 < spawned < 16
    leftovers = subprocess.run(["ps", "-u", str(UID), "-o", "pid="], capture_output=True, text=True).stdout
    assert leftovers.split() == [], "sandboxed processes outlived their session"


def test_killing_everything_it_can_only_ends_the_command(backend, built):
    with backend.session(built, SLOT) as session:
        result = session.run(["./prog", "killall"], RUN)
        assert result.exit_code is None and result.signal == signal.SIGKILL
        assert not result.timed_out
        again = session.run(["./prog", "hello"], RUN)
    assert again.stdout == b"hello from the sandbox\n"


def test_host_environment_never_reaches_the_program(backend, built, monkeypatch):
    monkeypatch.setenv(HOST_ENV, "leaked")
    out = run(backend, built, "env", env={"GIVEN": "yes"}).stdout.decode()
    assert "leaked" not in out
    assert "compile time: None" in out
    assert "run time: None" in out
    assert 'given: Some("yes")' in out


def gone(client, container_id: str, seconds: float = 20) -> bool:
    """Whether the container is removed within `seconds` (removal runs in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.containers.get(container_id)
        except docker.errors.NotFound:
            return True
        time.sleep(0.1)
    return False


def test_one_container_per_session_removed_even_on_error(backend, built):
    client = docker.from_env()
    with pytest.raises(RuntimeError, match="boom"), backend.session(built, SLOT) as session:
        first = session.run(["./prog", "hello"], RUN)
        container_id = session.container.id
        second = session.run(["./prog", "hello"], RUN)
        assert session.container.id == container_id
        raise RuntimeError("boom")
    assert first.stdout == second.stdout == b"hello from the sandbox\n"
    assert gone(client, container_id)
    client.close()


def test_next_session_gets_a_started_container(backend, tmp_path):
    workdirs = []
    for name in ("one", "two"):
        workdirs.append(tmp_path / name)
        workdirs[-1].mkdir()
        (workdirs[-1] / "main.rs").write_text('fn main() { println!("hi"); }\n')
    with backend.session(workdirs[0], SLOT) as session:
        session.run(["rustc", "-o", "prog", "main.rs"], COMPILE)
    warm = backend._warm[SLOT].result().container
    with backend.session(workdirs[1], SLOT) as session:
        assert session.container.id == warm.id
        compiled = session.run(["rustc", "-o", "prog", "main.rs"], COMPILE)
        ran = session.run(["./prog"], RUN)
        listing = session.run(["ls"], RUN)
    assert compiled.exit_code == 0 and ran.stdout == b"hi\n"
    assert listing.stdout.split() == [b"main.rs", b"prog"]
    # The staging directory became the work dir: everything is in place, nothing else is left over.
    assert sorted(p.name for p in workdirs[1].iterdir()) == ["main.rs", "prog"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".docker-sandbox-")) == [
        "one",
        "two",
    ]


def test_cold_sessions_work_too(backend, built):
    cold = DockerBackend(backend.sysroot, warm=False)
    try:
        for _ in range(2):
            assert run(cold, built, "hello").stdout == b"hello from the sandbox\n"
        assert cold._warm == {}
    finally:
        cold.close()


def test_available_explains_a_missing_image(backend):
    missing = DockerBackend(backend.sysroot, image="nightshift/no-such-image:never")
    assert missing.available() == "image nightshift/no-such-image:never missing: run make sandbox-image"
