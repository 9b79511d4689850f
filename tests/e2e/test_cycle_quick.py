"""The quick sleep cycle end to end through `nightshift up`: the 0.5B works the smoke set by day, the
trainer trains a few LoRA steps on the real GGUF weights at night, exports and verifies the adapter, and at
dawn the evaluator measures candidate and champion on the same frozen and held-out koans and the gate
decides; the registry acts on the decision. `make test-e2e` runs it (about 10 minutes on 2 cores)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from stackrun import NIGHTSHIFT, ROOT, run, start_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_a_quick_cycle_trains_verifies_and_gates_an_adapter(stack):
    env, up, tmp_path = stack
    cycle = subprocess.run(
        [*NIGHTSHIFT, "cycle", "--quick", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1500,
    )
    assert cycle.returncode == 0, (
        cycle.stdout + cycle.stderr + (tmp_path / "data" / "logs" / "trainer.log").read_text()
    )
    status = json.loads(cycle.stdout)
    assert status["state"] == "done"
    (round_,) = status["rounds"]
    assert round_["dayRunId"] and round_["jobId"] and round_["adapterId"]
    decision = round_["decision"]
    assert decision["reasons"], decision
    assert decision["candidateRunId"] == round_["candidateFrozenRunId"]
    assert set(round_["phaseSeconds"]) == {"day", "night", "dawn"}

    # The adapter was verified against transformers+PEFT before it was registered, and the registry
    # applied the gate's decision.
    shown = run(env, "adapters", "show", round_["adapterId"], check=True)
    adapter = json.loads(shown.stdout)
    assert adapter["verification"]["passed"] is True
    assert adapter["verification"]["adapterEffect"] > adapter["verification"]["tolerance"]
    assert adapter["state"] == ("ADAPTER_CHAMPION" if decision["promote"] else "ADAPTER_REJECTED")

    # Every phase is in the projections, and the report renders from the runs.
    phases = run(
        env,
        "query",
        "select phase, count(*) as n from cycle_phases where verb = 'completed' group by 1 order by 1",
        "--format",
        "json",
        check=True,
    )
    assert {row["phase"] for row in json.loads(phases.stdout)} >= {"day", "night", "dawn", "done"}
    out = tmp_path / "report"
    reported = run(
        env,
        "report",
        round_["candidateFrozenRunId"],
        "--compare",
        round_["championFrozenRunId"],
        "--out",
        str(out),
    )
    assert reported.returncode == 0, reported.stderr
    assert (out / "report.md").read_text().count(round_["candidateFrozenRunId"]) >= 1
    assert (out / "families.png").read_bytes().startswith(b"\x89PNG")

    # The event log and the adapter leave with an archive; a new data dir restored from it knows the cycle,
    # the runs and the registry, and holds the same adapter file.
    archived = tmp_path / "events.jsonl.gz"
    saved = run(env, "archive", "save", str(archived), "--data-dir", str(tmp_path / "data"))
    assert saved.returncode == 0 and "1 adapter files" in saved.stdout, saved.stdout + saved.stderr
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0
    restored_dir = tmp_path / "data-restored"
    restored = start_up(env, restored_dir, tmp_path / "up-restored.log", "--restore", str(archived))
    try:
        adapter_file = Path("adapters") / round_["adapterId"] / "adapter.gguf"
        assert (restored_dir / adapter_file).read_bytes() == (tmp_path / "data" / adapter_file).read_bytes()
        again = json.loads(run(env, "adapters", "show", round_["adapterId"], check=True).stdout)
        assert again["state"] == adapter["state"] and again["sha256"] == adapter["sha256"]
        resumed = run(env, "cycle", "--resume", status["cycleId"], "--json", check=True)
        assert json.loads(resumed.stdout)["rounds"] == status["rounds"]
        refused = run(env, "cycle", "--retry", status["cycleId"])
        assert refused.returncode != 0
        assert "is done; only a failed one can be retried" in refused.stderr, refused.stderr
    finally:
        restored.send_signal(signal.SIGTERM)
        assert restored.wait(timeout=60) == 0
