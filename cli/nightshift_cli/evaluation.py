"""`nightshift eval` and `nightshift watch`: run an evaluation set on the agent and follow it live."""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import json_format
from nightshift.v1 import evaluator_pb2, evaluator_pb2_grpc
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from nightshift_cli.rpc import CliError, channel, explain

E = evaluator_pb2
# The evaluator's name for the most recently started unfinished run.
LATEST = "latest"
# A watch interrupted by an evaluator restart reconnects this many times, a second apart.
RECONNECTS = 30
FAILURES_SHOWN = 5


def summary_json(summary: E.EvaluationSummary) -> dict:
    """The summary in protobuf's JSON form, with the proto's field names (run_id, pass_rate, ...)."""
    return json_format.MessageToDict(
        summary, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f} %"


class RunView:
    """What `watch` shows: progress, pass rate so far, per-family rates and the latest failures."""

    def __init__(self) -> None:
        self.summary: E.EvaluationSummary | None = None
        self.failures: deque[str] = deque(maxlen=FAILURES_SHOWN)

    def update(self, response: E.WatchEvaluationResponse) -> None:
        self.summary = response.summary
        failed = response.last_koan_id and not response.last_passed
        # A reconnected watch starts with the last koan again.
        if failed and (not self.failures or self.failures[0] != response.last_koan_id):
            self.failures.appendleft(response.last_koan_id)

    def __rich__(self) -> RenderableType:
        s = self.summary
        if s is None:
            return Text("waiting for the evaluator ...")
        adapter = (
            s.adapter_id if s.adapter_id == s.requested_adapter else f"{s.requested_adapter} = {s.adapter_id}"
        )
        selection = s.koan_set + (f" / {s.family}" if s.family else "")
        state = "[green]finished[/]" if s.finished else "[yellow]running[/]"
        header = Text.from_markup(
            f"run [bold]{s.run_id}[/]  {state}\nset {selection}, adapter {adapter}, "
            f"{s.repeats} repeat(s) from seed {s.seed}, up to {s.max_attempts} attempt(s)"
        )
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            ProgressBar(total=max(s.expected, 1), completed=s.evaluated, width=40),
            f"{s.evaluated}/{s.expected} koan runs",
        )
        rates = Text(
            f"pass rate {_percent(s.pass_rate)} ({s.passed}/{s.total} koans, 95 % "
            f"{_percent(s.pass_rate_low)}-{_percent(s.pass_rate_high)}), pass@1 {_percent(s.pass_at_1)}"
            + (f", median {s.median_attempts:g} attempt(s) to pass" if s.passed else "")
        )
        families = Table(box=None, pad_edge=False)
        for column in ("family", "passed", "rate"):
            families.add_column(column, justify="left" if column == "family" else "right")
        for f in s.families:
            color = "green" if f.pass_rate >= 0.5 else "red"
            families.add_row(f.family, f"{f.passed}/{f.total}", f"[{color}]{_percent(f.pass_rate)}[/]")
        parts: list[RenderableType] = [header, progress, rates, families]
        if self.failures:
            parts.append(Text("last failures: " + ", ".join(self.failures), style="red"))
        return Group(*parts)


def watch_updates(stub, run_id: str, reconnects: int = RECONNECTS) -> Iterator[E.WatchEvaluationResponse]:
    """Every update of a run until it finishes, reconnecting when the evaluator restarts meanwhile."""
    attempts = 0
    while True:
        try:
            for response in stub.WatchEvaluation(E.WatchEvaluationRequest(run_id=run_id)):
                attempts = 0
                run_id = response.summary.run_id or run_id  # "latest" becomes the run it picked
                yield response
                if response.summary.finished:
                    return
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
            attempts += 1
            if attempts > reconnects:
                raise
            time.sleep(1.0)
            continue
        raise CliError(f"the evaluator ended the watch of run {run_id} before it finished")


