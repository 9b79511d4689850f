"""The sleep cycle saga: day -> night -> dawn, K times, through the services (DESIGN.md, "Data flow").

A process manager, separate from the gate policy (gate.py) and the run manager (runs.py):
- day:   the champion works the day set (an evaluation-style run on the train pool, so every task is an
         episode the trainer consumes);
- night: the trainer builds the recipe's mix and trains a candidate adapter (Trainer.StartJob);
- dawn:  candidate and champion are evaluated on the frozen and held-out sets with the same seeds, the
         gate decides, and GateDecided is published (the trainer's registry promotes or rejects; the
         agent then serves the new champion).

Every phase is recorded as CyclePhaseStarted / CyclePhaseCompleted events, each with a deterministic
event id, and every step finds the work it would create before creating it: the day run and the dawn
runs by their correlation ids, the night's job by its TrainingJobRequested, the gate decision by its
GateDecided. So a saga cut short by a restart of any service resumes where it stopped, without redoing
finished work and without duplicate events. The champion's evaluations and the day's run are not run again
when a finished run already measured the same thing (same koans, adapter, model, seed, repeats and
attempts; EvaluationRuns.finished_match): the round before, an earlier cycle, or a baseline evaluation,
also one restored from an event archive. `fresh` limits that to the cycle run's own earlier rounds;
candidates are always evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from nightshift.bus import EventBus
from nightshift.grpcserver import client_channel
from nightshift.models import DEFAULT_MODEL
from nightshift.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    evaluator_pb2,
    events_pb2,
    trainer_pb2,
    trainer_pb2_grpc,
)

from nightshift_evaluator import decisions, gate
from nightshift_evaluator.runs import EvaluationRuns, Run, RunRequestError

E = evaluator_pb2
T = trainer_pb2
log = logging.getLogger("nightshift.evaluator.cycle")

PHASES = ("day", "night", "dawn")
RECIPES = ("naive", "replay", "rehearsal", "dpo")
MAX_CYCLES = 20
POLL_SECONDS = 1.0
# An RPC waits up to CALL_SECONDS for its service to be reachable and answer, CALL_ATTEMPTS times, before
# a phase gives up on it (a service restarting is back well before).
CALL_SECONDS = 30.0
CALL_ATTEMPTS = 30
# How long the saga waits for the registry and the agent to serve a promoted adapter.
CHAMPION_WAIT_SECONDS = 120.0
NAMESPACE = uuid.UUID("6f1c9a52-3c1e-4f7e-9a8e-2b7d4c1e5a90")

# --quick: the 0.5B, the smoke set by day, one attempt, a handful of training steps, one family at dawn.
QUICK_FAMILY = "mutability"
# A few steps at a higher rate and without warm-up, so the adapter moves the logits clearly enough for the
# trainer's GGUF verification to tell it from llama.cpp's quantisation noise.
QUICK_OVERRIDES = {
    "max_steps": "4",
    "batch_size": "1",
    "gradient_accumulation": "1",
    "learning_rate": "0.001",
    "warmup_steps": "0",
    "checkpoint_every": "2",
}


class CycleError(RuntimeError):
    """A phase that cannot go on; the cycle run ends as failed with this message."""


def event_id(cycle_id: str, *parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join([cycle_id, *map(str, parts)])))


def correlation(cycle_id: str, cycle: int, what: str) -> str:
    return f"{cycle_id}/{cycle}/{what}"


def normalised(request: E.StartCycleRequest) -> E.StartCycleRequest:
    """The request with every default filled in; RunRequestError naming the field when it is unusable."""
    r = E.StartCycleRequest()
    r.CopyFrom(request)
    if r.cycles == 0:
        r.cycles = 1
    if r.cycles > MAX_CYCLES:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "cycles", f"at most {MAX_CYCLES}")
    r.recipe = r.recipe or "replay"
    if r.recipe not in RECIPES:
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "recipe",
            f"unknown recipe {r.recipe!r}; known: {', '.join(RECIPES)}",
        )
    if r.quick:
        r.model = r.model or DEFAULT_MODEL
        r.day_set = r.day_set or "smoke"
        r.max_attempts = r.max_attempts or 1
        r.eval_family = r.eval_family or QUICK_FAMILY
        for key, value in QUICK_OVERRIDES.items():
            r.overrides.setdefault(key, value)
    r.day_set = r.day_set or "train"
    if r.day_set in ("frozen", "heldout"):
        raise RunRequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "day_set",
            "the day works the train pool, never an evaluation set",
        )
    try:  # a policy the dawn could not apply is refused now, not hours later at the gate
        gate.GatePolicy.from_overrides(dict(r.policy))
    except ValueError as exc:
        raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "policy", str(exc)) from None
    r.max_attempts = r.max_attempts or 3
    r.day_max_attempts = r.day_max_attempts or r.max_attempts
    r.repeats = r.repeats or 1
    return r


@dataclass
class CycleRun:
    """A cycle run as its events tell it."""

    cycle_id: str
    request: E.StartCycleRequest
    rounds: dict[int, E.CycleRound] = field(default_factory=dict)
    completed: set[tuple[int, str]] = field(default_factory=set)
    current: tuple[int, str] = (1, "day")
    state: str = "running"
    error: str = ""
    retries: int = 0
    # (round, phase) -> wall seconds of the passes of that phase that ended in a failure (before a retry)
    spent: dict[tuple[int, str], float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def round(self, cycle: int) -> E.CycleRound:
        return self.rounds.setdefault(cycle, E.CycleRound(cycle=cycle))

    @property
    def label(self) -> str:
        """The cycle run in a few words for a figure: its recipe, and its preset when one was named."""
        return self.request.recipe + (f" / {self.request.preset}" if self.request.preset else "")

    def apply(self, event) -> None:
        if isinstance(event, events_pb2.CyclePhaseStarted):
            self.current = (event.cycle, event.phase)
            if event.retry:
                self.state, self.error, self.retries = "running", "", event.retry
        elif isinstance(event, events_pb2.CyclePhaseCompleted):
            if event.phase in ("done", "failed"):
                if event.phase == "failed" and event.seconds:
                    self.spent[self.current] = self.spent.get(self.current, 0.0) + event.seconds
                self.state = event.phase
                self.error = event.error
                self.current = (event.cycle, "done" if event.phase == "done" else "failed")
            else:
                self.completed.add((event.cycle, event.phase))
                self.rounds[event.cycle] = E.CycleRound()
                self.rounds[event.cycle].CopyFrom(event.round)
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def status(self) -> E.CycleStatus:
        cycle, phase = self.current
        latest = self.rounds.get(cycle, E.CycleRound(cycle=cycle))
        status = E.CycleStatus(
            cycle_id=self.cycle_id,
            cycle=cycle,
            phase=phase,
            state=self.state,
            job_id=latest.job_id,
            adapter_id=latest.adapter_id,
            request=self.request,
            rounds=[self.rounds[c] for c in sorted(self.rounds)],
            error=self.error,
            retries=self.retries,
        )
        if latest.HasField("decision"):
            status.decision.CopyFrom(latest.decision)
        for r in status.rounds:
            status.run_ids.extend(
                x
                for x in (
                    r.day_run_id,
                    r.candidate_frozen_run_id,
                    r.champion_frozen_run_id,
                    r.candidate_heldout_run_id,
                    r.champion_heldout_run_id,
                )
                if x
            )
        return status


class CycleSaga:
    """Starts cycle runs, drives them phase by phase, and resumes them from the events after a restart."""

    def __init__(self, bus: EventBus, runs: EvaluationRuns, *, trainer_addr: str, agent_addr: str):
        self.bus = bus
        self.runs = runs
        self.trainer_addr = trainer_addr
        self.agent_addr = agent_addr
        self.cycles: dict[str, CycleRun] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._retrying = asyncio.Lock()
        self.trainer: trainer_pb2_grpc.TrainerStub | None = None
        self.agent: agent_pb2_grpc.AgentStub | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild every cycle run from the EVALUATION stream and continue the unfinished ones."""
        trainer_channel = client_channel(self.trainer_addr)
        agent_channel = client_channel(self.agent_addr)
        self._channels = [trainer_channel, agent_channel]
        self.trainer = trainer_pb2_grpc.TrainerStub(trainer_channel)
        self.agent = agent_pb2_grpc.AgentStub(agent_channel)
        for subject in ("evaluation.cycle.phase_started", "evaluation.cycle.phase_completed"):
            for delivery in sorted(
                await self.bus.read_all("EVALUATION", subject), key=lambda d: d.stream_sequence
            ):
                self._fold(delivery.event)
        for cycle in self.cycles.values():
            if cycle.state == "running":
                log.info("cycle %s resumes at round %d, %s", cycle.cycle_id, *cycle.current)
                self._drive(cycle)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for cycle in self.cycles.values():
            cycle.changed.set()
        for channel in self._channels:
            await channel.close()

    def _fold(self, event) -> None:
        cycle = self.cycles.get(event.cycle_id)
        if cycle is None:
            if not isinstance(event, events_pb2.CyclePhaseStarted) or not event.HasField("request"):
                return
            cycle = self.cycles[event.cycle_id] = CycleRun(event.cycle_id, event.request)
        cycle.apply(event)

    def _drive(self, cycle: CycleRun) -> None:
        task = self._tasks.get(cycle.cycle_id)
        if task is None or task.done():
            self._tasks[cycle.cycle_id] = asyncio.create_task(
                self._run(cycle), name=f"cycle-{cycle.cycle_id}"
            )

    # --- requests ------------------------------------------------------------------------------

    async def start_cycle(self, request: E.StartCycleRequest) -> str:
        normal = normalised(request)
        cycle_id = str(uuid.uuid4())
        await self._phase_started(CycleRun(cycle_id, normal), 1, "day", request=normal)
        self._drive(self.cycles[cycle_id])
        return cycle_id

    async def retry_cycle(self, cycle_id: str) -> CycleRun:
        """Drive a failed cycle run again from the first phase it had not completed.

        Every finished step is found again rather than redone (the day's run, the night's job, the dawn's
        runs and decision are looked up by their correlation ids), so a cycle that failed because a
        service was unreachable goes on where it stopped. A step that failed for good (a cancelled
        training job, say) fails the cycle again with the same error.
        """
        async with self._retrying:  # two calls at once retry once
            cycle = self.find(cycle_id)
            # A failed run's task records the failure as its last step; let it end before driving again.
            previous = self._tasks.get(cycle_id)
            if cycle.state == "failed" and previous is not None:
                await asyncio.wait({previous}, timeout=30.0)
            if cycle.state != "failed":
                raise RunRequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "cycle_id",
                    f"cycle run {cycle_id} is {cycle.state}; only a failed one can be retried",
                )
            n, phase = next(
                (
                    (n, p)
                    for n in range(1, cycle.request.cycles + 1)
                    for p in PHASES
                    if (n, p) not in cycle.completed
                ),
                (cycle.request.cycles, PHASES[-1]),
            )
            retry = cycle.retries + 1
            event = events_pb2.CyclePhaseStarted(cycle_id=cycle_id, cycle=n, phase=phase, retry=retry)
            await self.bus.publish(
                event,
                correlation_id=cycle_id,
                event_id=event_id(cycle_id, n, phase, "started", "retry", retry),
            )
            self._fold(event)
        log.info("cycle %s retried (%d) at round %d, %s", cycle_id, retry, n, phase)
        self._drive(cycle)
        return cycle

    def find(self, cycle_id: str) -> CycleRun:
        if not cycle_id:
            raise RunRequestError(grpc.StatusCode.INVALID_ARGUMENT, "cycle_id", "is required")
        cycle = self.cycles.get(cycle_id)
        if cycle is None:
            raise RunRequestError(grpc.StatusCode.NOT_FOUND, "cycle_id", f"no cycle run {cycle_id!r}")
        return cycle

    def champion_runs(self, cycle_id: str) -> list[tuple[int, Run]]:
        """(round, frozen run of the adapter that was champion after that round); round 0 = the start."""
        cycle = self.find(cycle_id)
        out: list[tuple[int, Run]] = []
        for n in sorted(cycle.rounds):
            r = cycle.rounds[n]
            if not r.champion_frozen_run_id:
                continue
            if not out:
                out.append((0, self.runs.find(r.champion_frozen_run_id)))
            promoted = r.HasField("decision") and r.decision.promote
            run_id = r.candidate_frozen_run_id if promoted else r.champion_frozen_run_id
            out.append((n, self.runs.find(run_id)))
        return out

    def curve(self, cycle_id: str, field: str) -> decisions.CycleCurve:
        """What a report draws of a cycle run; NOT_FOUND naming `field` for an unknown one."""
        try:
            cycle = self.find(cycle_id)
        except RunRequestError as exc:
            raise exc.for_field(field) from None
        return decisions.CycleCurve(
            cycle_id, cycle.label, self.champion_runs(cycle_id), self._candidates(cycle)
        )

    def _candidates(self, cycle: CycleRun) -> dict[int, decisions.Candidate]:
        """Round -> its candidate's frozen run, adapter and promotion, for every round the gate decided."""
        return {
            n: decisions.Candidate(
                run=self.runs.find(r.decision.candidate_run_id),
                adapter_id=r.decision.adapter_id,
                promoted=r.decision.promote,
            )
            for n, r in sorted(cycle.rounds.items())
            if r.HasField("decision") and r.decision.candidate_run_id
        }

    # --- events --------------------------------------------------------------------------------

    async def _phase_started(self, cycle: CycleRun, n: int, phase: str, request=None) -> None:
        event = events_pb2.CyclePhaseStarted(cycle_id=cycle.cycle_id, cycle=n, phase=phase, request=request)
        await self.bus.publish(
            event, correlation_id=cycle.cycle_id, event_id=event_id(cycle.cycle_id, n, phase, "started")
        )
        if request is not None:
            self.cycles.setdefault(cycle.cycle_id, cycle)
        self._fold(event)

    async def _phase_completed(
        self, cycle: CycleRun, n: int, phase: str, seconds: float = 0.0, error: str = ""
    ) -> None:
        r = cycle.round(n)
        if phase in PHASES:
            # a phase retried after a failure took the time of its failed passes too
            seconds += cycle.spent.get((n, phase), 0.0)
            if seconds:
                r.phase_seconds[phase] = seconds
        event = events_pb2.CyclePhaseCompleted(
            cycle_id=cycle.cycle_id,
            cycle=n,
            phase=phase,
            run_ids=[x for x in (r.day_run_id, r.candidate_frozen_run_id, r.champion_frozen_run_id) if x],
            job_id=r.job_id,
            adapter_id=r.adapter_id,
            round=r,
            seconds=seconds,
            error=error,
        )
        # A retried cycle run can fail again: each failure after a retry has an id of its own.
        again = (cycle.retries,) if phase == "failed" and cycle.retries else ()
        await self.bus.publish(
            event,
            correlation_id=cycle.cycle_id,
            event_id=event_id(cycle.cycle_id, n, phase, "completed", *again),
        )
        self._fold(event)

    # --- the saga ------------------------------------------------------------------------------

    async def _run(self, cycle: CycleRun) -> None:
        request = cycle.request
        began = time.monotonic()
        try:
            for n in range(1, request.cycles + 1):
                for phase in PHASES:
                    if (n, phase) in cycle.completed:
                        continue
                    if cycle.current != (n, phase):
                        await self._phase_started(cycle, n, phase)
                    began = time.monotonic()
                    await getattr(self, f"_{phase}")(cycle, n)
                    await self._phase_completed(cycle, n, phase, time.monotonic() - began)
            await self._phase_completed(cycle, request.cycles, "done")
            log.info("cycle %s done", cycle.cycle_id)
        except asyncio.CancelledError:
            raise
        except (CycleError, RunRequestError) as exc:
            log.error("cycle %s failed: %s", cycle.cycle_id, exc)
            await self._phase_completed(
                cycle, cycle.current[0], "failed", time.monotonic() - began, error=str(exc)
            )
        except Exception as exc:
            log.exception("cycle %s failed", cycle.cycle_id)
            await self._phase_completed(
                cycle,
                cycle.current[0],
                "failed",
                time.monotonic() - began,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _champion(self, model: str) -> str:
        reply = await self._call(self.trainer.GetChampion, T.GetChampionRequest(model=model), "trainer")
        return reply.adapter.adapter_id if reply.HasField("adapter") else ""

    async def _day(self, cycle: CycleRun, n: int) -> None:
        request = cycle.request
        r = cycle.round(n)
        r.champion_adapter_id = await self._champion(request.model)
        r.day_run_id = await self._evaluation(
            cycle, n, "day", request.day_set, "", r.champion_adapter_id, seed=request.seed + n
        )

    async def _night(self, cycle: CycleRun, n: int) -> None:
        request = cycle.request
        r = cycle.round(n)
        corr = correlation(cycle.cycle_id, n, "night")
        job_id = await self._existing_job(corr)
        if not job_id:
            job = T.StartJobRequest(
                mix=T.MixSpec(
                    recipe=request.recipe,
                    parameters=dict(request.recipe_parameters),
                    base_adapter_id=r.champion_adapter_id,
                ),
                preset=request.preset,
                overrides=dict(request.overrides),
                model=request.model,
                correlation_id=corr,
                seed=request.seed + n,
            )
            job_id = (await self._call(self.trainer.StartJob, job, "trainer")).job_id
        r.job_id = job_id
        while True:
            # The job goes on in the trainer whatever happens to this call: wait it out however long the
            # trainer is unreachable (restarting, paused, busy) rather than fail the cycle.
            job = (
                await self._call(self.trainer.GetJob, T.GetJobRequest(job_id=job_id), "trainer", patient=True)
            ).job
            if job.state == T.JOB_COMPLETED:
                r.adapter_id = job.adapter_id
                return
            if job.state in (T.JOB_FAILED, T.JOB_CANCELLED):
                raise CycleError(
                    f"round {n}: training job {job_id} {T.JobState.Name(job.state)}: {job.error}"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _dawn(self, cycle: CycleRun, n: int) -> None:
        request = cycle.request
        r = cycle.round(n)
        family = request.eval_family
        seed = request.seed
        r.candidate_frozen_run_id = await self._evaluation(
            cycle, n, "candidate-frozen", "frozen", family, r.adapter_id, seed
        )
        r.candidate_heldout_run_id = await self._evaluation(
            cycle, n, "candidate-heldout", "heldout", family, r.adapter_id, seed
        )
        r.champion_frozen_run_id = await self._evaluation(
            cycle, n, "champion-frozen", "frozen", family, r.champion_adapter_id, seed
        )
        r.champion_heldout_run_id = await self._evaluation(
            cycle, n, "champion-heldout", "heldout", family, r.champion_adapter_id, seed
        )
        decision = await self._existing_decision(cycle, n)
        if decision is None:
            decision = decisions.decide(
                self.runs.find,
                E.DecideGateRequest(
                    candidate_run_id=r.candidate_frozen_run_id,
                    champion_run_id=r.champion_frozen_run_id,
                    candidate_heldout_run_id=r.candidate_heldout_run_id,
                    champion_heldout_run_id=r.champion_heldout_run_id,
                    adapter_id=r.adapter_id,
                    policy=dict(request.policy),
                    correlation_id=correlation(cycle.cycle_id, n, "gate"),
                ),
            )
            decision.decision_id = event_id(cycle.cycle_id, n, "gate")
            await self.bus.publish(
                events_pb2.GateDecided(decision=decision),
                correlation_id=cycle.cycle_id,
                event_id=decision.decision_id,
            )
        r.decision.CopyFrom(decision)
        log.info(
            "cycle %s round %d: %s %s (%s)",
            cycle.cycle_id,
            n,
            "promote" if decision.promote else "reject",
            r.adapter_id,
            decision.reason,
        )
        if decision.promote:
            await self._await_champion(request.model, r.adapter_id)

    async def _await_champion(self, model: str, adapter_id: str) -> None:
        """Wait until the registry made `adapter_id` champion and the agent serves it."""
        deadline = time.monotonic() + CHAMPION_WAIT_SECONDS
        while time.monotonic() < deadline:
            if await self._champion(model) == adapter_id:
                served = await self._call(
                    self.agent.ListAdapters, agent_pb2.ListServedAdaptersRequest(), "agent"
                )
                if served.champion_adapter_id == adapter_id:
                    return
            await asyncio.sleep(POLL_SECONDS)
        raise CycleError(f"{adapter_id} was promoted but is not served after {CHAMPION_WAIT_SECONDS:.0f}s")

    # --- find-or-create ------------------------------------------------------------------------

    async def _evaluation(
        self, cycle: CycleRun, n: int, what: str, koan_set: str, family: str, adapter_id: str, seed: int
    ) -> str:
        """The finished run of this step: found by its correlation id, else started; waits for the end."""
        request = cycle.request
        corr = correlation(cycle.cycle_id, n, what)
        run = next((r for r in self.runs.runs.values() if r.request.correlation_id == corr), None)
        if run is None:
            wanted = E.StartEvaluationRequest(
                koan_set=koan_set,
                family=family,
                adapter_id=adapter_id or "none",
                repeats=1 if what == "day" else request.repeats,
                seed=seed,
                max_attempts=request.day_max_attempts if what == "day" else request.max_attempts,
                model=request.model,
                correlation_id=corr,
            )
            # A candidate is new by definition; the champion's and the day's work may be measured already,
            # with --fresh only by this cycle run (the champion's runs of the round before).
            if not what.startswith("candidate"):
                within = f"{cycle.cycle_id}/" if request.fresh else ""
                run = await self.runs.finished_match(wanted, within)
                if run is not None:
                    log.info("cycle %s round %d: %s reuses run %s", cycle.cycle_id, n, what, run.run_id)
                    return run.run_id
            run = self.runs.find(await self.runs.start_run(wanted))
        while not run.finished:
            changed = run.changed()
            if run.finished:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=5.0)
        return run.run_id

    async def _existing_job(self, corr: str) -> str:
        for delivery in await self.bus.read_all("TRAINING", "training.job.requested"):
            if delivery.envelope.correlation_id == corr:
                return delivery.event.job_id
        return ""

    async def _existing_decision(self, cycle: CycleRun, n: int) -> E.GateDecision | None:
        wanted = event_id(cycle.cycle_id, n, "gate")
        for delivery in await self.bus.read_all("EVALUATION", "evaluation.gate.decided"):
            if delivery.event.decision.decision_id == wanted:
                return delivery.event.decision
        return None

    async def _call(self, method: Callable, request, service: str, *, patient: bool = False):
        """One RPC, retried while the service is unreachable (it may be restarting); `patient`: forever."""
        attempts = None if patient else CALL_ATTEMPTS
        attempt = 0
        while True:
            try:
                return await method(request, timeout=CALL_SECONDS, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise CycleError(f"{service}: {exc.code().name}: {exc.details()}") from None
                attempt += 1
                if attempts is not None and attempt >= attempts:
                    raise CycleError(f"the {service} is not reachable: {exc.details()}") from None
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("the %s is not reachable (attempt %d): %s", service, attempt, exc.details())
            await asyncio.sleep(min(2.0 * attempt, 10.0))
