"""The newcomer's path through the real stack: `nightshift up`, `check` a broken file, `query` the verdict."""

from __future__ import annotations

import json
import signal
import time

import pytest
from stackrun import ROOT, run, start_up

pytestmark = pytest.mark.e2e


def test_check_a_broken_file_and_query_its_verdict(stack):
    env, up, tmp_path = stack
    status = run(env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    services = {s["service"]: s["health"] for s in json.loads(status.stdout)["services"]}
    assert services["sandbox"] == services["evaluator"] == services["agent"] == "SERVING"

    checked = run(env, "check", "examples/use_after_move.rs", "--json")
    assert checked.returncode == 1, checked.stderr
    verdict = json.loads(checked.stdout)
    assert verdict["status"] == "COMPILE_ERROR"
    assert "E0382" in [d["code"] for d in verdict["diagnostics"]]

    human = run(env, "check", "examples/use_after_move.rs")
    assert "E0382" in human.stdout and "COMPILE_ERROR" in human.stdout

    sql = "select status, count(*) as n from sandbox_checks group by 1"
    deadline = time.monotonic() + 30
    while True:
        queried = run(env, "query", sql, "--format", "json", check=True)
        rows = json.loads(queried.stdout)
        if rows == [{"status": "COMPILE_ERROR", "n": 2}] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows == [{"status": "COMPILE_ERROR", "n": 2}]

    refused = run(env, "query", "delete from sandbox_checks")
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr

    # The agent works on any file: one greedy attempt, reported as JSON, the file left alone.
    before = (ROOT / "examples" / "use_after_move.rs").read_text()
    fixed = run(env, "fix", "examples/use_after_move.rs", "--max-attempts", "1", "--json")
    assert fixed.returncode in (0, 1), fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["attempts_used"] == 1 and isinstance(report["passed"], bool)
    assert report["attempts"][0]["verdict"]["status"] in ("OK", "COMPILE_ERROR", "TEST_FAILED")
    assert (ROOT / "examples" / "use_after_move.rs").read_text() == before

    # The event log leaves with the archive; a new store restored from it holds the same checks and episode.
    saved = run(env, "archive", "save", str(tmp_path / "events.jsonl.gz"))
    assert saved.returncode == 0, saved.stderr
    assert "SANDBOX" in saved.stdout and "EPISODES" in saved.stdout
    projected = "select event_id, type, stream from projected_events order by event_id"
    episodes = "select event_id, occurred_at, task_id, passed, steps, final_code from episodes"

    def snapshot():
        return [
            json.loads(run(env, "query", q, "--format", "json", "--max-rows", "10000", check=True).stdout)
            for q in (projected, episodes, sql)
        ]

    before, deadline = snapshot(), time.monotonic() + 30
    while len(before[1]) != 1 or snapshot() != before:  # the projection has caught up
        assert time.monotonic() < deadline, before
        time.sleep(0.5)
        before = snapshot()
    assert before[2][0]["n"] >= 2 and len(before[0]) >= 5

    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0
    assert run(env, "status").returncode == 1  # everything stopped

    restored = start_up(
        env,
        tmp_path / "data-restored",
        tmp_path / "up-restored.log",
        "--restore",
        str(tmp_path / "events.jsonl.gz"),
    )
    try:
        assert "events published, 0 already there" in (tmp_path / "up-restored.log").read_text()
        deadline = time.monotonic() + 30
        while (after := snapshot()) != before:
            assert time.monotonic() < deadline, (after, before)
            time.sleep(0.5)
    finally:
        restored.send_signal(signal.SIGTERM)
        assert restored.wait(timeout=60) == 0