def follow(stub, run_id: str, show: bool, console: Console) -> E.EvaluationSummary:
    """Follow a run to its end (live view when `show`), returning its final summary."""
    view = RunView()
    updates = watch_updates(stub, run_id)
    view.update(next(updates))  # an unknown run fails here, before any view is drawn
    if show:
        with Live(view, console=console, refresh_per_second=4) as live:
            for response in updates:
                view.update(response)
                live.refresh()
        if not console.is_terminal:
            console.line()
    else:
        for response in updates:
            view.update(response)
    assert view.summary is not None
    return view.summary


def _with_evaluator(action: Callable[[evaluator_pb2_grpc.EvaluatorStub], int]) -> int:
    with channel("evaluator") as ch:
        try:
            return action(evaluator_pb2_grpc.EvaluatorStub(ch))
        except grpc.RpcError as exc:
            raise explain(exc, "evaluator") from None
        except KeyboardInterrupt:
            return 130


def cmd_eval(args: argparse.Namespace) -> int:
    request = E.StartEvaluationRequest(
        koan_set=args.set,
        family=args.family or "",
        adapter_id=args.adapter,
        repeats=args.repeats,
        seed=args.seed,
        max_attempts=args.max_attempts,
        model=args.model or "",
    )
    console = Console(stderr=True)

    def run(stub) -> int:
        run_id = stub.StartEvaluation(request, timeout=args.timeout).run_id
        if args.detach:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return 0
        if not args.json:
            console.print(f"evaluation {run_id} started; Ctrl-C stops watching, not the run", highlight=False)
        summary = follow(stub, run_id, show=not args.json, console=console)
        if args.json:
            print(json.dumps(summary_json(summary), indent=2))
        return 0

    return _with_evaluator(run)


def cmd_watch(args: argparse.Namespace) -> int:
    console = Console()

    def run(stub) -> int:
        follow(stub, args.run or LATEST, show=True, console=console)
        return 0

    return _with_evaluator(run)


def count_within(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be within 0..{limit}, got {value}")
        return value

    return parse


def add_parsers(sub) -> None:
    """`nightshift eval` and `nightshift watch`."""
    evaluate = sub.add_parser(
        "eval",
        help="evaluate the agent on a koan set (frozen, heldout, smoke or an imported pack)",
        description="Submit every koan of the set (x repeats; repeat r runs with seed + r) to the agent "
        "through the evaluator and follow the run live; with --json print its summary (run_id, pass_rate, "
        "pass_at_1, per-family rates, ...). The run goes on if you stop watching: `nightshift watch`.",
    )
    evaluate.add_argument("--set", required=True, metavar="SET", help="frozen, heldout, smoke or a pack name")
    evaluate.add_argument("--family", help="only the koans of this family")
    evaluate.add_argument(
        "--adapter",
        default="champion",
        help="adapter id, `none` for the base model, or `champion` (default: the champion served now)",
    )
    evaluate.add_argument("--repeats", type=count_within(10), default=1, help="runs per koan, seeds S..S+N-1")
    evaluate.add_argument("--seed", type=count_within(2**64 - 1), default=0, help="seed of the first repeat")
    evaluate.add_argument(
        "--max-attempts",
        type=count_within(10),
        default=0,
        help="attempts per koan (default: the evaluator's, 3)",
    )
    evaluate.add_argument("--model", help="model name (default: the agent's)")
    evaluate.add_argument("--detach", action="store_true", help="print the run id and return at once")
    evaluate.add_argument("--json", action="store_true", help="print the final summary as JSON")
    evaluate.add_argument("--timeout", type=float, default=60.0, help="deadline of the start call in seconds")
    evaluate.set_defaults(func=cmd_eval)

    watch = sub.add_parser(
        "watch",
        help="follow an evaluation live: progress, pass rate so far, per family, last failures",
        description="Follow RUN (default: the most recently started unfinished run) until it finishes.",
    )
    watch.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest unfinished run)")
    watch.set_defaults(func=cmd_watch)
