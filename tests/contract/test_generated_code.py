"""The committed stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nightshift.v1 import agent_pb2, evaluator_pb2, sandbox_pb2, trainer_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "libs" / "nightshift" / "nightshift" / "v1"


def test_generated_stubs_are_fresh(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    fresh = {p.name: p.read_text() for p in (tmp_path / "nightshift" / "v1").glob("*.py*")}
    committed = {p.name: p.read_text() for p in GENERATED.glob("*_pb2*.py*")}
    assert sorted(fresh) == sorted(committed), "run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto`"


def test_every_service_of_the_design_is_in_the_contract():
    services = {
        "Sandbox": (sandbox_pb2, ["Check"]),
        "Agent": (agent_pb2, ["SubmitTask", "GetTask", "WatchTask", "CancelTask", "ListModels"]),
        "Trainer": (trainer_pb2, ["StartJob", "WatchJob", "CancelJob", "PromoteAdapter", "RollbackAdapter"]),
        "Evaluator": (evaluator_pb2, ["Query", "StartEvaluation", "DecideGate", "StartCycle"]),
    }
    for name, (module, rpcs) in services.items():
        service = module.DESCRIPTOR.services_by_name[name]
        for rpc in rpcs:
            method = service.methods_by_name[rpc]
            assert method.input_type.name == f"{rpc}Request"
            assert method.output_type.name == f"{rpc}Response"


def test_status_enum_is_spelled_as_the_design_says():
    assert [v.name for v in sandbox_pb2.CheckStatus.DESCRIPTOR.values][1:] == [
        "OK",
        "COMPILE_ERROR",
        "TEST_FAILED",
        "LINT_FAILED",
        "TIMEOUT",
        "MEMORY_LIMIT",
        "OUTPUT_LIMIT",
        "SANDBOX_ERROR",
    ]
