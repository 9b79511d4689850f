from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_QUEUED: _ClassVar[JobState]
    JOB_RUNNING: _ClassVar[JobState]
    JOB_COMPLETED: _ClassVar[JobState]
    JOB_FAILED: _ClassVar[JobState]
    JOB_CANCELLED: _ClassVar[JobState]

class AdapterState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTER_STATE_UNSPECIFIED: _ClassVar[AdapterState]
    ADAPTER_CANDIDATE: _ClassVar[AdapterState]
    ADAPTER_CHAMPION: _ClassVar[AdapterState]
    ADAPTER_REJECTED: _ClassVar[AdapterState]
    ADAPTER_RETIRED: _ClassVar[AdapterState]
JOB_STATE_UNSPECIFIED: JobState
JOB_QUEUED: JobState
JOB_RUNNING: JobState
JOB_COMPLETED: JobState
JOB_FAILED: JobState
JOB_CANCELLED: JobState
ADAPTER_STATE_UNSPECIFIED: AdapterState
ADAPTER_CANDIDATE: AdapterState
ADAPTER_CHAMPION: AdapterState
ADAPTER_REJECTED: AdapterState
ADAPTER_RETIRED: AdapterState

class MixSpec(_message.Message):
    __slots__ = ("recipe", "parameters", "base_adapter_id")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BASE_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    recipe: str
    parameters: _containers.ScalarMap[str, str]
    base_adapter_id: str
    def __init__(self, recipe: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., base_adapter_id: _Optional[str] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("mix", "preset", "overrides", "model", "correlation_id", "seed")
    class OverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MIX_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    mix: MixSpec
    preset: str
    overrides: _containers.ScalarMap[str, str]
    model: str
    correlation_id: str
    seed: int
    def __init__(self, mix: _Optional[_Union[MixSpec, _Mapping]] = ..., preset: _Optional[str] = ..., overrides: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., correlation_id: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("step", "total_steps", "loss", "tokens_per_second", "eta_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    loss: float
    tokens_per_second: float
    eta_seconds: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "mix", "preset", "progress", "adapter_id", "error", "example_count", "excluded_count", "data_hash", "model", "correlation_id", "train_seconds", "train_tokens", "excluded_by_reason", "device")
    class ExcludedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    mix: MixSpec
    preset: str
    progress: JobProgress
    adapter_id: str
    error: str
    example_count: int
    excluded_count: int
    data_hash: str
    model: str
    correlation_id: str
    train_seconds: float
    train_tokens: int
    excluded_by_reason: _containers.ScalarMap[str, int]
    device: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., mix: _Optional[_Union[MixSpec, _Mapping]] = ..., preset: _Optional[str] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., adapter_id: _Optional[str] = ..., error: _Optional[str] = ..., example_count: _Optional[int] = ..., excluded_count: _Optional[int] = ..., data_hash: _Optional[str] = ..., model: _Optional[str] = ..., correlation_id: _Optional[str] = ..., train_seconds: _Optional[float] = ..., train_tokens: _Optional[int] = ..., excluded_by_reason: _Optional[_Mapping[str, int]] = ..., device: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class MixExample(_message.Message):
    __slots__ = ("example_id", "koan_id", "prompt", "completion", "chosen", "rejected", "origin", "episode_id")
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    example_id: str
    koan_id: str
    prompt: str
    completion: str
    chosen: str
    rejected: str
    origin: str
    episode_id: str
    def __init__(self, example_id: _Optional[str] = ..., koan_id: _Optional[str] = ..., prompt: _Optional[str] = ..., completion: _Optional[str] = ..., chosen: _Optional[str] = ..., rejected: _Optional[str] = ..., origin: _Optional[str] = ..., episode_id: _Optional[str] = ...) -> None: ...

class BuildMixRequest(_message.Message):
    __slots__ = ("mix",)
    MIX_FIELD_NUMBER: _ClassVar[int]
    mix: MixSpec
    def __init__(self, mix: _Optional[_Union[MixSpec, _Mapping]] = ...) -> None: ...

class BuildMixResponse(_message.Message):
    __slots__ = ("examples", "excluded_count", "data_hash", "excluded_by_reason")
    class ExcludedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_HASH_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[MixExample]
    excluded_count: int
    data_hash: str
    excluded_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, examples: _Optional[_Iterable[_Union[MixExample, _Mapping]]] = ..., excluded_count: _Optional[int] = ..., data_hash: _Optional[str] = ..., excluded_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Adapter(_message.Message):
    __slots__ = ("adapter_id", "state", "model", "gguf_path", "job_id", "sha256", "parent_adapter_id", "recipe", "data_hash", "preset", "metrics", "verification", "reason")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GGUF_PATH_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PARENT_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    DATA_HASH_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    state: AdapterState
    model: str
    gguf_path: str
    job_id: str
    sha256: str
    parent_adapter_id: str
    recipe: str
    data_hash: str
    preset: str
    metrics: _containers.ScalarMap[str, float]
    verification: AdapterVerification
    reason: str
    def __init__(self, adapter_id: _Optional[str] = ..., state: _Optional[_Union[AdapterState, str]] = ..., model: _Optional[str] = ..., gguf_path: _Optional[str] = ..., job_id: _Optional[str] = ..., sha256: _Optional[str] = ..., parent_adapter_id: _Optional[str] = ..., recipe: _Optional[str] = ..., data_hash: _Optional[str] = ..., preset: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., verification: _Optional[_Union[AdapterVerification, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class AdapterVerification(_message.Message):
    __slots__ = ("passed", "tolerance", "max_abs_diff", "adapter_effect", "reference_effect", "prompt", "detail")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_EFFECT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EFFECT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    tolerance: float
    max_abs_diff: float
    adapter_effect: float
    reference_effect: float
    prompt: str
    detail: str
    def __init__(self, passed: _Optional[bool] = ..., tolerance: _Optional[float] = ..., max_abs_diff: _Optional[float] = ..., adapter_effect: _Optional[float] = ..., reference_effect: _Optional[float] = ..., prompt: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[Adapter]
    def __init__(self, adapters: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ...) -> None: ...

class GetChampionRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetChampionResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class PromoteAdapterRequest(_message.Message):
    __slots__ = ("adapter_id", "reason", "gate_decision_id")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GATE_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    reason: str
    gate_decision_id: str
    def __init__(self, adapter_id: _Optional[str] = ..., reason: _Optional[str] = ..., gate_decision_id: _Optional[str] = ...) -> None: ...

class PromoteAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class RejectAdapterRequest(_message.Message):
    __slots__ = ("adapter_id", "reason", "gate_decision_id")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GATE_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    reason: str
    gate_decision_id: str
    def __init__(self, adapter_id: _Optional[str] = ..., reason: _Optional[str] = ..., gate_decision_id: _Optional[str] = ...) -> None: ...

class RejectAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class RollbackAdapterRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackAdapterResponse(_message.Message):
    __slots__ = ("champion",)
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    champion: Adapter
    def __init__(self, champion: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...
