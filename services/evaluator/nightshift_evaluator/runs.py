"""Evaluation runs: start one, submit its koans to the agent, follow their episodes, summarise it.

A run lives on the EVALUATION stream: `EvaluationStarted` (its koans and settings, the adapter
resolved), one `KoanEvaluated` per (koan, repeat), then `EvaluationCompleted` with the summary.
The agent's `TaskSubmitted` / `EpisodeCompleted` events (EPISODES stream, tagged with the run id)
say which koans have a task and how each task ended; who published them does not matter here.

On start every run is rebuilt from both streams, so a run interrupted by a restart goes on where it
was: finished episodes become their `KoanEvaluated`, tasks still running are awaited (the agent
resumes them itself), and only koans without a task are submitted. Every event a run publishes
has a deterministic id, so JetStream absorbs a republish, and the rebuilt state skips what is
already on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import grpc
from nightshift.bus import Delivery, EventBus
from nightshift.corpus import Corpus, CorpusError, Koan
from nightshift.grpcserver import client_channel
from nightshift.v1 import agent_pb2, agent_pb2_grpc, evaluator_pb2, events_pb2

from nightshift_evaluator.metrics import KoanOutcome, summarise

log = logging.getLogger("nightshift.evaluator.runs")

E = evaluator_pb2
MAX_REPEATS = 10
MAX_ATTEMPTS = 10
DEFAULT_MAX_ATTEMPTS = 3
CHAMPION = "champion"
BASE_MODEL = "none"
# GetEvaluation / WatchEvaluation of this run id follow the most recently started unfinished run.
LATEST = "latest"
# Seeds are uint64: the seed of repeat r is (seed + r) mod 2**64.
SEED_MODULUS = 2**64
# Namespace of the deterministic event ids (uuid5 of "<run id>/<what>").
EVENT_NAMESPACE = uuid.UUID("3b8f5d0e-52a4-4c7e-9a61-0d2f7c4e8b19")
# Agent answers worth retrying: the same request may be accepted a moment later.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 10.0
CONSUMER_RESTART_SECONDS = 1.0

Pair = tuple[str, int]  # (koan id, repeat)


class RunRequestError(Exception):
    """A request the run manager refuses: a gRPC status code and a message naming the field."""

    def __init__(self, code: grpc.StatusCode, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.code = code
        self.field = field_name
        self.problem = problem

    def for_field(self, field_name: str) -> RunRequestError:
        """The same refusal, naming the field of the request it came from."""
        return RunRequestError(self.code, field_name, self.problem)


# --- pure rules ------------------------------------------------------------------------------------


def seed_of(seed: int, repeat: int) -> int:
    """The seed of one repeat: the run's seed + repeat (uint64 arithmetic)."""
    return (seed + repeat) % SEED_MODULUS


def repeat_of(run_seed: int, task_seed: int) -> int:
    """The repeat a task's seed belongs to (the inverse of `seed_of`)."""
    return (task_seed - run_seed) % SEED_MODULUS


def run_event_id(run_id: str, what: str) -> str:
    """A deterministic event id of one fact about a run (e.g. "started", "koan/<id>/<repeat>")."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{run_id}/{what}"))


def koan_event_id(run_id: str, koan_id: str, repeat: int) -> str:
    return run_event_id(run_id, f"koan/{koan_id}/{repeat}")


def iso_seconds(timestamp) -> str:
    """An event's protobuf Timestamp as ISO-8601 in UTC, to the second."""
    return timestamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def normalised_request(request: E.StartEvaluationRequest) -> E.StartEvaluationRequest:
    """The request with its defaults filled in and its numbers checked (koans and adapter come later)."""
    if not request.koan_set.strip():
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "koan_set", "is required")
    if request.repeats > MAX_REPEATS:
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT, "repeats", f"at most {MAX_REPEATS}, got {request.repeats}"
        )
    if request.max_attempts > MAX_ATTEMPTS:
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_attempts",
            f"at most {MAX_ATTEMPTS}, got {request.max_attempts}",
        )
    out = E.StartEvaluationRequest()
    out.CopyFrom(request)
    out.koan_set = request.koan_set.strip()
    out.family = request.family.strip()
    out.adapter_id = request.adapter_id.strip() or CHAMPION
    out.repeats = request.repeats or 1
    out.max_attempts = request.max_attempts or DEFAULT_MAX_ATTEMPTS
    return out


