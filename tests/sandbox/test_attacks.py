"""Hostile programs, on every backend: each must be contained and reported with the right status."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import uuid

import pytest
from nightshift.v1 import sandbox_pb2 as S
from nightshift_sandbox.backends.base import SANDBOX_BASE_UID

MIB = 1024 * 1024


def as_test(body: str, prelude: str = "") -> tuple[str, str]:
    """A program whose single test runs `body`."""
    source = prelude + "\npub fn marker() {}\n"
    tests = (
        "#[cfg(test)]\nmod tests {\n    #[allow(unused_imports)]\n    use super::*;\n\n"
        "    #[test]\n    fn attack() {\n" + body + "\n    }\n}\n"
    )
    return source, tests


def everything(verdict) -> str:
    return "\n".join(
        [verdict.stdout, verdict.stderr, verdict.detail]
        + [d.rendered + d.message for d in verdict.diagnostics]
    )


@pytest.fixture
def secret_file(tmp_path):
    """A host file with a unique token, readable by anyone on the host."""
    token = f"host-secret-{uuid.uuid4()}"
    path = tmp_path / "secret.txt"
    path.write_text(token)
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    return path, token


def slot_processes() -> int:
    """Processes left running as the sandbox's slot-0 user."""
    out = subprocess.run(["ps", "-e", "-o", "uid="], capture_output=True, text=True).stdout.split()
    return sum(1 for uid in out if int(uid) == SANDBOX_BASE_UID)


def test_infinite_loop_times_out(check):
    verdict = check(*as_test("        loop { std::hint::black_box(0); }"), cpu_seconds=2, wall_seconds=20)
    assert verdict.status == S.TIMEOUT
    assert "time limit" in verdict.detail


def test_test_that_sleeps_forever_times_out(check):
    body = "        std::thread::sleep(std::time::Duration::from_secs(100_000));"
    verdict = check(*as_test(body), cpu_seconds=5, wall_seconds=3)
    assert verdict.status == S.TIMEOUT


def test_fork_bomb_is_contained(check):
    prelude = 'extern "C" {\n    fn fork() -> i32;\n}\n'
    body = "        loop {\n            unsafe {\n                fork();\n            }\n        }"
    verdict = check(*as_test(body, prelude), cpu_seconds=3, wall_seconds=8, max_processes=32)
    assert verdict.status in (S.TIMEOUT, S.TEST_FAILED)
    assert slot_processes() == 0, "sandboxed processes outlived their check"
    # The host and the sandbox still work.
    assert check('fn main() { println!("still fine"); }\n').status == S.OK


def test_allocation_bomb_hits_the_memory_limit(check):
    body = """
        let mut hoard = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
        }"""
    verdict = check(*as_test(body), memory_bytes=256 * MIB, wall_seconds=30)
    assert verdict.status == S.MEMORY_LIMIT


def test_network_is_unreachable(check):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        body = (
            f'        let r = std::net::TcpStream::connect("127.0.0.1:{port}");\n'
            '        assert!(r.is_err(), "connected to the host");'
        )
        verdict = check(*as_test(body))
    assert verdict.status == S.OK, everything(verdict)


def test_host_file_unreadable_at_compile_time(check, secret_file):
    path, token = secret_file
    for target in (str(path), "/etc/passwd"):
        source = (
            f'const STOLEN: &str = include_str!("{target}");\nfn main() {{ println!("{{}}", STOLEN); }}\n'
        )
        verdict = check(source, mode="build")
        assert verdict.status == S.COMPILE_ERROR
        text = everything(verdict)
        assert token not in text
        assert "root:x:0:0" not in text


def test_host_file_unreadable_at_run_time(check, secret_file):
    path, token = secret_file
    body = "\n".join(
        f'        if let Ok(text) = std::fs::read_to_string("{p}") {{ panic!("read: {{}}", text); }}'
        for p in (str(path), "/etc/passwd", "/etc/shadow", "/root/.bashrc")
    )
    verdict = check(*as_test(body))
    text = everything(verdict)
    assert token not in text and "root:x:0:0" not in text
    assert verdict.status == S.OK, text


def test_writes_outside_the_work_dir_fail(check, tmp_path):
    host_dir = tmp_path / "outside"
    host_dir.mkdir(mode=0o777)
    targets = ["/usr/evil", "/opt/rust/evil", "/evil", "/etc/evil", str(host_dir / "evil")]
    body = (
        "\n".join(f'        assert!(std::fs::write("{t}", b"x").is_err(), "wrote {t}");' for t in targets)
        + """
        std::fs::write("inside.txt", b"ok").unwrap();
        std::fs::write("/tmp/scratch", b"ok").unwrap();"""
    )
    verdict = check(*as_test(body))
    assert verdict.status == S.OK, everything(verdict)
    assert not (host_dir / "evil").exists()


def test_huge_output_hits_the_output_limit(check):
    # Written past libtest's output capture, straight to the process's stdout: 50 MB.
    body = (
        "        use std::io::Write;\n"
        "        let line = [b'x'; 1024];\n"
        "        let mut out = std::io::stdout();\n"
        "        for _ in 0..51_200 {\n"
        "            out.write_all(&line).unwrap();\n"
        "        }"
    )
    verdict = check(*as_test(body), output_bytes=1 * MIB, wall_seconds=60)
    assert verdict.status == S.OUTPUT_LIMIT
    assert verdict.output_truncated
    assert len(verdict.stdout.encode()) + len(verdict.stderr.encode()) <= 1 * MIB


def test_host_environment_never_reaches_the_program(check, monkeypatch):
    token = f"env-secret-{uuid.uuid4()}"
    monkeypatch.setenv("NIGHTSHIFT_HOST_SECRET", token)
    body = (
        '        assert!(option_env!("NIGHTSHIFT_HOST_SECRET").is_none());\n'
        '        assert!(std::env::var("NIGHTSHIFT_HOST_SECRET").is_err());\n'
        '        for (k, v) in std::env::vars() { println!("{}={}", k, v); }'
    )
    verdict = check(*as_test(body))
    assert verdict.status == S.OK, everything(verdict)
    assert token not in everything(verdict)


def test_code_runs_unprivileged(check):
    body = r"""
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        println!("{}", status);
        assert!(!status.lines().any(|l| l.starts_with("Uid:") && l.contains("\t0\t")));"""
    verdict = check(*as_test(body))
    assert verdict.status == S.OK, everything(verdict)


@pytest.mark.skipif(os.geteuid() != 0, reason="the per-slot uid only applies when the service runs as root")
def test_sandbox_uid_has_no_host_account():
    with pytest.raises(KeyError):
        pwd.getpwuid(SANDBOX_BASE_UID)
