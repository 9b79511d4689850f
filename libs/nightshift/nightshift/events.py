"""Event envelopes: which subject each event goes to, and packing/unpacking payloads."""

from __future__ import annotations

import uuid

from google.protobuf import message as pb_message
from google.protobuf import symbol_database
from google.protobuf.timestamp_pb2 import Timestamp

from nightshift.v1 import events_pb2

SCHEMA_VERSION = 1

# Streams by aggregate (DESIGN.md, "Events").
STREAMS: dict[str, list[str]] = {
    "EPISODES": ["episodes.>"],
    "SANDBOX": ["sandbox.>"],
    "TRAINING": ["training.>"],
    "EVALUATION": ["evaluation.>"],
    "ADAPTERS": ["adapters.>"],
}

# Subject of every event type in the design's event table.
SUBJECTS: dict[str, str] = {
    "CheckCompleted": "sandbox.check.completed",
    "TaskSubmitted": "episodes.task.submitted",
    "AttemptRecorded": "episodes.attempt.recorded",
    "EpisodeCompleted": "episodes.episode.completed",
    "TrainingJobRequested": "training.job.requested",
    "TrainingJobStarted": "training.job.started",
    "TrainingJobProgressed": "training.job.progressed",
    "TrainingJobCompleted": "training.job.completed",
    "TrainingJobFailed": "training.job.failed",
    "TrainingJobCancelled": "training.job.cancelled",
    "AdapterTrained": "adapters.trained",
    "AdapterPromoted": "adapters.promoted",
    "AdapterRejected": "adapters.rejected",
    "AdapterRolledBack": "adapters.rolled_back",
    "EvaluationStarted": "evaluation.run.started",
    "KoanEvaluated": "evaluation.run.koan_evaluated",
    "EvaluationCompleted": "evaluation.run.completed",
    "GateDecided": "evaluation.gate.decided",
    "CyclePhaseStarted": "evaluation.cycle.phase_started",
    "CyclePhaseCompleted": "evaluation.cycle.phase_completed",
}


class UnknownEventError(ValueError):
    """An envelope names a type this code does not know."""


def subject_for(event: pb_message.Message) -> str:
    name = event.DESCRIPTOR.name
    try:
        return SUBJECTS[name]
    except KeyError:
        raise UnknownEventError(f"{event.DESCRIPTOR.full_name} is not an event") from None


def stream_for(subject: str) -> str:
    prefix = subject.split(".", 1)[0]
    for stream, patterns in STREAMS.items():
        if any(p.split(".", 1)[0] == prefix for p in patterns):
            return stream
    raise UnknownEventError(f"no stream holds subject {subject!r}")


def wrap(
    event: pb_message.Message,
    *,
    correlation_id: str = "",
    causation_id: str = "",
    event_id: str | None = None,
) -> events_pb2.EventEnvelope:
    """Put an event in its envelope with a fresh id and the current time."""
    occurred = Timestamp()
    occurred.GetCurrentTime()
    return events_pb2.EventEnvelope(
        event_id=event_id or str(uuid.uuid4()),
        type=event.DESCRIPTOR.full_name,
        occurred_at=occurred,
        schema_version=SCHEMA_VERSION,
        correlation_id=correlation_id,
        causation_id=causation_id,
        payload=event.SerializeToString(),
    )


def unwrap(envelope: events_pb2.EventEnvelope) -> pb_message.Message:
    """Decode the payload of an envelope into its event message."""
    try:
        cls = symbol_database.Default().GetSymbol(envelope.type)
    except KeyError:
        raise UnknownEventError(f"unknown event type {envelope.type!r}") from None
    event = cls()
    event.ParseFromString(envelope.payload)
    return event