def select_koans(corpus: Corpus, koan_set: str, family: str) -> list[Koan]:
    """The koans a run evaluates, sorted by id; INVALID_ARGUMENT for an unknown or empty selection."""
    known = corpus.set_names()
    if koan_set not in known:
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "koan_set",
            f"unknown set {koan_set!r} (known: {', '.join(known)})",
        )
    koans = corpus.koans(koan_set)
    if not koans:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "koan_set", f"set {koan_set!r} has no koans")
    if family:
        chosen = [k for k in koans if k.family == family]
        if not chosen:
            families = sorted({k.family for k in koans})
            raise RunRequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "family",
                f"no koan of family {family!r} in set {koan_set!r} (families: {', '.join(families)})",
            )
        koans = chosen
    return koans


def resolve_adapter(requested: str, served: agent_pb2.ListServedAdaptersResponse) -> str:
    """The adapter a run pins: the champion served now, "none" (base model), or a served adapter id."""
    if requested == CHAMPION:
        return served.champion_adapter_id or BASE_MODEL
    if requested == BASE_MODEL:
        return BASE_MODEL
    ids = sorted(a.adapter_id for a in served.adapters)
    if requested not in ids:
        raise RunRequestError(
            grpc.StatusCode.NOT_FOUND,
            "adapter_id",
            f"the agent serves no adapter {requested!r} (served: {', '.join(ids) or 'none'}; "
            f"or use {CHAMPION!r} / {BASE_MODEL!r})",
        )
    return requested


def check_model(model: str, listed: agent_pb2.ListModelsResponse) -> None:
    """INVALID_ARGUMENT unless the agent knows the model (every koan would be refused otherwise)."""
    names = sorted(m.name for m in listed.models)
    if model not in names:
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "model",
            f"the agent knows no model {model!r} (known: {', '.join(names) or 'none'})",
        )


def koan_evaluated(
    run_id: str, pair: Pair, family: str, episode: events_pb2.EpisodeCompleted
) -> events_pb2.KoanEvaluated:
    """The KoanEvaluated of one finished episode of a run."""
    koan_id, repeat = pair
    return events_pb2.KoanEvaluated(
        run_id=run_id,
        koan_id=koan_id,
        family=family,
        repeat=repeat,
        passed=episode.passed,
        attempts=episode.steps,
        passed_first_attempt=episode.passed and episode.steps == 1,
        error_codes=list(episode.error_codes),
        task_id=episode.task_id,
    )


def outcome_of(event: events_pb2.KoanEvaluated) -> KoanOutcome:
    """A KoanEvaluated as a metrics outcome (an episode that never made an attempt counts as one)."""
    attempts = max(event.attempts, 1)
    return KoanOutcome(
        koan_id=event.koan_id,
        family=event.family,
        repeat=event.repeat,
        passed=event.passed,
        attempts=attempts,
        passed_first_attempt=event.passed_first_attempt and event.passed and attempts == 1,
        error_codes=tuple(event.error_codes),
    )


