"""`nightshift train`, `mix`, `jobs ...` and `adapters ...`: the trainer from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import json_format
from nightshift.chat import messages_for
from nightshift.v1 import trainer_pb2, trainer_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nightshift_cli.rpc import CliError, channel, explain

T = trainer_pb2


def parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """KEY=VALUE strings -> dict; a malformed one is a CliError naming the flag."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _mix_spec(args) -> T.MixSpec:
    return T.MixSpec(
        recipe=args.recipe,
        parameters=parse_pairs(args.param, "--param"),
        base_adapter_id=args.base_adapter or "",
    )


def _follow(stub, job_id: str, console: Console, quiet: bool) -> T.Job:
    """Stream the job, drawing a progress bar with the loss, until it ends."""
    job = None
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task("queued", total=None, steps="?", loss="-", rate="")
        for update in stub.WatchJob(T.WatchJobRequest(job_id=job_id)):
            job = update.job
            p = job.progress
            bar.update(
                task,
                description=T.JobState.Name(job.state).removeprefix("JOB_").lower(),
                completed=p.step,
                total=p.total_steps or None,
                steps=str(p.total_steps or "?"),
                loss=f"{p.loss:.4f}" if p.step else "-",
                rate=f"{p.tokens_per_second:.0f} tok/s" if p.tokens_per_second else "",
            )
    if job is None:
        raise CliError(f"job {job_id} ended without a state")
    return job


def cmd_train(args) -> int:
    request = T.StartJobRequest(
        mix=_mix_spec(args),
        preset=args.preset or "",
        overrides=parse_pairs(args.set, "--set"),
        model=args.model or "",
        seed=args.seed,
    )
    console = Console(stderr=True)
    with channel("trainer") as ch:
        stub = trainer_pb2_grpc.TrainerStub(ch)
        try:
            job_id = stub.StartJob(request).job_id
            if args.detach:
                print(job_id)
                return 0
            if not args.json:
                console.print(f"job {job_id}: {args.recipe}", highlight=False)
            job = _follow(stub, job_id, console, quiet=args.json)
        except grpc.RpcError as exc:
            raise explain(exc, "trainer") from None
    return _ended(job, console, args.json)


def _ended(job: T.Job, console: Console, as_json: bool) -> int:
    """Print how a job ended; exit 0 when it completed."""
    if as_json:
        print(json.dumps(_as_dict(job), indent=2))
    elif job.state == T.JOB_COMPLETED:
        console.print(
            f"[green]adapter {job.adapter_id}[/] is a candidate ({job.example_count} examples, "
            f"{job.train_seconds:.0f}s); `nightshift eval --adapter {job.adapter_id}` measures it",
            highlight=False,
        )
    else:
        console.print(f"[red]{T.JobState.Name(job.state)}[/] {job.error}", highlight=False)
    return 0 if job.state == T.JOB_COMPLETED else 1


def cmd_jobs(args) -> int:
    console = Console(stderr=True)
    with channel("trainer") as ch:
        stub = trainer_pb2_grpc.TrainerStub(ch)
        try:
            if args.action == "show":
                print(json.dumps(_as_dict(stub.GetJob(T.GetJobRequest(job_id=args.job_id)).job), indent=2))
                return 0
            if args.action == "cancel":
                stub.CancelJob(T.CancelJobRequest(job_id=args.job_id))
                if not args.json:
                    console.print(f"job {args.job_id}: cancelled; it stops after the step it is on")
                job = _follow(stub, args.job_id, console, quiet=True)
                if args.json:
                    print(json.dumps(_as_dict(job), indent=2))
                else:
                    console.print(f"job {args.job_id}: {T.JobState.Name(job.state)}", highlight=False)
                return 0 if job.state == T.JOB_CANCELLED else 1
            job = _follow(stub, args.job_id, console, quiet=args.json)
        except grpc.RpcError as exc:
            raise explain(exc, "trainer") from None
    return _ended(job, console, args.json)


