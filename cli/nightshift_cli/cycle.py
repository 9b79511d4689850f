"""`nightshift cycle`, `nightshift report` and `nightshift gate`: the sleep cycle and its evidence."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc
from rich.console import Console

from nightshift_cli.evaluation import count_within
from nightshift_cli.rpc import channel, explain
from nightshift_cli.trainer import parse_pairs

E = evaluator_pb2


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _round_line(r: E.CycleRound) -> str:
    if not r.HasField("decision"):
        return (
            f"round {r.cycle}: day run {r.day_run_id or '-'}, job {r.job_id or '-'}, "
            f"candidate {r.adapter_id or '-'}"
        )
    d = r.decision
    verdict = "[green]promoted[/]" if d.promote else "[red]rejected[/]"
    return (
        f"round {r.cycle}: {r.adapter_id} {verdict} — frozen {d.candidate_pass_rate:.1%} vs "
        f"{d.champion_pass_rate:.1%} ({d.gains} gains, {d.regressions} regressions, "
        f"sign-test p={d.sign_test_p:.3g}); "
        f"{d.reason}"
    )


def cmd_cycle(args) -> int:
    request = E.StartCycleRequest(
        cycles=args.cycles,
        recipe=args.recipe or "",
        preset=args.preset or "",
        model=args.model or "",
        repeats=args.repeats,
        quick=args.quick,
        overrides=parse_pairs(args.set, "--set"),
        recipe_parameters=parse_pairs(args.param, "--param"),
        max_attempts=args.max_attempts,
        seed=args.seed,
        day_set=args.day_set or "",
        eval_family=args.family or "",
        policy=parse_pairs(args.policy, "--policy"),
        day_max_attempts=args.day_max_attempts,
        fresh=args.fresh,
    )
    console = Console(stderr=True)
    with channel("evaluator") as ch:
        stub = evaluator_pb2_grpc.EvaluatorStub(ch)
        try:
            if args.retry:
                cycle_id = stub.RetryCycle(E.RetryCycleRequest(cycle_id=args.retry)).status.cycle_id
            else:
                cycle_id = args.resume or stub.StartCycle(request).cycle_id
            if args.detach:
                print(cycle_id)
                return 0
            if not args.json:
                console.print(f"cycle run {cycle_id}", highlight=False)
            status = _follow(stub, cycle_id, console, quiet=args.json)
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
    if args.json:
        print(json.dumps(_as_dict(status), indent=2))
    elif status.state == "done":
        last = status.rounds[-1].candidate_frozen_run_id
        console.print(f"[green]done[/]: `nightshift report {last} --cycle {cycle_id}` writes the report")
    else:
        console.print(f"[red]{status.state}[/]: {status.error}", highlight=False)
    return 0 if status.state == "done" else 1


def _follow(stub, cycle_id: str, console: Console, quiet: bool) -> E.CycleStatus:
    """Poll the cycle run, printing each phase change and each round's decision, until it ends."""
    seen_phase = None
    reported: set[int] = set()
    while True:
        status = stub.GetCycle(E.GetCycleRequest(cycle_id=cycle_id)).status
        if not quiet:
            phase = (status.cycle, status.phase)
            if phase != seen_phase and status.state == "running":
                console.print(
                    f"round {status.cycle}/{status.request.cycles}: {status.phase}", highlight=False
                )
                seen_phase = phase
            for r in status.rounds:
                if r.HasField("decision") and r.cycle not in reported:
                    reported.add(r.cycle)
                    console.print(_round_line(r))
        if status.state != "running":
            return status
        time.sleep(2.0)


def cmd_report(args) -> int:
    cycles = args.cycle or []
    request = E.GetReportRequest(
        run_id=args.run_id,
        compare_run_id=args.compare or "",
        cycle_id=cycles[0] if cycles else "",
        compare_cycle_ids=cycles[1:],
    )
    with channel("evaluator") as ch:
        try:
            reply = evaluator_pb2_grpc.EvaluatorStub(ch).GetReport(request, timeout=120)
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
    out = Path(args.out or f"reports/{args.run_id}")
    out.mkdir(parents=True, exist_ok=True)
    for f in reply.files:
        (out / f.name).write_bytes(f.content)
    if args.json:
        print((out / "summary.json").read_text())
    else:
        print(f"wrote {', '.join(f.name for f in reply.files)} to {out}")
    return 0


