import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nightshift.v1 import sandbox_pb2 as _sandbox_pb2
from nightshift.v1 import agent_pb2 as _agent_pb2
from nightshift.v1 import trainer_pb2 as _trainer_pb2
from nightshift.v1 import evaluator_pb2 as _evaluator_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventEnvelope(_message.Message):
    __slots__ = ("event_id", "type", "occurred_at", "schema_version", "correlation_id", "causation_id", "payload")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    occurred_at: _timestamp_pb2.Timestamp
    schema_version: int
    correlation_id: str
    causation_id: str
    payload: bytes
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema_version: _Optional[int] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class CheckCompleted(_message.Message):
    __slots__ = ("check_id", "mode", "edition", "backend", "source_sha256", "source_bytes", "has_tests", "verdict", "task_id")
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EDITION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HAS_TESTS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    check_id: str
    mode: _sandbox_pb2.CheckMode
    edition: str
    backend: str
    source_sha256: str
    source_bytes: int
    has_tests: bool
    verdict: _sandbox_pb2.Verdict
    task_id: str
    def __init__(self, check_id: _Optional[str] = ..., mode: _Optional[_Union[_sandbox_pb2.CheckMode, str]] = ..., edition: _Optional[str] = ..., backend: _Optional[str] = ..., source_sha256: _Optional[str] = ..., source_bytes: _Optional[int] = ..., has_tests: _Optional[bool] = ..., verdict: _Optional[_Union[_sandbox_pb2.Verdict, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class TaskSubmitted(_message.Message):
    __slots__ = ("task_id", "request", "koan_set", "family")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    KOAN_SET_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    request: _agent_pb2.SubmitTaskRequest
    koan_set: str
    family: str
    def __init__(self, task_id: _Optional[str] = ..., request: _Optional[_Union[_agent_pb2.SubmitTaskRequest, _Mapping]] = ..., koan_set: _Optional[str] = ..., family: _Optional[str] = ...) -> None: ...

class AttemptRecorded(_message.Message):
    __slots__ = ("task_id", "koan_id", "attempt", "adapter_id", "model", "run_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    koan_id: str
    attempt: _agent_pb2.Attempt
    adapter_id: str
    model: str
    run_id: str
    def __init__(self, task_id: _Optional[str] = ..., koan_id: _Optional[str] = ..., attempt: _Optional[_Union[_agent_pb2.Attempt, _Mapping]] = ..., adapter_id: _Optional[str] = ..., model: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class EpisodeCompleted(_message.Message):
    __slots__ = ("task_id", "koan_id", "passed", "steps", "error_codes", "adapter_id", "model", "run_id", "state", "final_code", "koan_set", "family", "first_error_code", "last_error_code", "repeated_error", "correlation_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FINAL_CODE_FIELD_NUMBER: _ClassVar[int]
    KOAN_SET_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ERROR_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    koan_id: str
    passed: bool
    steps: int
    error_codes: _containers.RepeatedScalarFieldContainer[str]
    adapter_id: str
    model: str
    run_id: str
    state: _agent_pb2.TaskState
    final_code: str
    koan_set: str
    family: str
    first_error_code: str
    last_error_code: str
    repeated_error: bool
    correlation_id: str
    def __init__(self, task_id: _Optional[str] = ..., koan_id: _Optional[str] = ..., passed: _Optional[bool] = ..., steps: _Optional[int] = ..., error_codes: _Optional[_Iterable[str]] = ..., adapter_id: _Optional[str] = ..., model: _Optional[str] = ..., run_id: _Optional[str] = ..., state: _Optional[_Union[_agent_pb2.TaskState, str]] = ..., final_code: _Optional[str] = ..., koan_set: _Optional[str] = ..., family: _Optional[str] = ..., first_error_code: _Optional[str] = ..., last_error_code: _Optional[str] = ..., repeated_error: _Optional[bool] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class TrainingJobRequested(_message.Message):
    __slots__ = ("job_id", "mix", "preset", "preset_fields", "example_ids", "data_hash", "excluded_count", "excluded_by_reason", "model", "seed")
    class PresetFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ExcludedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELDS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    DATA_HASH_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    mix: _trainer_pb2.MixSpec
    preset: str
    preset_fields: _containers.ScalarMap[str, str]
    example_ids: _containers.RepeatedScalarFieldContainer[str]
    data_hash: str
    excluded_count: int
    excluded_by_reason: _containers.ScalarMap[str, int]
    model: str
    seed: int
    def __init__(self, job_id: _Optional[str] = ..., mix: _Optional[_Union[_trainer_pb2.MixSpec, _Mapping]] = ..., preset: _Optional[str] = ..., preset_fields: _Optional[_Mapping[str, str]] = ..., example_ids: _Optional[_Iterable[str]] = ..., data_hash: _Optional[str] = ..., excluded_count: _Optional[int] = ..., excluded_by_reason: _Optional[_Mapping[str, int]] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class TrainingJobStarted(_message.Message):
    __slots__ = ("job_id", "device", "resumed", "from_step")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    device: str
    resumed: bool
    from_step: int
    def __init__(self, job_id: _Optional[str] = ..., device: _Optional[str] = ..., resumed: _Optional[bool] = ..., from_step: _Optional[int] = ...) -> None: ...

class TrainingJobProgressed(_message.Message):
    __slots__ = ("job_id", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    progress: _trainer_pb2.JobProgress
    def __init__(self, job_id: _Optional[str] = ..., progress: _Optional[_Union[_trainer_pb2.JobProgress, _Mapping]] = ...) -> None: ...

class TrainingJobCompleted(_message.Message):
    __slots__ = ("job_id", "adapter_id", "train_seconds", "train_tokens", "final_loss")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    adapter_id: str
    train_seconds: float
    train_tokens: int
    final_loss: float
    def __init__(self, job_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., train_seconds: _Optional[float] = ..., train_tokens: _Optional[int] = ..., final_loss: _Optional[float] = ...) -> None: ...

class TrainingJobFailed(_message.Message):
    __slots__ = ("job_id", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    error: str
    def __init__(self, job_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class TrainingJobCancelled(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AdapterTrained(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: _trainer_pb2.Adapter
    def __init__(self, adapter: _Optional[_Union[_trainer_pb2.Adapter, _Mapping]] = ...) -> None: ...

class AdapterPromoted(_message.Message):
    __slots__ = ("adapter_id", "previous_champion_id", "reason", "gate_decision_id", "model")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CHAMPION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GATE_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    previous_champion_id: str
    reason: str
    gate_decision_id: str
    model: str
    def __init__(self, adapter_id: _Optional[str] = ..., previous_champion_id: _Optional[str] = ..., reason: _Optional[str] = ..., gate_decision_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class AdapterRejected(_message.Message):
    __slots__ = ("adapter_id", "reason", "gate_decision_id")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GATE_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    reason: str
    gate_decision_id: str
    def __init__(self, adapter_id: _Optional[str] = ..., reason: _Optional[str] = ..., gate_decision_id: _Optional[str] = ...) -> None: ...

class AdapterRolledBack(_message.Message):
    __slots__ = ("from_adapter_id", "to_adapter_id", "reason", "model")
    FROM_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    from_adapter_id: str
    to_adapter_id: str
    reason: str
    model: str
    def __init__(self, from_adapter_id: _Optional[str] = ..., to_adapter_id: _Optional[str] = ..., reason: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class EvaluationStarted(_message.Message):
    __slots__ = ("run_id", "request", "koan_ids", "requested_adapter")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    KOAN_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request: _evaluator_pb2.StartEvaluationRequest
    koan_ids: _containers.RepeatedScalarFieldContainer[str]
    requested_adapter: str
    def __init__(self, run_id: _Optional[str] = ..., request: _Optional[_Union[_evaluator_pb2.StartEvaluationRequest, _Mapping]] = ..., koan_ids: _Optional[_Iterable[str]] = ..., requested_adapter: _Optional[str] = ...) -> None: ...

class KoanEvaluated(_message.Message):
    __slots__ = ("run_id", "koan_id", "family", "repeat", "passed", "attempts", "passed_first_attempt", "error_codes", "task_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIRST_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODES_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    koan_id: str
    family: str
    repeat: int
    passed: bool
    attempts: int
    passed_first_attempt: bool
    error_codes: _containers.RepeatedScalarFieldContainer[str]
    task_id: str
    def __init__(self, run_id: _Optional[str] = ..., koan_id: _Optional[str] = ..., family: _Optional[str] = ..., repeat: _Optional[int] = ..., passed: _Optional[bool] = ..., attempts: _Optional[int] = ..., passed_first_attempt: _Optional[bool] = ..., error_codes: _Optional[_Iterable[str]] = ..., task_id: _Optional[str] = ...) -> None: ...

class EvaluationCompleted(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: _evaluator_pb2.EvaluationSummary
    def __init__(self, summary: _Optional[_Union[_evaluator_pb2.EvaluationSummary, _Mapping]] = ...) -> None: ...

class GateDecided(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _evaluator_pb2.GateDecision
    def __init__(self, decision: _Optional[_Union[_evaluator_pb2.GateDecision, _Mapping]] = ...) -> None: ...

class CyclePhaseStarted(_message.Message):
    __slots__ = ("cycle_id", "cycle", "phase", "request", "retry")
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    cycle: int
    phase: str
    request: _evaluator_pb2.StartCycleRequest
    retry: int
    def __init__(self, cycle_id: _Optional[str] = ..., cycle: _Optional[int] = ..., phase: _Optional[str] = ..., request: _Optional[_Union[_evaluator_pb2.StartCycleRequest, _Mapping]] = ..., retry: _Optional[int] = ...) -> None: ...

class CyclePhaseCompleted(_message.Message):
    __slots__ = ("cycle_id", "cycle", "phase", "run_ids", "job_id", "adapter_id", "round", "seconds", "error")
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    cycle: int
    phase: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    job_id: str
    adapter_id: str
    round: _evaluator_pb2.CycleRound
    seconds: float
    error: str
    def __init__(self, cycle_id: _Optional[str] = ..., cycle: _Optional[int] = ..., phase: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., job_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., round: _Optional[_Union[_evaluator_pb2.CycleRound, _Mapping]] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...
