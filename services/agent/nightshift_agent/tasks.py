"""The agent's tasks in memory: their attempts so far, their episode, and who is watching them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nightshift.corpus import Koan
from nightshift.v1 import agent_pb2, sandbox_pb2

from nightshift_agent.loop import EpisodeResult, first_error_code

FINAL_STATES = (agent_pb2.TASK_PASSED, agent_pb2.TASK_FAILED, agent_pb2.TASK_CANCELLED)


def episode_of(task: agent_pb2.Task) -> agent_pb2.Episode:
    """The episode summary of a task's attempts (pure)."""
    failed = [a for a in task.attempts if a.verdict.status != sandbox_pb2.OK]
    result = EpisodeResult(
        passed=task.state == agent_pb2.TASK_PASSED,
        attempts=list(task.attempts),
        error_codes=[first_error_code(a.verdict) for a in failed],
        final_code=task.attempts[-1].code if task.attempts else "",
    )
    return agent_pb2.Episode(
        task_id=task.task_id,
        koan_id=task.koan_id,
        passed=result.passed,
        attempts_used=result.steps,
        error_codes=result.error_codes,
        first_error_code=result.first_error_code,
        last_error_code=result.last_error_code,
        repeated_error=result.repeated_error,
        final_code=result.final_code,
        adapter_id=task.adapter_id,
        model=task.model,
        run_id=task.run_id,
        attempts=list(task.attempts),
    )


@dataclass
class TaskRecord:
    """One task: what was asked, what it runs on, and its progress, observable by watchers."""

    task: agent_pb2.Task
    request: agent_pb2.SubmitTaskRequest
    source: str
    tests: str
    mode: int
    edition: str
    koan: Koan | None = None
    runner: asyncio.Task | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def done(self) -> bool:
        return self.task.state in FINAL_STATES

    async def add_attempt(self, attempt: agent_pb2.Attempt) -> None:
        async with self.changed:
            self.task.attempts.append(attempt)
            self.changed.notify_all()

    async def finish(self, state: int, error: str = "") -> None:
        async with self.changed:
            self.task.state = state
            self.task.error = error
            self.changed.notify_all()

    async def watch(self):
        """Yield each attempt (those so far first), then the final task."""
        sent = 0
        while True:
            async with self.changed:
                await self.changed.wait_for(lambda seen=sent: len(self.task.attempts) > seen or self.done)
                fresh = list(self.task.attempts[sent:])
                done = self.done
            for attempt in fresh:
                yield agent_pb2.WatchTaskResponse(attempt=attempt)
            sent += len(fresh)
            if done:
                yield agent_pb2.WatchTaskResponse(task=self.task)
                return
