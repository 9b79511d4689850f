"""`nightshift fix FILE.rs` and `nightshift submit --koan ID`: the agent's fix loop from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import json_format
from nightshift.v1 import agent_pb2, agent_pb2_grpc, sandbox_pb2
from rich.console import Console

from nightshift_cli.rpc import CliError, channel, explain, read_rust_file

S = sandbox_pb2


def _codes(verdict: sandbox_pb2.Verdict) -> str:
    codes = [d.code for d in verdict.diagnostics if d.level == "error" and d.code]
    failed = [t.name for t in verdict.tests if not t.passed]
    return ", ".join(codes) or ", ".join(failed) or verdict.detail


def _print_attempt(console: Console, attempt: agent_pb2.Attempt) -> None:
    status = S.CheckStatus.Name(attempt.verdict.status)
    color = "green" if attempt.verdict.status == S.OK else "red"
    # decoding rate: the time until the first token went to the prompt
    decode_seconds = attempt.generate_seconds - attempt.prompt_seconds
    rate = (attempt.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0
    console.print(
        f"attempt {attempt.number}: [{color}]{status}[/] {_codes(attempt.verdict)} "
        f"[dim]({attempt.completion_tokens} tokens, {rate:.1f} tok/s, prompt {attempt.prompt_seconds:.1f} s, "
        f"T={attempt.temperature:g})[/]",
        highlight=False,
    )


def _watch(stub, task_id: str, console: Console, quiet: bool) -> agent_pb2.Task:
    task = None
    for update in stub.WatchTask(agent_pb2.WatchTaskRequest(task_id=task_id)):
        if update.HasField("attempt") and not quiet:
            _print_attempt(console, update.attempt)
        if update.HasField("task"):
            task = update.task
    if task is None:
        raise CliError(f"task {task_id} ended without a result")
    return task


def _summary(task: agent_pb2.Task) -> dict:
    return {
        "task_id": task.task_id,
        "passed": task.state == agent_pb2.TASK_PASSED,
        "state": agent_pb2.TaskState.Name(task.state),
        "attempts_used": len(task.attempts),
        "adapter_id": task.adapter_id,
        "model": task.model,
        "attempts": [
            json_format.MessageToDict(a, always_print_fields_with_no_presence=True) for a in task.attempts
        ],
    }


def cmd_fix(args) -> int:
    path = Path(args.file)
    text, program, tests = read_rust_file(path)
    request = agent_pb2.SubmitTaskRequest(
        source=program if tests else text,
        tests=tests,
        max_attempts=args.max_attempts,
        adapter_id=args.adapter or "",
        model=args.model or "",
        seed=args.seed,
        correlation_id=f"fix:{path.name}",
    )
    console = Console(stderr=True)
    with channel("agent") as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        try:
            task_id = stub.SubmitTask(request).task_id
            if not args.json:
                console.print(f"task {task_id}: fixing {path}", highlight=False)
            task = _watch(stub, task_id, console, quiet=args.json)
        except grpc.RpcError as exc:
            raise explain(exc, "agent") from None
    passed = task.state == agent_pb2.TASK_PASSED
    if args.json:
        print(json.dumps(_summary(task), indent=2))
    else:
        verdict = "[green]fixed[/]" if passed else "[red]not fixed[/]"
        console.print(f"{verdict} after {len(task.attempts)} attempt(s)")
    if passed and task.attempts:
        fixed = task.attempts[-1].code.rstrip() + "\n" + (f"\n{tests}" if tests else "")
        if args.write:
            path.write_text(fixed)
            console.print(f"wrote {path}")
        elif not args.json:
            print(fixed)
    return 0 if passed else 1


def cmd_submit(args) -> int:
    request = agent_pb2.SubmitTaskRequest(
        koan_id=args.koan,
        max_attempts=args.max_attempts,
        adapter_id=args.adapter or "",
        model=args.model or "",
        seed=args.seed,
    )
    console = Console(stderr=True)
    with channel("agent") as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        try:
            task_id = stub.SubmitTask(request).task_id
            if not args.watch:
                print(task_id)
                return 0
            task = _watch(stub, task_id, console, quiet=args.json)
        except grpc.RpcError as exc:
            raise explain(exc, "agent") from None
    if args.json:
        print(json.dumps(_summary(task), indent=2))
    else:
        console.print(
            f"{task_id}: {agent_pb2.TaskState.Name(task.state)} after {len(task.attempts)} attempt(s)"
        )
    return 0 if task.state == agent_pb2.TASK_PASSED else 1


def add_parsers(sub) -> None:
    def common(p):
        p.add_argument("--model", help="model name (default: the agent's)")
        p.add_argument("--adapter", help="adapter id, or `none` for the base model (default: the champion)")
        p.add_argument("--max-attempts", type=int, default=0, help="default: the agent's (5)")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampled retries (default 0)")
        p.add_argument("--json", action="store_true")

    fix = sub.add_parser(
        "fix",
        help="let the agent fix a Rust file, attempt by attempt, judged by the sandbox",
        description="The file's own #[cfg(test)] items are its tests (the agent never changes them). Shows "
        "each attempt live; prints the fixed program, or writes it back with --write. Every run is an "
        "episode the next night can learn from. Exit 0 when fixed.",
    )
    fix.add_argument("file", metavar="FILE.rs")
    fix.add_argument("--write", action="store_true", help="write the fixed program back to FILE.rs")
    common(fix)
    fix.set_defaults(func=cmd_fix)

    submit = sub.add_parser("submit", help="submit a koan to the agent; prints the task id")
    submit.add_argument("--koan", required=True, metavar="ID")
    submit.add_argument("--watch", action="store_true", help="follow the attempts until the task ends")
    common(submit)
    submit.set_defaults(func=cmd_submit)