def cmd_mix(args) -> int:
    with channel("trainer") as ch:
        try:
            reply = trainer_pb2_grpc.TrainerStub(ch).BuildMix(T.BuildMixRequest(mix=_mix_spec(args)))
        except grpc.RpcError as exc:
            raise explain(exc, "trainer") from None
    excluded = dict(reply.excluded_by_reason)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for e in reply.examples:
                row: dict = {"prompt": messages_for(e.prompt)}
                if e.chosen:
                    row["chosen"] = [{"role": "assistant", "content": e.chosen}]
                    row["rejected"] = [{"role": "assistant", "content": e.rejected}]
                else:
                    row["completion"] = [{"role": "assistant", "content": e.completion}]
                row.update(example_id=e.example_id, koan_id=e.koan_id, origin=e.origin)
                f.write(json.dumps(row) + "\n")
    summary = {
        "recipe": args.recipe,
        "examples": len(reply.examples),
        "excluded": reply.excluded_count,
        "excluded_by_reason": excluded,
        "data_hash": reply.data_hash,
        "out": args.out or "",
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        origins: dict[str, int] = {}
        for e in reply.examples:
            origins[e.origin] = origins.get(e.origin, 0) + 1
        print(
            f"{args.recipe}: {len(reply.examples)} examples {origins}, {reply.excluded_count} excluded "
            f"{excluded}, data hash {reply.data_hash[:16]}" + (f"; wrote {args.out}" if args.out else "")
        )
    return 0


def _adapter_table(adapters) -> Table:
    table = Table(title="adapters")
    for column in ("adapter", "state", "model", "recipe", "preset", "parent", "loss", "verified"):
        table.add_column(column)
    for a in adapters:
        state = T.AdapterState.Name(a.state).removeprefix("ADAPTER_").lower()
        color = {"champion": "green", "rejected": "red", "retired": "dim"}.get(state, "yellow")
        verified = "yes" if a.verification.passed else ("no" if a.verification.tolerance else "-")
        loss = a.metrics.get("final_loss")
        table.add_row(
            a.adapter_id,
            f"[{color}]{state}[/]",
            a.model,
            a.recipe,
            a.preset,
            a.parent_adapter_id or "base",
            f"{loss:.4f}" if loss is not None else "-",
            verified,
        )
    return table


def cmd_adapters(args) -> int:
    console = Console()
    with channel("trainer") as ch:
        stub = trainer_pb2_grpc.TrainerStub(ch)
        try:
            if args.action == "list":
                adapters = list(stub.ListAdapters(T.ListAdaptersRequest()).adapters)
                if args.json:
                    print(json.dumps([_as_dict(a) for a in adapters], indent=2))
                elif adapters:
                    console.print(_adapter_table(adapters))
                else:
                    console.print("no adapters yet: `nightshift train --recipe replay` trains one")
                return 0
            if args.action == "show":
                adapters = {a.adapter_id: a for a in stub.ListAdapters(T.ListAdaptersRequest()).adapters}
                if args.adapter_id not in adapters:
                    raise CliError(f"no adapter {args.adapter_id!r} (see `nightshift adapters list`)")
                print(json.dumps(_as_dict(adapters[args.adapter_id]), indent=2))
                return 0
            if args.action == "promote":
                reply = stub.PromoteAdapter(
                    T.PromoteAdapterRequest(adapter_id=args.adapter_id, reason=args.reason)
                )
                adapter = reply.adapter
                message = f"{adapter.adapter_id} is now the champion of {adapter.model}"
            else:
                reply = stub.RollbackAdapter(
                    T.RollbackAdapterRequest(model=args.model or "", reason=args.reason)
                )
                message = (
                    f"rolled back: {reply.champion.adapter_id} is the champion again"
                    if reply.HasField("champion")
                    else "rolled back: the base model is the champion again"
                )
        except grpc.RpcError as exc:
            raise explain(exc, "trainer") from None
    if args.json:
        print(json.dumps(_as_dict(reply), indent=2))
    else:
        console.print(message, highlight=False)
    return 0


def add_parsers(sub) -> None:
    def mix_args(p):
        p.add_argument(
            "--recipe",
            required=True,
            choices=["naive", "replay", "rehearsal", "dpo"],
            help="naive: fixes of failed tasks only (the published recipe); replay: fixes mixed with "
            "successes; rehearsal: fixes mixed with the champion's own verified answers; dpo: failed vs "
            "fixed attempt pairs",
        )
        p.add_argument(
            "--param", action="append", metavar="KEY=VALUE", help="recipe parameter, e.g. replay_ratio=1"
        )
        p.add_argument(
            "--base-adapter", help="adapter whose episodes the recipe uses (default: the champion)"
        )
        p.add_argument("--json", action="store_true")

    train = sub.add_parser(
        "train",
        help="train an adapter from the episodes (live progress with the loss)",
        description="Builds the mix, trains a LoRA adapter on the model the agent serves, exports it to "
        "GGUF, checks it against transformers+PEFT and registers it as a candidate. Exit 0 when the job "
        "completed.",
    )
    mix_args(train)
    train.add_argument(
        "--preset", help="cpu-lora (default), qlora (CUDA), naive, dpo (default for --recipe dpo)"
    )
    train.add_argument(
        "--set", action="append", metavar="FIELD=VALUE", help="override a preset field, e.g. max_steps=20"
    )
    train.add_argument("--model", help="base model (default: the trainer's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--detach", action="store_true", help="print the job id and return at once")
    train.set_defaults(func=cmd_train)

    mix = sub.add_parser("mix", help="build a recipe's mix without training; --out writes TRL-ready JSONL")
    mix_args(mix)
    mix.add_argument("--out", metavar="FILE.jsonl")
    mix.set_defaults(func=cmd_mix)

    jobs = sub.add_parser(
        "jobs",
        help="one training job: show, watch (live progress) or cancel (e.g. a cycle's night)",
        description="A job's id is printed by `nightshift train --detach` and listed by `nightshift query "
        '"select job_id, state, step, total_steps, loss from training_jobs"`. `watch` exits 0 when the '
        "job completed, `cancel` when it was cancelled (a cycle whose night is cancelled fails).",
    )
    verbs = jobs.add_subparsers(dest="action", required=True)
    for name, text in (
        ("show", "the job in full (JSON): state, progress, device, adapter"),
        ("watch", "follow the job until it ends: step, loss, tokens/s, time left"),
        ("cancel", "stop the job after its current step; waits until it has stopped"),
    ):
        p = verbs.add_parser(name, help=text)
        p.add_argument("job_id", metavar="JOB")
        if name != "show":
            p.add_argument("--json", action="store_true", help="print the ended job as JSON")
    jobs.set_defaults(func=cmd_jobs)

    adapters = sub.add_parser("adapters", help="the adapter registry: list, show, promote, rollback")
    actions = adapters.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="every adapter with its state")
    p.add_argument("--json", action="store_true")
    p = actions.add_parser("show", help="one adapter in full (JSON)")
    p.add_argument("adapter_id")
    p = actions.add_parser("promote", help="make a candidate the champion (the agent serves it at once)")
    p.add_argument("adapter_id")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    p = actions.add_parser("rollback", help="reinstate the champion before the current one")
    p.add_argument("--model", help="default: the trainer's model")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    adapters.set_defaults(func=cmd_adapters)
