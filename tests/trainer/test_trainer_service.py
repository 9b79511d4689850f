"""The Trainer service through gRPC with a real nats-server: mixes from episode events, validation,
the registry acting on GateDecided, promote/rollback, cancel, and rebuild after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading

import grpc
import pytest
from nightshift import archive
from nightshift.bus import EventBus
from nightshift.corpus import Corpus
from nightshift.natsserver import NatsServer
from nightshift.v1 import agent_pb2, evaluator_pb2, events_pb2, sandbox_pb2, trainer_pb2, trainer_pb2_grpc
from nightshift_trainer import training
from nightshift_trainer.config import TrainerConfig
from nightshift_trainer.server import start
from nightshift_trainer.training import TrainingCancelled

T = trainer_pb2
E = events_pb2
S = sandbox_pb2
MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
CORPUS = Corpus.load()


def train_koans(n: int):
    return [k for k in CORPUS.koans("train") if k.mode == "test"][:n]


def episode_events(task_id: str, koan, *, first_passes: bool, adapter_id: str = ""):
    """The events the agent publishes for one episode on `koan` (fail then pass, or pass at once)."""
    prompt = f"Fix the Rust program below.\n\n```rust\n{koan.broken}\n```"
    attempts = []
    if not first_passes:
        attempts.append(
            agent_pb2.Attempt(
                number=1,
                prompt=prompt,
                completion=f"```rust\n{koan.broken}\n```",
                code=koan.broken,
                verdict=S.Verdict(
                    status=S.COMPILE_ERROR, diagnostics=[S.Diagnostic(code="E0382", level="error")]
                ),
            )
        )
    attempts.append(
        agent_pb2.Attempt(
            number=len(attempts) + 1,
            prompt=prompt,
            completion=f"```rust\n{koan.fix}\n```",
            code=koan.fix,
            verdict=S.Verdict(status=S.OK),
        )
    )
    out: list = [
        E.TaskSubmitted(
            task_id=task_id,
            request=agent_pb2.SubmitTaskRequest(koan_id=koan.id, adapter_id=adapter_id),
            koan_set=koan.split,
            family=koan.family,
        )
    ]
    for a in attempts:
        out.append(
            E.AttemptRecorded(task_id=task_id, koan_id=koan.id, attempt=a, adapter_id=adapter_id, model=MODEL)
        )
    out.append(
        E.EpisodeCompleted(
            task_id=task_id,
            koan_id=koan.id,
            passed=True,
            steps=len(attempts),
            adapter_id=adapter_id,
            model=MODEL,
            state=agent_pb2.TASK_PASSED,
            final_code=koan.fix,
            koan_set=koan.split,
            family=koan.family,
        )
    )
    return out


@pytest.fixture
async def bus(nats_server):
    bus = await EventBus.connect(nats_server.url, "test")
    await bus.ensure_streams()
    yield bus
    await bus.close()


@pytest.fixture
def config(nats_server, tmp_path):
    return TrainerConfig(
        addr="127.0.0.1:0",
        nats_url=nats_server.url,
        store_dir=tmp_path / "trainer",
        adapters_dir=tmp_path / "adapters",
        model=MODEL,
        threads=1,
    )


@pytest.fixture
async def trainer(config):
    running = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield trainer_pb2_grpc.TrainerStub(channel), running
    await channel.close()
    await running.stop()


async def eventually(check, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def publish_episodes(bus, *, failed: int, succeeded: int):
    koans = train_koans(failed + succeeded)
    for n, koan in enumerate(koans):
        for event in episode_events(f"task-{n}", koan, first_passes=n >= failed):
            await bus.publish(event)
    return koans


async def test_build_mix_follows_the_episode_events(bus, trainer):
    stub, _ = trainer
    await publish_episodes(bus, failed=2, succeeded=3)

    replay_spec = T.MixSpec(recipe="replay", parameters={"replay_ratio": "1"})

    async def all_consumed():
        reply = await stub.BuildMix(T.BuildMixRequest(mix=replay_spec))
        return reply if len(reply.examples) == 4 else None  # 2 fixes + 2 of the 3 successes at ratio 1

    replay = await eventually(all_consumed)
    assert sorted(e.origin for e in replay.examples).count("success") == 2
    naive = await stub.BuildMix(T.BuildMixRequest(mix=T.MixSpec(recipe="naive")))
    assert len(naive.examples) == 2
    assert {e.origin for e in naive.examples} <= {"episode", "reference"}
    assert all(e.completion.startswith("```rust") for e in naive.examples)
    dpo = await stub.BuildMix(T.BuildMixRequest(mix=T.MixSpec(recipe="dpo")))
    assert dpo.examples and all(e.chosen and e.rejected for e in dpo.examples)
    again = await stub.BuildMix(T.BuildMixRequest(mix=replay_spec))
    assert again.data_hash == replay.data_hash


async def test_evaluation_koans_never_reach_a_mix(bus, trainer):
    stub, _ = trainer
    frozen = CORPUS.koans("frozen")[0]
    for event in episode_events("frozen-task", frozen, first_passes=False):
        await bus.publish(event)
    await publish_episodes(bus, failed=1, succeeded=0)

    async def settled():
        reply = await stub.BuildMix(T.BuildMixRequest(mix=T.MixSpec(recipe="naive")))
        return reply if reply.examples and reply.excluded_count else None

    reply = await eventually(settled)
    assert frozen.id not in {e.koan_id for e in reply.examples}
    assert sum(reply.excluded_by_reason.values()) == reply.excluded_count >= 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.BuildMix(
            T.BuildMixRequest(mix=T.MixSpec(recipe="naive", parameters={"koan_set": "frozen"}))
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"mix": T.MixSpec(recipe="magic")}, grpc.StatusCode.INVALID_ARGUMENT, "mix.recipe"),
        ({"mix": T.MixSpec(recipe="naive"), "preset": "turbo"}, grpc.StatusCode.INVALID_ARGUMENT, "preset"),
        (
            {"mix": T.MixSpec(recipe="naive"), "overrides": {"max_steps": "many"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "overrides",
        ),
        ({"mix": T.MixSpec(recipe="naive"), "preset": "dpo"}, grpc.StatusCode.INVALID_ARGUMENT, "preset"),
        ({"mix": T.MixSpec(recipe="naive"), "model": "gpt-9"}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
        ({"mix": T.MixSpec(recipe="naive")}, grpc.StatusCode.FAILED_PRECONDITION, "mix.recipe"),
    ],
)
async def test_bad_job_requests_name_the_field(trainer, request_fields, code, field):
    stub, _ = trainer
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StartJob(T.StartJobRequest(**request_fields))
    assert info.value.code() == code
    assert info.value.details().startswith(f"{field}:"), info.value.details()


async def test_unknown_jobs_and_adapters_are_not_found(trainer):
    stub, _ = trainer
    for call in (
        stub.GetJob(T.GetJobRequest(job_id="ghost")),
        stub.CancelJob(T.CancelJobRequest(job_id="ghost")),
        stub.PromoteAdapter(T.PromoteAdapterRequest(adapter_id="ghost")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RollbackAdapter(T.RollbackAdapterRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_registry_acts_on_gate_decisions_and_survives_a_restart(bus, config):
    for adapter_id in ("good", "bad"):
        await bus.publish(E.AdapterTrained(adapter=T.Adapter(adapter_id=adapter_id, model=MODEL)))
    running = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = trainer_pb2_grpc.TrainerStub(channel)
    try:
        await bus.publish(
            E.GateDecided(
                decision=evaluator_pb2.GateDecision(decision_id="d1", adapter_id="good", promote=True)
            )
        )
        await bus.publish(
            E.GateDecided(
                decision=evaluator_pb2.GateDecision(
                    decision_id="d2", adapter_id="bad", promote=False, reasons=["1 frozen regression"]
                )
            )
        )

        async def decided():
            adapters = {a.adapter_id: a for a in (await stub.ListAdapters(T.ListAdaptersRequest())).adapters}
            return adapters if adapters["bad"].state == T.ADAPTER_REJECTED else None

        adapters = await eventually(decided)
        assert adapters["good"].state == T.ADAPTER_CHAMPION
        assert adapters["bad"].reason == "1 frozen regression"
        champion = await stub.GetChampion(T.GetChampionRequest())
        assert champion.adapter.adapter_id == "good"
    finally:
        await channel.close()
        await running.stop()

    promoted = [d.event for d in await bus.read_all("ADAPTERS") if isinstance(d.event, E.AdapterPromoted)]
    assert [(p.adapter_id, p.gate_decision_id) for p in promoted] == [("good", "d1")]

    # A new trainer rebuilds the registry from the events and does not act on the decisions twice.
    running = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = trainer_pb2_grpc.TrainerStub(channel)
    try:
        adapters = {
            a.adapter_id: a.state for a in (await stub.ListAdapters(T.ListAdaptersRequest())).adapters
        }
        assert adapters == {"good": T.ADAPTER_CHAMPION, "bad": T.ADAPTER_REJECTED}
        rolled = await stub.RollbackAdapter(T.RollbackAdapterRequest(reason="manual"))
        assert not rolled.HasField("champion")
    finally:
        await channel.close()
        await running.stop()
    kinds = [type(d.event).__name__ for d in await bus.read_all("ADAPTERS")]
    assert kinds == [
        "AdapterTrained",
        "AdapterTrained",
        "AdapterPromoted",
        "AdapterRejected",
        "AdapterRolledBack",
    ]


# --- the job flow, with the torch pipeline replaced (the real one runs in tests/e2e) -------------------


def fake_pipeline(*, passed: bool = True, hold: asyncio.Event | None = None, calls: list | None = None):
    """A stand-in for train -> export -> verify: reports progress, honours should_stop (leaving a
    checkpoint in train_adapter's layout), writes the file."""
    import threading
    import time

    from nightshift_trainer import pipeline, training
    from nightshift_trainer.training import TrainingCancelled, TrainResult

    def run(**kwargs):
        if calls is not None:
            found = training.latest_checkpoint(kwargs["work_dir"])
            calls.append({**kwargs, "checkpoint": found.name if found else None})
        for step in range(1, 4):
            kwargs["on_progress"](
                pipeline.Progress(
                    step=step, total_steps=3, loss=1.0 / step, tokens_per_second=50.0, eta_seconds=3 - step
                )
            )
            if hold is not None:
                deadline = time.monotonic() + 30
                while not kwargs["should_stop"]() and time.monotonic() < deadline:
                    threading.Event().wait(0.05)
            if kwargs["should_stop"]():
                checkpoint = kwargs["work_dir"] / training.CHECKPOINTS / f"step-{step:06d}"
                checkpoint.mkdir(parents=True)
                for name in (training._LORA, training._OPTIMIZER, training._STATE):
                    (checkpoint / name).write_text(f"{name} at step {step}")
                raise TrainingCancelled(step, checkpoint)
        path = kwargs["adapter_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF-test-adapter")
        train = TrainResult(
            peft_dir=kwargs["work_dir"],
            steps=3,
            final_loss=0.33,
            train_seconds=0.5,
            train_tokens=300,
            device="cpu",
            resumed_from_step=0,
        )
        verification = T.AdapterVerification(
            passed=passed,
            tolerance=1.2,
            max_abs_diff=0.4 if passed else 5.0,
            adapter_effect=3.0 if passed else 0.0,
            reference_effect=3.0,
            detail="" if passed else "llama.cpp ignored the adapter",
        )
        return pipeline.Outcome(train, path, verification)

    return run


@pytest.fixture
def patched(monkeypatch):
    from nightshift_trainer import pipeline

    monkeypatch.setattr(pipeline, "device_name", lambda: "cpu")

    def use(run):
        monkeypatch.setattr(pipeline, "train_export_verify", run)

    return use


async def finished(stub, job_id: str) -> T.Job:
    updates = [u.job async for u in stub.WatchJob(T.WatchJobRequest(job_id=job_id))]
    return updates[-1], updates


async def test_a_job_streams_progress_and_registers_a_verified_candidate(bus, trainer, patched, config):
    stub, _ = trainer
    calls: list = []
    patched(fake_pipeline(calls=calls))
    await publish_episodes(bus, failed=2, succeeded=2)
    await eventually(lambda: _has_examples(stub))
    job_id = (
        await stub.StartJob(T.StartJobRequest(mix=T.MixSpec(recipe="replay"), overrides={"max_steps": "3"}))
    ).job_id
    job, updates = await asyncio.wait_for(finished(stub, job_id), 30)
    assert job.state == T.JOB_COMPLETED and job.adapter_id
    assert any(u.progress.step for u in updates)
    assert calls[0]["preset"].max_steps == 3 and len(calls[0]["examples"]) == job.example_count == 4
    (adapter,) = (await stub.ListAdapters(T.ListAdaptersRequest())).adapters
    assert adapter.adapter_id == job.adapter_id and adapter.state == T.ADAPTER_CANDIDATE
    assert adapter.verification.passed and adapter.recipe == "replay" and adapter.data_hash == job.data_hash
    assert adapter.sha256 and (config.adapters_dir / adapter.adapter_id / "adapter.gguf").exists()
    kinds = [type(d.event).__name__ for d in await bus.read_all("TRAINING")]
    assert kinds[0] == "TrainingJobRequested" and kinds[1] == "TrainingJobStarted"
    assert "TrainingJobProgressed" in kinds and kinds[-1] == "TrainingJobCompleted"
    requested = (await bus.read_all("TRAINING"))[0].event
    assert list(requested.example_ids) == [e.example_id for e in calls[0]["examples"]]


async def _has_examples(stub):
    reply = await stub.BuildMix(T.BuildMixRequest(mix=T.MixSpec(recipe="replay")))
    return len(reply.examples) == 4


async def test_an_adapter_that_fails_verification_is_never_registered(bus, trainer, patched, config):
    stub, _ = trainer
    patched(fake_pipeline(passed=False))
    await publish_episodes(bus, failed=1, succeeded=0)
    job_id = (await stub.StartJob(T.StartJobRequest(mix=T.MixSpec(recipe="naive")))).job_id
    job, _ = await asyncio.wait_for(finished(stub, job_id), 30)
    assert job.state == T.JOB_FAILED and "verification" in job.error and "ignored" in job.error
    assert not (await stub.ListAdapters(T.ListAdaptersRequest())).adapters
    assert not any(config.adapters_dir.glob("*/adapter.gguf"))


async def a_running_job(bus, stub, patched) -> str:
    """A job the fake pipeline holds at its first step; its id."""
    patched(fake_pipeline(hold=asyncio.Event()))
    await publish_episodes(bus, failed=1, succeeded=0)
    job_id = (await stub.StartJob(T.StartJobRequest(mix=T.MixSpec(recipe="naive")))).job_id

    async def running():
        job = (await stub.GetJob(T.GetJobRequest(job_id=job_id))).job
        return job.state == T.JOB_RUNNING and job.progress.step >= 1

    await eventually(running)
    return job_id


async def test_a_running_job_can_be_cancelled(bus, trainer, patched):
    stub, _ = trainer
    job_id = await a_running_job(bus, stub, patched)
    await stub.CancelJob(T.CancelJobRequest(job_id=job_id))
    job, _ = await asyncio.wait_for(finished(stub, job_id), 30)
    assert job.state == T.JOB_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CancelJob(T.CancelJobRequest(job_id=job_id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def job_cut_short_by_a_shutdown(config, patched) -> str:
    """Start a trainer, a job on it, and stop the trainer while the job runs; the job's id.

    A stop cancels the running job's training, which leaves a checkpoint; its TrainingJobCancelled is
    never published because the worker is shut down first, so the job stays unfinished on the stream."""
    patched(fake_pipeline(hold=asyncio.Event()))
    running = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = trainer_pb2_grpc.TrainerStub(channel)
    try:
        job_id = (await stub.StartJob(T.StartJobRequest(mix=T.MixSpec(recipe="naive")))).job_id

        async def started():
            return (await stub.GetJob(T.GetJobRequest(job_id=job_id))).job.state == T.JOB_RUNNING

        await eventually(started)
    finally:
        await channel.close()
        running.tasks[-1].cancel()
        await running.stop()

    async def checkpointed():
        return training.latest_checkpoint(config.jobs_dir / job_id / "work")

    await eventually(checkpointed)
    return job_id


async def started_again(config, patched, job_id: str) -> tuple[T.Job, list]:
    """Start a trainer on `config` and wait for `job_id` to end; (the ended job, the pipeline's calls)."""
    calls: list = []
    patched(fake_pipeline(calls=calls))
    running = await start(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = trainer_pb2_grpc.TrainerStub(channel)
    try:
        job, _ = await asyncio.wait_for(finished(stub, job_id), 30)
    finally:
        await channel.close()
        await running.stop()
    return job, calls


async def test_a_job_cut_short_by_a_restart_runs_again_when_the_trainer_starts(bus, config, patched):
    await publish_episodes(bus, failed=1, succeeded=0)
    job_id = await job_cut_short_by_a_shutdown(config, patched)

    job, calls = await started_again(config, patched, job_id)
    assert job.state == T.JOB_COMPLETED and len(calls) == 1
    started_events = [
        d.event for d in await bus.read_all("TRAINING") if isinstance(d.event, E.TrainingJobStarted)
    ]
    assert [e.resumed for e in started_events][-1] is True


async def test_a_job_restored_from_an_archive_on_a_new_store_resumes_from_its_checkpoint(
    bus, config, patched, tmp_path
):
    """`nightshift archive save` while a job runs, `up --restore` on another machine: the trainer there
    queues the job again, finds its examples and its checkpoint, and finishes it."""
    await publish_episodes(bus, failed=2, succeeded=0)
    job_id = await job_cut_short_by_a_shutdown(config, patched)
    path = tmp_path / "events.jsonl.gz"
    _, carried = await archive.save(bus, path, roots=archive.FileRoots(config.adapters_dir, config.store_dir))
    assert carried.jobs == {job_id: 1}

    server = NatsServer(tmp_path / "nats-b", log_file=tmp_path / "nats-b.log").start()
    elsewhere = dataclasses.replace(
        config,
        nats_url=server.url,
        store_dir=tmp_path / "b" / "trainer",
        adapters_dir=tmp_path / "b" / "adapters",
    )
    target = await EventBus.connect(server.url, "restore")
    try:
        _, records, files = archive.read(path)
        restored = archive.restore_files(
            files, archive.FileRoots(elsewhere.adapters_dir, elsewhere.store_dir)
        )
        assert restored.jobs == {job_id: 1}
        await archive.load(target, records)
        job, calls = await started_again(elsewhere, patched, job_id)
    finally:
        await target.close()
        server.stop()
    assert job.state == T.JOB_COMPLETED
    assert [(c["checkpoint"], len(c["examples"])) for c in calls] == [("step-000001", 2)]


def cli(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nightshift_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NIGHTSHIFT_TRAINER_ADDR": f"127.0.0.1:{port}", "COLUMNS": "200"},
    )


async def test_the_cli_shows_watches_and_cancels_a_job(bus, trainer, patched):
    stub, running = trainer
    job_id = await a_running_job(bus, stub, patched)
    shown = await asyncio.to_thread(cli, running.port, "jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "JOB_RUNNING"
    cancelled = await asyncio.to_thread(cli, running.port, "jobs", "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "JOB_CANCELLED"
    watched = await asyncio.to_thread(cli, running.port, "jobs", "watch", job_id)
    assert watched.returncode == 1 and "JOB_CANCELLED" in watched.stderr
    again = await asyncio.to_thread(cli, running.port, "jobs", "cancel", job_id)
    assert again.returncode == 2 and "FAILED_PRECONDITION" in again.stderr
    unknown = await asyncio.to_thread(cli, running.port, "jobs", "show", "no-such-job")
    assert unknown.returncode == 2 and "NOT_FOUND" in unknown.stderr


async def test_a_job_that_ended_leaves_nothing_of_its_training_alive(bus, trainer, patched):
    """The weights a cancelled run held are freed when it ends, before the next job loads its own. A
    transformers + PEFT model is full of reference cycles: after train_adapter returns or raises, the
    0.5B's float32 copy (about 5 GiB with its optimizer) stayed alive until a full collection, which
    CPython may not run for hours, so the second job of a cycle run held two."""
    import weakref

    stub, _ = trainer
    held: list[weakref.ref] = []

    class Weights:
        pass

    def run(**kwargs):
        weights = Weights()  # stands for the model a real run holds
        weights.cycle = weights  # only a collection frees it
        held.append(weakref.ref(weights))
        while not kwargs["should_stop"]():
            threading.Event().wait(0.05)
        raise TrainingCancelled(1, None)

    patched(run)
    await publish_episodes(bus, failed=1, succeeded=0)
    job_id = (await stub.StartJob(T.StartJobRequest(mix=T.MixSpec(recipe="naive")))).job_id
    await eventually(lambda: asyncio.sleep(0, bool(held)))
    await stub.CancelJob(T.CancelJobRequest(job_id=job_id))
    job, _ = await asyncio.wait_for(finished(stub, job_id), 30)
    assert job.state == T.JOB_CANCELLED
    await eventually(lambda: asyncio.sleep(0, held[0]() is None))
