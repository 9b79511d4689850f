"""Every koan of the corpus, proved through a real Sandbox service: `nightshift koans validate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from nightshift_sandbox.server import start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sandbox_addr(nats_server, sandbox_config):
    service = await start(
        replace(sandbox_config, addr="127.0.0.1:0", nats_url=nats_server.url, queue_size=64)
    )
    yield f"127.0.0.1:{service.port}"
    await service.stop(grace=5)


async def test_whole_corpus_validates(sandbox_addr, nats_server):
    env = {
        **os.environ,
        "NIGHTSHIFT_SANDBOX_ADDR": sandbox_addr,
        "NIGHTSHIFT_NATS_URL": nats_server.url,
        "NIGHTSHIFT_CORPUS_DIR": str(ROOT / "corpus"),
    }
    proc = await asyncio_subprocess(
        [sys.executable, "-m", "nightshift_cli", "koans", "validate", "--json"], env
    )
    results = json.loads(proc.stdout)
    invalid = {r["id"]: r["reason"] for r in results if not r["valid"]}
    assert not invalid, invalid
    assert len(results) >= 200
    assert proc.returncode == 0


async def test_validation_reports_an_invalid_koan(sandbox_addr, nats_server, tmp_path):
    koans = tmp_path / "corpus" / "koans" / "demo"
    koans.mkdir(parents=True)
    (koans / "demo-001.toml").write_text(
        """id = "demo-001"
family = "demo"
split = "train"
expected = { codes = ["E0382"] }
broken = '''
pub fn double(x: i32) -> i32 { x * 2 }
'''
tests = '''
#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn doubles() { assert_eq!(double(2), 4); }
}
'''
fix = '''
pub fn double(x: i32) -> i32 { x + 3 }
'''
[[decoys]]
description = "the right answer, so the tests cannot catch it"
source = '''
pub fn double(x: i32) -> i32 { x * 2 }
'''
"""
    )
    env = {
        **os.environ,
        "NIGHTSHIFT_SANDBOX_ADDR": sandbox_addr,
        "NIGHTSHIFT_NATS_URL": nats_server.url,
        "NIGHTSHIFT_CORPUS_DIR": str(tmp_path / "corpus"),
        "NIGHTSHIFT_DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio_subprocess(
        [sys.executable, "-m", "nightshift_cli", "koans", "validate", "--json"], env
    )
    assert proc.returncode == 1
    [result] = json.loads(proc.stdout)
    assert result["id"] == "demo-001" and not result["valid"]
    assert "broken program: expected COMPILE_ERROR" in result["reason"]
    assert "reference fix: TEST_FAILED" in result["reason"]
    assert "decoy 1" in result["reason"]


async def asyncio_subprocess(argv, env):
    import asyncio

    return await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=900)
