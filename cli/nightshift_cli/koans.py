"""`nightshift koans ...`: list, show and validate the koan corpus (validation runs in the Sandbox)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from nightshift.corpus import Corpus, Koan, LeakageIndex
from nightshift.v1 import sandbox_pb2, sandbox_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nightshift_cli.rpc import CliError, channel, explain

S = sandbox_pb2
MODES = {"test": S.MODE_TEST, "build": S.MODE_BUILD}


@dataclass
class Validation:
    id: str
    family: str
    set: str
    valid: bool
    reason: str
    seconds: float = 0.0
    checks: list[dict] = field(default_factory=list)


def _status(verdict: sandbox_pb2.Verdict) -> str:
    return S.CheckStatus.Name(verdict.status)


def _errors(verdict: sandbox_pb2.Verdict) -> list[str]:
    return [d.code for d in verdict.diagnostics if d.level == "error" and d.code]


def _failed_tests(verdict: sandbox_pb2.Verdict) -> list[str]:
    return sorted(t.name for t in verdict.tests if not t.passed)


def broken_problem(koan: Koan, verdict: sandbox_pb2.Verdict) -> str | None:
    """Why the broken program does not fail as the koan declares, or None when it does."""
    if koan.expected_codes:
        if verdict.status != S.COMPILE_ERROR:
            expected = list(koan.expected_codes)
            return f"broken program: expected COMPILE_ERROR with {expected}, got {_status(verdict)}"
        missing = [c for c in koan.expected_codes if c not in _errors(verdict)]
        if missing:
            return f"broken program: expected {missing} among the errors, got {_errors(verdict)}"
        return None
    if not koan.expected_failing_tests:
        # An imported exercise declares nothing: it only has to fail.
        return (
            None
            if verdict.status in (S.COMPILE_ERROR, S.TEST_FAILED)
            else (f"broken program: expected it to fail, got {_status(verdict)}")
        )
    if verdict.status != S.TEST_FAILED:
        return f"broken program: expected TEST_FAILED, got {_status(verdict)} {verdict.detail}".strip()
    if _failed_tests(verdict) != sorted(koan.expected_failing_tests):
        return (
            f"broken program: expected failing tests {sorted(koan.expected_failing_tests)}, "
            f"got {_failed_tests(verdict)}"
        )
    return None


def validate_koan(stub: sandbox_pb2_grpc.SandboxStub, koan: Koan, clippy: bool, timeout: float) -> Validation:
    """Broken fails as declared; the fix passes (and clippy); every decoy fails."""
    started = time.monotonic()
    result = Validation(id=koan.id, family=koan.family, set=koan.split, valid=True, reason="ok")
    mode = MODES[koan.mode]

    def run(role: str, source: str, check_mode: int) -> sandbox_pb2.Verdict:
        verdict = stub.Check(
            S.CheckRequest(
                source=source, tests=koan.tests, mode=check_mode, correlation_id=f"koan:{koan.id}"
            ),
            timeout=timeout,
        ).verdict
        result.checks.append(
            {
                "role": role,
                "status": _status(verdict),
                "errors": _errors(verdict),
                "failed_tests": _failed_tests(verdict),
            }
        )
        return verdict

    problems = []
    problem = broken_problem(koan, run("broken", koan.broken, mode))
    if problem:
        problems.append(problem)
    if koan.fix:
        fix_mode = S.MODE_CLIPPY if clippy else mode
        verdict = run("fix", koan.fix, fix_mode)
        if verdict.status != S.OK:
            detail = verdict.detail or "; ".join(d.message for d in verdict.diagnostics[:3])
            problems.append(f"reference fix: {_status(verdict)} {detail}".strip())
    if koan.tests.strip() and koan.fix and not koan.decoys:
        problems.append("a koan with tests needs at least one decoy")
    for n, decoy in enumerate(koan.decoys, 1):
        if run(f"decoy {n}", decoy.source, mode).status == S.OK:
            problems.append(f"decoy {n} ({decoy.description}) passes: the tests do not catch it")
    if problems:
        result.valid, result.reason = False, "; ".join(problems)
    result.seconds = time.monotonic() - started
    return result


def validate(
    koans: list[Koan], *, clippy: bool, jobs: int, timeout: float, console: Console, show_progress: bool
) -> list[Validation]:
    with channel("sandbox") as ch:
        stub = sandbox_pb2_grpc.SandboxStub(ch)
        results: list[Validation] = []
        progress = Progress(
            TextColumn("validating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[invalid]} invalid"),
            console=console,
            disable=not show_progress,
        )
        with progress, ThreadPoolExecutor(max_workers=jobs) as pool:
            task = progress.add_task("koans", total=len(koans), invalid=0)
            futures = [pool.submit(validate_koan, stub, k, clippy, timeout) for k in koans]
            try:
                for future in futures:
                    results.append(future.result())
                    progress.update(task, advance=1, invalid=sum(not r.valid for r in results))
            except grpc.RpcError as exc:
                for f in futures:
                    f.cancel()
                raise explain(exc, "sandbox") from None
    return results


def cmd_validate(args) -> int:
    corpus = _load(args)
    koans = _select(corpus, args)
    console = Console(stderr=True)
    started = time.monotonic()
    results = validate(
        koans,
        clippy=not args.no_clippy,
        jobs=args.jobs,
        timeout=args.timeout,
        console=console,
        show_progress=not args.json,
    )
    elapsed = time.monotonic() - started
    invalid = [r for r in results if not r.valid]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in invalid:
            console.print(f"[red]invalid[/] {r.id}: {r.reason}", highlight=False)
        console.print(f"{len(results) - len(invalid)}/{len(results)} koans valid in {elapsed:.1f}s")
    return 1 if invalid else 0


def _load(args) -> Corpus:
    try:
        return Corpus.load()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _get(corpus: Corpus, koan_id: str) -> Koan:
    try:
        return corpus.get(koan_id)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None


def _select(corpus: Corpus, args) -> list[Koan]:
    try:
        koans = corpus.koans(args.set, family=getattr(args, "family", None))
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if getattr(args, "id", None):
        koans = [k for k in koans if k.id in set(args.id)]
    if not koans:
        raise CliError("no koans match")
    return koans


def cmd_import(args) -> int:
    from nightshift.corpus import default_packs_dir
    from nightshift.packs import import_pack, load_pack

    try:
        target = import_pack(Path(args.dir), default_packs_dir(), args.name, args.edition, force=args.force)
        koans = load_pack(target)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"imported {len(koans)} exercises as pack {args.name!r} into {target}")
    print(f"next: nightshift koans validate --set {args.name}")
    return 0


def cmd_generate(args) -> int:
    from dataclasses import replace

    from nightshift.corpus import default_corpus_dir
    from nightshift.variants import koan_to_toml, propose_variants

    corpus = _load(args)
    koan = _get(corpus, args.source_id)
    if koan.split not in ("train", "frozen", "heldout") or not koan.fix:
        raise CliError(
            f"{koan.id} is from pack {koan.split!r}: variants need a corpus koan with a reference fix"
        )
    console = Console(stderr=True)
    candidates = propose_variants(koan, args.n * 3, seed=args.seed)
    kept, rejected = [], []
    for candidate in candidates:
        if candidate.split == "train" and (
            corpus.is_evaluation_text(candidate.fix) or corpus.is_evaluation_text(candidate.broken)
        ):
            rejected.append((candidate.provenance.transformation, "near-duplicate of an evaluation koan"))
            continue
        number = len(kept) + 1
        while True:
            new_id = f"{koan.id}-v{number}"
            try:
                corpus.get(new_id)
                number += 1
            except KeyError:
                break
        candidate = replace(candidate, id=new_id)
        [result] = validate(
            [candidate],
            clippy=not args.no_clippy,
            jobs=1,
            timeout=args.timeout,
            console=console,
            show_progress=False,
        )
        if result.valid:
            kept.append(candidate)
        else:
            rejected.append((candidate.provenance.transformation, result.reason))
        if len(kept) == args.n:
            break
    target = default_corpus_dir() / "koans" / koan.family
    for variant in kept:
        path = target / f"{variant.id}.toml"
        if not args.dry_run:
            path.write_text(koan_to_toml(variant))
        console.print(
            f"[green]kept[/] {variant.id} ({variant.split}, {variant.provenance.transformation})"
            + ("" if args.dry_run else f" -> {path}"),
            highlight=False,
        )
    for transformation, reason in rejected:
        console.print(f"[yellow]dropped[/] a {transformation} variant: {reason}", highlight=False)
    console.print(f"{len(kept)}/{args.n} variants of {koan.id} kept ({len(rejected)} dropped)")
    return 0 if kept else 1


def cmd_list(args) -> int:
    koans = _select(_load(args), args)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "family": k.family,
                        "set": k.split,
                        "split": k.split,
                        "smoke": k.smoke,
                        "difficulty": k.difficulty,
                        "mode": k.mode,
                        "expected": list(k.expected_codes) or list(k.expected_failing_tests),
                    }
                    for k in koans
                ],
                indent=2,
            )
        )
        return 0
    table = Table(title=f"{len(koans)} koans ({args.set})")
    for column in ("id", "family", "set", "difficulty", "expected"):
        table.add_column(column)
    for k in koans:
        expected = ", ".join(k.expected_codes) or "fails " + ", ".join(k.expected_failing_tests)
        table.add_row(k.id, k.family, k.split + (" +smoke" if k.smoke else ""), str(k.difficulty), expected)
    Console().print(table)
    return 0


def cmd_show(args) -> int:
    koan = _get(_load(args), args.koan_id)
    console = Console()
    expected = ", ".join(koan.expected_codes) or "failing tests: " + ", ".join(koan.expected_failing_tests)
    console.print(
        f"[bold]{koan.id}[/] — {koan.title} ({koan.family}, {koan.split}, difficulty {koan.difficulty})"
    )
    console.print(
        f"expected: {expected}\nhint: {koan.hint}\nprovenance: {koan.provenance.kind} "
        f"{koan.provenance.parent} {koan.provenance.transformation}".rstrip(),
        highlight=False,
    )
    for title, text in (("broken", koan.broken), ("tests", koan.tests)):
        console.rule(title)
        console.print(text.rstrip(), markup=False, highlight=False)
    if args.fix:
        console.rule("fix")
        console.print(koan.fix.rstrip(), markup=False, highlight=False)
    return 0


def leakage_report(corpus: Corpus) -> list[dict]:
    """Train koans whose broken program or fix duplicates (after normalisation) an evaluation koan."""
    index = LeakageIndex(k for k in corpus.koans("all") if k.split != "train")
    leaks = []
    for koan in corpus.koans("train"):
        for role, text in (("broken", koan.broken), ("fix", koan.fix)):
            match = index.matches(text)
            if match:
                leaks.append({"id": koan.id, "role": role, "duplicates": match})
    return leaks


def cmd_leakage(args) -> int:
    corpus = _load(args)
    leaks = leakage_report(corpus)
    if args.json:
        print(json.dumps({"train": len(corpus.koans("train")), "leaks": leaks}, indent=2))
    else:
        for leak in leaks:
            print(f"LEAK {leak['id']} ({leak['role']}) duplicates evaluation koan {leak['duplicates']}")
        evaluation = len(corpus.koans("frozen")) + len(corpus.koans("heldout"))
        print(
            f"leakage check: {len(leaks)} leaks; {len(corpus.koans('train'))} train koans against "
            f"{evaluation} frozen + held-out koans"
        )
    return 1 if leaks else 0


def add_parser(sub) -> None:
    koans = sub.add_parser("koans", help="list, show and validate the koan corpus")
    ksub = koans.add_subparsers(dest="koans_command", required=True, metavar="ACTION")

    def set_args(p):
        p.add_argument("--set", default="all", help="train, frozen, heldout, smoke, all (default) or a pack")
        p.add_argument("--family", help="only this family")

    lister = ksub.add_parser("list", help="list koans")
    set_args(lister)
    lister.add_argument("--json", action="store_true")
    lister.set_defaults(func=cmd_list)

    show = ksub.add_parser("show", help="show one koan")
    show.add_argument("koan_id", metavar="ID")
    show.add_argument("--fix", action="store_true", help="also print the reference fix")
    show.set_defaults(func=cmd_show)

    check = ksub.add_parser(
        "validate",
        help="prove every koan: broken fails as declared, the fix passes (and clippy), decoys fail",
        description="Runs through the Sandbox service (start it with `nightshift up`). Exit 1 if any koan "
        "is invalid.",
    )
    set_args(check)
    check.add_argument("--id", action="append", help="only this koan (repeatable)")
    check.add_argument("--json", action="store_true", help="one JSON object per koan: id, valid, reason, ...")
    check.add_argument("--jobs", type=int, default=4, help="koans validated in parallel (default 4)")
    check.add_argument("--no-clippy", action="store_true", help="do not lint the reference fixes")
    check.add_argument("--timeout", type=float, default=300.0, help="RPC deadline per check, seconds")
    check.set_defaults(func=cmd_validate)

    leak = ksub.add_parser(
        "leakage",
        help="prove no frozen or held-out koan (or a near-duplicate) is in the train pool",
    )
    leak.add_argument("--json", action="store_true")
    leak.set_defaults(func=cmd_leakage)

    imp = ksub.add_parser(
        "import",
        help="import a folder of single-file Rust exercises as an evaluation pack (never trained on)",
        description="Copies DIR's .rs files (each a broken program, optionally with a "
        "#[cfg(test)] mod tests) and its optional manifest.toml (per-file mode build|test, hint, "
        "family; `order`) into <data-dir>/packs/NAME. The pack is then a set: --set NAME.",
    )
    imp.add_argument("dir", metavar="DIR")
    imp.add_argument("--name", required=True, help="the pack's set name")
    imp.add_argument("--edition", choices=["2021", "2024"], default="2021")
    imp.add_argument("--force", action="store_true", help="replace an existing pack of that name")
    imp.set_defaults(func=cmd_import)

    gen = ksub.add_parser(
        "generate",
        help="derive new koans from one by semantics-preserving transformations, keeping those that validate",
        description="Renames declared identifiers the tests do not use, swaps integer/float widths, and "
        "reorders top-level items, the same way in the broken program, the fix and the decoys. Each "
        "candidate is validated through the Sandbox; train variants that near-duplicate an evaluation "
        "koan are dropped. Variants of frozen koans are held-out koans; of train koans, train koans.",
    )
    gen.add_argument("--from", dest="source_id", required=True, metavar="ID", help="the koan to vary")
    gen.add_argument("--n", type=int, default=3, help="variants to keep (default 3)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--dry-run", action="store_true", help="validate but write nothing")
    gen.add_argument("--no-clippy", action="store_true")
    gen.add_argument("--timeout", type=float, default=300.0)
    gen.set_defaults(func=cmd_generate)
