"""Where the time of evaluation runs (and of the cycles that made them) goes, from the evaluator's DuckDB.

    .venv/bin/python bench/cycle/cost.py RUN [RUN ...] [--cycle CYCLE_ID] [--out FILE]

Asks a running evaluator (NIGHTSHIFT_EVALUATOR_ADDR, default 127.0.0.1:50064) through its read-only
`Query` RPC. Per run: wall time (EvaluationStarted to the final EvaluationCompleted, or to the latest
attempt of a run still going), attempts, and the model's time split into prompt evaluation, decoding and
discarded resamples, the sandbox's time, and the rest (events, scheduling, the model idle between
attempts); the prompt tokens reused from the KV cache.
With --cycle, each phase's wall time and the training jobs' seconds and tokens. The baseline every row is
measured against is the run's own wall time (the shares add up to 100 %). Prints tables and writes JSON
(default bench/results/cost.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from nightshift.config import service_addr
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc
from rich.console import Console
from rich.table import Table

RUN_SQL = """
WITH run AS (
    SELECT r.run_id, r.koan_set, r.model, r.requested_adapter, r.max_attempts, r.seed, r.koan_count,
        r.occurred_at AS started_at,
        (SELECT max(s.occurred_at) FROM evaluation_summaries s WHERE s.run_id = r.run_id AND s.finished)
            AS finished_at,
        (SELECT max(t.occurred_at) FROM attempts t WHERE t.run_id = r.run_id) AS last_attempt_at
    FROM evaluation_runs r WHERE r.run_id = '{run}'
), a AS (
    SELECT count(*) AS attempts,
        sum(prompt_seconds) AS prompt_seconds,
        sum(generate_seconds - prompt_seconds) AS decode_seconds,
        sum(resample_seconds) AS resample_seconds,
        sum(resamples) AS resamples,
        sum(check_seconds) AS sandbox_seconds,
        sum(prompt_tokens) AS prompt_tokens,
        sum(reused_prompt_tokens) AS reused_prompt_tokens,
        sum(completion_tokens) AS completion_tokens
    FROM attempts WHERE run_id = '{run}'
)
SELECT run.*, epoch(coalesce(finished_at, last_attempt_at)) - epoch(started_at) AS wall_seconds, a.*
FROM run, a
"""

PHASES_SQL = """
SELECT cycle, phase, seconds FROM cycle_phases
WHERE cycle_id = '{cycle}' AND verb = 'completed' AND phase IN ('day', 'night', 'dawn')
ORDER BY cycle, stream_sequence
"""

JOBS_SQL = """
SELECT job_id, train_seconds, train_tokens FROM training_job_events
WHERE verb = 'completed' AND correlation_id LIKE '{cycle}%'
"""


def query(stub, sql: str) -> list[dict]:
    reply = stub.Query(evaluator_pb2.QueryRequest(sql=sql, max_rows=1000), timeout=60)

    def value(v):
        kind = v.WhichOneof("kind")
        return None if kind in (None, "is_null") else getattr(v, kind)

    return [dict(zip(reply.columns, map(value, row.values), strict=True)) for row in reply.rows]


def checked_id(value: str, name: str) -> str:
    """A run or cycle id as the evaluator makes them (letters, digits, dashes): safe to quote in SQL."""
    if not value.replace("-", "").isalnum():
        raise SystemExit(f"{name}: {value!r} is not an id")
    return value


def run_cost(stub, run_id: str) -> dict:
    run_id = checked_id(run_id, "RUN")
    rows = query(stub, RUN_SQL.format(run=run_id))
    if not rows:
        raise SystemExit(f"RUN: no evaluation run {run_id}")
    row = rows[0]
    wall = row["wall_seconds"] or 0.0
    parts = {
        "prompt": row["prompt_seconds"] or 0.0,
        "decode": row["decode_seconds"] or 0.0,
        "resamples": row["resample_seconds"] or 0.0,
        "sandbox": row["sandbox_seconds"] or 0.0,
    }
    parts["other"] = max(wall - sum(parts.values()), 0.0)
    return {
        **{k: row[k] for k in ("run_id", "koan_set", "model", "requested_adapter", "max_attempts", "seed")},
        "koans": row["koan_count"],
        "finished": row["finished_at"] is not None,
        "wall_seconds": wall,
        "attempts": row["attempts"],
        "seconds_per_attempt": wall / row["attempts"] if row["attempts"] else None,
        "resamples": row["resamples"] or 0,
        "seconds": parts,
        "shares": {k: (v / wall if wall else None) for k, v in parts.items()},
        "prompt_tokens": row["prompt_tokens"] or 0,
        "reused_prompt_share": (row["reused_prompt_tokens"] or 0) / row["prompt_tokens"]
        if row["prompt_tokens"]
        else None,
        "completion_tokens": row["completion_tokens"] or 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--cycle", metavar="CYCLE_ID", help="add the cycle's phases and training jobs")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "cost.json"))
    args = parser.parse_args()
    if not args.runs and not args.cycle:
        parser.error("give at least one RUN or --cycle")
    if args.cycle:
        checked_id(args.cycle, "--cycle")
    console = Console(width=max(Console().width, 120))
    with grpc.insecure_channel(service_addr("evaluator")) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        try:
            runs = [run_cost(stub, r) for r in args.runs]
            phases = query(stub, PHASES_SQL.format(cycle=args.cycle)) if args.cycle else []
            jobs = query(stub, JOBS_SQL.format(cycle=args.cycle)) if args.cycle else []
        except grpc.RpcError as exc:
            print(f"evaluator at {service_addr('evaluator')}: {exc.details()}", file=sys.stderr)
            return 1
    if runs:
        table = Table(title="evaluation runs: where the wall time goes")
        for column in (
            "run",
            "set / model",
            "koans",
            "attempts",
            "wall",
            "s/attempt",
            "prompt",
            "decode",
            "resample",
            "sandbox",
            "other",
            "KV reuse",
        ):
            table.add_column(column, justify="left" if column in ("run", "set / model") else "right")
        for r in runs:
            share = r["shares"]
            table.add_row(
                r["run_id"][:8],
                f"{r['koan_set']} / {r['model'] or 'default'}",
                str(r["koans"]),
                str(r["attempts"]),
                f"{r['wall_seconds'] / 60:.1f} min" + ("" if r["finished"] else " (running)"),
                f"{r['seconds_per_attempt']:.1f}" if r["seconds_per_attempt"] else "-",
                *(
                    f"{100 * share[k]:.0f} %" if share[k] is not None else "-"
                    for k in ("prompt", "decode", "resamples", "sandbox", "other")
                ),
                f"{100 * r['reused_prompt_share']:.0f} %" if r["reused_prompt_share"] is not None else "-",
            )
        console.print(table)
    if phases:
        table = Table(title=f"cycle {args.cycle}: phases")
        for column in ("round", "phase", "wall"):
            table.add_column(column)
        for p in phases:
            table.add_row(str(p["cycle"]), p["phase"], f"{(p['seconds'] or 0) / 60:.1f} min")
        console.print(table)
    for j in jobs:
        console.print(f"training job {j['job_id']}: {j['train_seconds']:.0f} s, {j['train_tokens']} tokens")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "phases": phases, "jobs": jobs}, indent=2, default=str))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