# --- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    """What is known of one run: its settings, its tasks, its evaluated koans, whether it completed."""

    run_id: str
    request: E.StartEvaluationRequest  # defaults filled in; adapter_id is the resolved adapter
    koan_ids: list[str]
    families: dict[str, str]
    requested_adapter: str
    model: str = ""
    started_at: str = ""  # ISO-8601 time of its EvaluationStarted
    # Driven by this evaluator (started here, or resumed with every koan in the corpus); a run it
    # does not own is only followed: nothing is submitted or published for it.
    owned: bool = False
    task_pairs: dict[str, Pair] = field(default_factory=dict)  # every task of the run -> its pair
    live_tasks: dict[Pair, str] = field(default_factory=dict)  # pairs whose task is still running
    ended_tasks: set[str] = field(default_factory=set)
    evaluated: dict[Pair, events_pb2.KoanEvaluated] = field(default_factory=dict)
    order: list[events_pb2.KoanEvaluated] = field(default_factory=list)  # in evaluation order
    completed: E.EvaluationSummary | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_started(cls, event: events_pb2.EvaluationStarted, families: dict[str, str]) -> Run:
        koan_ids = list(event.koan_ids)
        return cls(
            run_id=event.run_id,
            request=event.request,
            koan_ids=koan_ids,
            families={k: families[k] for k in koan_ids if k in families},
            requested_adapter=event.requested_adapter or event.request.adapter_id,
            model=event.request.model,
        )

    @property
    def served_model(self) -> str:
        """The model the run's episodes were served by ("" until one is known)."""
        return self.model or (self.completed.model if self.completed is not None else "")

    @property
    def expected(self) -> int:
        return len(self.koan_ids) * self.request.repeats

    @property
    def finished(self) -> bool:
        return self.completed is not None

    def pairs(self) -> list[Pair]:
        """Every (koan, repeat) of the run, in submission order: repeat by repeat, koan by koan."""
        return [(k, r) for r in range(self.request.repeats) for k in self.koan_ids]

    def pair_of(self, koan_id: str, seed: int) -> Pair | None:
        """The (koan, repeat) a task of this run works on, from its koan and seed; None if not the run's."""
        repeat = repeat_of(self.request.seed, seed)
        if koan_id not in self.koan_ids or repeat >= self.request.repeats:
            return None
        return (koan_id, repeat)

    def next_pending(self) -> Pair | None:
        """The first pair with neither a running task nor an evaluation."""
        for pair in self.pairs():
            if pair not in self.evaluated and pair not in self.live_tasks:
                return pair
        return None

    @property
    def outstanding(self) -> int:
        return len(self.live_tasks)

    def changed(self) -> asyncio.Event:
        """An event set at the next change of this run (take it before looking at the state)."""
        return self._changed

    def touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def assign(self, task_id: str, pair: Pair) -> None:
        """A task now runs `pair` (unless the pair is done or the task already ended)."""
        self.task_pairs[task_id] = pair
        if pair not in self.evaluated and task_id not in self.ended_tasks:
            self.live_tasks[pair] = task_id
            self.touch()

    def record(self, event: events_pb2.KoanEvaluated) -> bool:
        """Take one KoanEvaluated; False when that (koan, repeat) was already evaluated."""
        pair = (event.koan_id, event.repeat)
        if pair in self.evaluated:
            return False
        self.evaluated[pair] = event
        self.order.append(event)
        self.live_tasks.pop(pair, None)
        self.families.setdefault(event.koan_id, event.family)
        self.touch()
        return True

    def summary(self, upto: int | None = None) -> E.EvaluationSummary:
        """The summary after the first `upto` evaluations (all by default); the stored one once completed."""
        if self.completed is not None and (upto is None or upto >= len(self.order)):
            return self.completed
        events = self.order if upto is None else self.order[:upto]
        return summary_message(self, [outcome_of(e) for e in events], finished=False)


def summary_message(run: Run, outcomes: list[KoanOutcome], finished: bool) -> E.EvaluationSummary:
    """The EvaluationSummary of a run from its outcomes so far."""
    s = summarise(outcomes, expected=run.expected)
    request = run.request
    return E.EvaluationSummary(
        run_id=run.run_id,
        koan_set=request.koan_set,
        adapter_id=request.adapter_id,
        total=s.total,
        passed=s.passed,
        pass_rate=s.pass_rate,
        pass_at_1=s.pass_at_1,
        pass_rate_low=s.pass_rate_low,
        pass_rate_high=s.pass_rate_high,
        median_attempts=s.median_attempts or 0.0,
        repeat_error_rate=s.repeat_error_rate,
        families=[
            E.FamilyRate(family=name, passed=rate.passed, total=rate.total, pass_rate=rate.pass_rate)
            for name, rate in s.families.items()
        ],
        finished=finished,
        model=run.model,
        mean_attempts=s.mean_attempts or 0.0,
        repeats=request.repeats,
        seed=request.seed,
        max_attempts=request.max_attempts,
        family=request.family,
        evaluated=s.evaluated,
        expected=run.expected,
        error_codes=s.error_codes,
        correlation_id=request.correlation_id,
        requested_adapter=run.requested_adapter,
        pass_rate_mean=s.pass_rate_mean,
        pass_at_1_low=s.pass_at_1_low,
        pass_at_1_high=s.pass_at_1_high,
    )