def cmd_gate(args) -> int:
    request = E.DecideGateRequest(
        candidate_run_id=args.candidate,
        champion_run_id=args.champion,
        candidate_heldout_run_id=args.candidate_heldout or "",
        champion_heldout_run_id=args.champion_heldout or "",
        adapter_id=args.adapter,
        policy=parse_pairs(args.policy, "--policy"),
    )
    with channel("evaluator") as ch:
        try:
            decision = evaluator_pb2_grpc.EvaluatorStub(ch).DecideGate(request).decision
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
    if args.json:
        print(json.dumps(_as_dict(decision), indent=2))
    else:
        verdict = "PROMOTE" if decision.promote else "REJECT"
        print(f"{verdict} {decision.adapter_id} (decision {decision.decision_id})")
        for reason in decision.reasons:
            print(f"  - {reason}")
    return 0 if decision.promote else 1


def add_parsers(sub) -> None:
    cycle = sub.add_parser(
        "cycle",
        help="run sleep cycles: day (work the train pool), night (train), dawn (evaluate, gate, promote)",
        description="Runs through the services; the evaluator records every phase as an event, so a cycle "
        "run survives restarts of any service (`--resume ID` follows it again). Exit 0 when it finished.",
    )
    cycle.add_argument(
        "--cycles", type=count_within(2**32 - 1), default=1, help="rounds of day -> night -> dawn (default 1)"
    )
    cycle.add_argument("--recipe", choices=["naive", "replay", "rehearsal", "dpo"], help="default replay")
    cycle.add_argument("--preset", help="training preset (default: cpu-lora, or dpo for --recipe dpo)")
    cycle.add_argument("--model", help="default: the services' model")
    cycle.add_argument(
        "--repeats", type=count_within(2**32 - 1), default=0, help="seeds per dawn evaluation (default 1)"
    )
    cycle.add_argument(
        "--max-attempts",
        type=count_within(2**32 - 1),
        default=0,
        help="attempts per task (default 3; --quick 1)",
    )
    cycle.add_argument(
        "--day-max-attempts",
        type=count_within(2**32 - 1),
        default=0,
        help="attempts per task by day (default --max-attempts)",
    )
    cycle.add_argument("--seed", type=count_within(2**64 - 1), default=0)
    cycle.add_argument("--day-set", help="koans worked by day (default train; --quick smoke)")
    cycle.add_argument("--family", help="restrict the dawn evaluations to one family")
    cycle.add_argument(
        "--set", action="append", metavar="FIELD=VALUE", help="preset override, e.g. max_steps=20"
    )
    cycle.add_argument("--param", action="append", metavar="KEY=VALUE", help="recipe parameter")
    cycle.add_argument("--policy", action="append", metavar="KEY=VALUE", help="gate policy override")
    cycle.add_argument(
        "--fresh",
        action="store_true",
        help="evaluate the champion and work the day even when a finished run outside this cycle run (a "
        "baseline, an earlier cycle, a restored archive) already measured the same koans, adapter, model, "
        "seed and attempts; later rounds still reuse the champion's runs of this cycle run",
    )
    cycle.add_argument(
        "--quick",
        action="store_true",
        help="0.5B, smoke set by day, one attempt, a few training steps, one family",
    )
    follow = cycle.add_mutually_exclusive_group()
    follow.add_argument(
        "--resume", metavar="CYCLE_ID", help="follow an existing cycle run instead of starting one"
    )
    follow.add_argument(
        "--retry",
        metavar="CYCLE_ID",
        help="drive a failed cycle run again from the phase that failed (its finished work is kept), "
        "and follow it",
    )
    cycle.add_argument("--detach", action="store_true", help="print the cycle id and return at once")
    cycle.add_argument("--json", action="store_true")
    cycle.set_defaults(func=cmd_cycle)

    report = sub.add_parser(
        "report", help="write a Markdown report with PNG plots and a JSON summary of an evaluation run"
    )
    report.add_argument("run_id", metavar="RUN")
    report.add_argument("--compare", metavar="RUN2", help="baseline run: regressions and gains koan by koan")
    report.add_argument(
        "--cycle",
        metavar="CYCLE_ID",
        action="append",
        help="add the learning curve and forgetting matrix of this cycle run; given again, the other cycle "
        "runs' curves are drawn with it (recipes.png: recipes compared)",
    )
    report.add_argument("--out", metavar="DIR", help="default reports/RUN")
    report.add_argument("--json", action="store_true", help="print summary.json")
    report.set_defaults(func=cmd_report)

    gate = sub.add_parser(
        "gate", help="ask the gate about a candidate (publishes GateDecided; exit 0 = promote)"
    )
    gate.add_argument("--candidate", required=True, metavar="RUN", help="the candidate's frozen-set run")
    gate.add_argument("--champion", required=True, metavar="RUN", help="the champion's frozen-set run")
    gate.add_argument("--candidate-heldout", metavar="RUN")
    gate.add_argument("--champion-heldout", metavar="RUN")
    gate.add_argument("--adapter", required=True, help="the candidate adapter id")
    gate.add_argument("--policy", action="append", metavar="KEY=VALUE", help="e.g. max_frozen_regressions=1")
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(func=cmd_gate)