# --- the runs of this evaluator ------------------------------------------------------------------


class EvaluationRuns:
    """Starts runs, submits their koans through a bounded window, follows their events, resumes them."""

    def __init__(
        self,
        bus: EventBus,
        agent_addr: str,
        *,
        corpus_dir: Path | None = None,
        window: int = 2,
        agent_timeout_seconds: float = 10.0,
    ):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.bus = bus
        self.agent_addr = agent_addr
        self.window = window
        self.agent_timeout_seconds = agent_timeout_seconds
        self.corpus_dir = corpus_dir
        self.runs: dict[str, Run] = {}
        self._channel: grpc.aio.Channel | None = None
        self._stub: agent_pb2_grpc.AgentStub | None = None
        self._drivers: dict[str, asyncio.Task] = {}
        self._consumers: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._positions: dict[str, int] = {}
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild every run from the streams, evaluate what finished meanwhile, then follow and submit."""
        self._channel = client_channel(self.agent_addr)
        self._stub = agent_pb2_grpc.AgentStub(self._channel)
        try:
            corpus = await self._corpus()
            families = {k.id: k.family for name in corpus.set_names() for k in corpus.koans(name)}
        except RunRequestError as exc:  # keep projecting; runs resume at a start with a usable corpus
            log.error("unfinished evaluation runs are not resumed: %s", exc)
            families = {}
        evaluation_end = await self.bus.stream_last_sequence("EVALUATION")
        for delivery in await self.bus.read_all("EVALUATION"):
            if delivery.stream_sequence <= evaluation_end:
                self._apply_evaluation(delivery, families)
        for run in self.runs.values():
            if run.finished:
                continue
            unknown = [k for k in run.koan_ids if k not in families]
            if unknown:
                log.warning(
                    "run %s: koans %s are not in the corpus; following it without submitting",
                    run.run_id,
                    ", ".join(unknown[:5]),
                )
            else:
                run.owned = True
        episodes_end = await self.bus.stream_last_sequence("EPISODES")
        episodes: list[Delivery] = []
        for subject in ("episodes.task.submitted", "episodes.episode.completed"):
            episodes.extend(await self.bus.read_all("EPISODES", subject))
        episodes.sort(key=lambda d: d.stream_sequence)
        for delivery in episodes:
            if delivery.stream_sequence <= episodes_end:
                await self._on_episode(delivery)
        self._positions = {"EVALUATION": evaluation_end, "EPISODES": episodes_end}
        self._consumers = [
            asyncio.create_task(self._follow("EVALUATION", self._on_evaluation), name="runs-evaluation"),
            asyncio.create_task(self._follow("EPISODES", self._on_episode), name="runs-episodes"),
        ]
        unfinished = [run for run in self.runs.values() if run.owned and not run.finished]
        for run in unfinished:
            await self._complete_if_done(run)
            if not run.finished:
                self._drive(run)
        if unfinished:
            log.info("resumed %d unfinished evaluation run(s)", len(unfinished))

    def release_watchers(self) -> None:
        """End every WatchEvaluation stream (the server is stopping)."""
        self._closing = True
        for run in self.runs.values():
            run.touch()

    async def stop(self) -> None:
        """Stop submitting and following; what is unfinished resumes at the next start."""
        self.release_watchers()
        self._stop.set()
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        for task in self._consumers:
            await asyncio.wait({task}, timeout=3.0)
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self._consumers.clear()
        if self._channel is not None:
            await self._channel.close()

    # --- requests ------------------------------------------------------------------------------

    async def start_run(self, request: E.StartEvaluationRequest) -> str:
        """Validate, pin the adapter, publish EvaluationStarted and start submitting; returns the run id."""
        normal = normalised_request(request)
        corpus = await self._corpus()
        koans = select_koans(corpus, normal.koan_set, normal.family)
        served = await self._ask_agent("ListAdapters", agent_pb2.ListServedAdaptersRequest())
        if normal.model:
            models = await self._ask_agent("ListModels", agent_pb2.ListModelsRequest())
            check_model(normal.model, models)
        requested = normal.adapter_id
        normal.adapter_id = resolve_adapter(requested, served)
        run_id = str(uuid.uuid4())
        normal.correlation_id = normal.correlation_id or run_id
        started = events_pb2.EvaluationStarted(
            run_id=run_id, request=normal, koan_ids=[k.id for k in koans], requested_adapter=requested
        )
        run = Run.from_started(started, {k.id: k.family for k in koans})
        run.owned = True
        self.runs[run_id] = run
        try:
            envelope = await self.bus.publish(
                started, correlation_id=normal.correlation_id, event_id=run_event_id(run_id, "started")
            )
            run.started_at = iso_seconds(envelope.occurred_at)
        except BaseException:
            del self.runs[run_id]
            raise
        log.info(
            "run %s: %d koan(s) of %s x %d repeat(s) on adapter %s",
            run_id,
            len(koans),
            normal.koan_set + (f"/{normal.family}" if normal.family else ""),
            normal.repeats,
            normal.adapter_id,
        )
        self._drive(run)
        return run_id

    async def finished_match(self, request: E.StartEvaluationRequest, within: str = "") -> Run | None:
        """The earliest finished run that measured exactly what `request` asks, or None.

        Exactly: the same set and family with the same koans in the corpus now, the same adapter (an
        id or "none"; "champion" never matches, it names no adapter), model, seed, repeats and attempts.
        A run that asked for the agent's default model ("") matches the model its episodes were served
        by. Decoding is deterministic for those settings, so such a run is that measurement. `within`:
        only runs whose correlation id starts with it (e.g. one cycle run's).
        """
        normal = normalised_request(request)
        if normal.adapter_id == CHAMPION:
            return None
        koan_ids = [k.id for k in select_koans(await self._corpus(), normal.koan_set, normal.family)]
        for run in self.runs.values():
            r = run.request
            if (
                run.finished
                and r.correlation_id.startswith(within)
                and run.koan_ids == koan_ids
                and (r.koan_set, r.family, r.adapter_id)
                == (normal.koan_set, normal.family, normal.adapter_id)
                and normal.model in (r.model, run.served_model)
                and (r.seed, r.repeats, r.max_attempts) == (normal.seed, normal.repeats, normal.max_attempts)
            ):
                return run
        return None

    def find(self, run_id: str) -> Run:
        """The run of an id, or of "latest" the most recently started unfinished run."""
        if not run_id:
            raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "run_id", "is required")
        if run_id == LATEST:
            unfinished = [run for run in self.runs.values() if not run.finished]
            if not unfinished:
                raise RunRequestError(grpc.StatusCode.NOT_FOUND, "run_id", "no evaluation is running")
            return unfinished[-1]
        run = self.runs.get(run_id)
        if run is None:
            raise RunRequestError(grpc.StatusCode.NOT_FOUND, "run_id", f"no evaluation {run_id!r}")
        return run

    def summary(self, run_id: str) -> E.EvaluationSummary:
        return self.find(run_id).summary()

    async def watch(self, run_id: str) -> AsyncIterator[E.WatchEvaluationResponse]:
        """The summary now, then one update per KoanEvaluated, ending once the run completed."""
        run = self.find(run_id)
        sent = len(run.order)
        update = self._update(run, sent)
        yield update
        while not update.summary.finished:
            changed = run.changed()
            while sent < len(run.order):
                sent += 1
                update = self._update(run, sent)
                yield update
            if run.finished and not update.summary.finished:
                update = self._update(run, sent)
                yield update
            if update.summary.finished:
                return
            if self._closing:
                raise RunRequestError(
                    grpc.StatusCode.UNAVAILABLE, "run_id", "the evaluator is stopping; watch again"
                )
            await changed.wait()

    @staticmethod
    def _update(run: Run, upto: int) -> E.WatchEvaluationResponse:
        """The update of a watcher that has seen the first `upto` evaluations."""
        last = run.order[upto - 1] if upto else None
        return E.WatchEvaluationResponse(
            summary=run.summary(upto),
            last_koan_id=last.koan_id if last else "",
            last_passed=last.passed if last else False,
        )

    async def _corpus(self) -> Corpus:
        """The corpus and packs as they are now (a pack imported since the last call is included)."""
        try:
            return await asyncio.to_thread(Corpus.load, self.corpus_dir)
        except (CorpusError, OSError) as exc:
            raise RunRequestError(
                grpc.StatusCode.FAILED_PRECONDITION, "koan_set", f"the corpus cannot be loaded: {exc}"
            ) from None

    async def _ask_agent(self, method: str, request):
        """One unary call to the agent; UNAVAILABLE (naming the agent's address) when it does not answer."""
        assert self._stub is not None, "start() first"
        try:
            return await getattr(self._stub, method)(request, timeout=self.agent_timeout_seconds)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RunRequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    "agent",
                    f"the agent is not reachable at {self.agent_addr} ({exc.code().name}); "
                    "start it or set NIGHTSHIFT_AGENT_ADDR",
                ) from None
            raise RunRequestError(
                grpc.StatusCode.UNAVAILABLE,
                "agent",
                f"the agent at {self.agent_addr} did not answer {method}: {exc.code().name} {exc.details()}",
            ) from None

    # --- submitting ----------------------------------------------------------------------------

    def _drive(self, run: Run) -> None:
        if run.run_id not in self._drivers and not self._stop.is_set():
            self._drivers[run.run_id] = asyncio.create_task(self._submit_all(run), name=f"run-{run.run_id}")

    async def _submit_all(self, run: Run) -> None:
        """Submit the run's pending koans, never more than `window` running at once, until it completes."""
        try:
            while not run.finished:
                changed = run.changed()
                pair = run.next_pending()
                if pair is None or run.outstanding >= self.window:
                    await changed.wait()
                    continue
                try:
                    await self._submit(run, pair)
                except Exception:  # e.g. the bus refused a refusal's KoanEvaluated: try again shortly
                    log.exception("run %s: submitting koan %s failed; retrying", run.run_id, pair[0])
                    await asyncio.sleep(RETRY_MAX_SECONDS)
        finally:
            self._drivers.pop(run.run_id, None)

    async def _submit(self, run: Run, pair: Pair) -> None:
        assert self._stub is not None
        koan_id, repeat = pair
        request = agent_pb2.SubmitTaskRequest(
            koan_id=koan_id,
            max_attempts=run.request.max_attempts,
            adapter_id=run.request.adapter_id,
            model=run.request.model,
            seed=seed_of(run.request.seed, repeat),
            run_id=run.run_id,
            correlation_id=run.request.correlation_id,
        )
        delay = RETRY_FIRST_SECONDS
        while True:
            changed = run.changed()
            try:
                response = await self._stub.SubmitTask(request, timeout=self.agent_timeout_seconds)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    log.error("run %s: the agent refused koan %s: %s", run.run_id, koan_id, exc.details())
                    await self._refused(run, pair, exc.code())
                    return
                log.info(
                    "run %s: agent %s for koan %s; retrying in %.2fs",
                    run.run_id,
                    exc.code().name,
                    koan_id,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                # A lost answer may hide an accepted task: its TaskSubmitted says so.
                if pair in run.live_tasks or pair in run.evaluated:
                    return
                continue
            run.assign(response.task_id, pair)
            return

    async def _refused(self, run: Run, pair: Pair, code: grpc.StatusCode) -> None:
        """A koan the agent will not run counts as failed, with the refusal as its error code."""
        koan_id, repeat = pair
        event = events_pb2.KoanEvaluated(
            run_id=run.run_id,
            koan_id=koan_id,
            family=run.families.get(koan_id, ""),
            repeat=repeat,
            passed=False,
            attempts=0,
            error_codes=[f"SUBMIT_{code.name}"],
        )
        await self._evaluate(run, event, causation_id="")

    # --- following -----------------------------------------------------------------------------

    async def _follow(self, stream: str, handler) -> None:
        """A durable consumer of `stream` after the last position handled, restarted when it fails."""
        durable = f"evaluator-runs-{stream.lower()}"

        async def handle(delivery: Delivery) -> None:
            await handler(delivery)
            self._positions[stream] = delivery.stream_sequence

        while not self._stop.is_set():
            try:
                await self.bus.consume(
                    stream, durable, handle, start_sequence=self._positions[stream] + 1, stop=self._stop
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s stopped: %r; restarting", durable, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CONSUMER_RESTART_SECONDS)

    async def _on_evaluation(self, delivery: Delivery) -> None:
        self._apply_evaluation(delivery, {})

    def _apply_evaluation(self, delivery: Delivery, families: dict[str, str]) -> None:
        event = delivery.event
        if isinstance(event, events_pb2.EvaluationStarted):
            if event.run_id not in self.runs:
                run = Run.from_started(event, families)
                run.started_at = iso_seconds(delivery.envelope.occurred_at)
                self.runs[event.run_id] = run
        elif isinstance(event, events_pb2.KoanEvaluated):
            run = self.runs.get(event.run_id)
            if run is not None:
                run.record(event)
        elif isinstance(event, events_pb2.EvaluationCompleted):
            run = self.runs.get(event.summary.run_id)
            if run is not None and run.completed is None:
                run.completed = event.summary
                run.touch()

    async def _on_episode(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, events_pb2.TaskSubmitted):
            run = self.runs.get(event.request.run_id)
            if run is None or not run.owned or run.finished or event.task_id in run.ended_tasks:
                return
            pair = run.pair_of(event.request.koan_id, event.request.seed)
            if pair is not None:
                run.assign(event.task_id, pair)
        elif isinstance(event, events_pb2.EpisodeCompleted):
            run = self.runs.get(event.run_id)
            if run is None or not run.owned or run.finished:
                return
            pair = run.task_pairs.get(event.task_id)
            if pair is None:
                log.warning("run %s: episode of unknown task %s ignored", run.run_id, event.task_id)
                return
            run.ended_tasks.add(event.task_id)
            if event.model and not run.model:
                run.model = event.model
            if event.state == agent_pb2.TASK_CANCELLED:
                # Cancelled (e.g. the agent shut down): not an outcome; the koan is submitted again.
                if run.live_tasks.get(pair) == event.task_id:
                    del run.live_tasks[pair]
                    run.touch()
                return
            family = run.families.get(pair[0]) or event.family
            await self._evaluate(
                run, koan_evaluated(run.run_id, pair, family, event), causation_id=delivery.envelope.event_id
            )

    async def _evaluate(self, run: Run, event: events_pb2.KoanEvaluated, causation_id: str) -> None:
        """Publish one KoanEvaluated unless its (koan, repeat) already has one; complete the run when done."""
        async with run.lock:
            if (event.koan_id, event.repeat) in run.evaluated:
                return
            await self.bus.publish(
                event,
                correlation_id=run.request.correlation_id,
                causation_id=causation_id,
                event_id=koan_event_id(run.run_id, event.koan_id, event.repeat),
            )
            run.record(event)
        await self._complete_if_done(run)

    async def _complete_if_done(self, run: Run) -> None:
        """Publish EvaluationCompleted once every (koan, repeat) of the run is evaluated."""
        async with run.lock:
            if run.finished or any(pair not in run.evaluated for pair in run.pairs()):
                return
            summary = summary_message(run, [outcome_of(e) for e in run.order], finished=True)
            await self.bus.publish(
                events_pb2.EvaluationCompleted(summary=summary),
                correlation_id=run.request.correlation_id,
                causation_id=run.run_id,
                event_id=run_event_id(run.run_id, "completed"),
            )
            run.completed = summary
            run.touch()
        log.info(
            "run %s completed: %d/%d koans passed (%.1f %%), pass@1 %.1f %%",
            run.run_id,
            summary.passed,
            summary.total,
            100 * summary.pass_rate,
            100 * summary.pass_at_1,
        )
