from nightshift.v1 import sandbox_pb2 as _sandbox_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_QUEUED: _ClassVar[TaskState]
    TASK_RUNNING: _ClassVar[TaskState]
    TASK_PASSED: _ClassVar[TaskState]
    TASK_FAILED: _ClassVar[TaskState]
    TASK_CANCELLED: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_QUEUED: TaskState
TASK_RUNNING: TaskState
TASK_PASSED: TaskState
TASK_FAILED: TaskState
TASK_CANCELLED: TaskState

class SubmitTaskRequest(_message.Message):
    __slots__ = ("koan_id", "source", "tests", "edition", "max_attempts", "adapter_id", "model", "seed", "run_id", "correlation_id", "mode")
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    EDITION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    koan_id: str
    source: str
    tests: str
    edition: str
    max_attempts: int
    adapter_id: str
    model: str
    seed: int
    run_id: str
    correlation_id: str
    mode: _sandbox_pb2.CheckMode
    def __init__(self, koan_id: _Optional[str] = ..., source: _Optional[str] = ..., tests: _Optional[str] = ..., edition: _Optional[str] = ..., max_attempts: _Optional[int] = ..., adapter_id: _Optional[str] = ..., model: _Optional[str] = ..., seed: _Optional[int] = ..., run_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., mode: _Optional[_Union[_sandbox_pb2.CheckMode, str]] = ...) -> None: ...

class SubmitTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "prompt", "completion", "code", "verdict", "prompt_tokens", "completion_tokens", "generate_seconds", "temperature", "seed", "prompt_seconds", "reused_prompt_tokens", "resamples", "resample_seconds")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REUSED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    number: int
    prompt: str
    completion: str
    code: str
    verdict: _sandbox_pb2.Verdict
    prompt_tokens: int
    completion_tokens: int
    generate_seconds: float
    temperature: float
    seed: int
    prompt_seconds: float
    reused_prompt_tokens: int
    resamples: int
    resample_seconds: float
    def __init__(self, number: _Optional[int] = ..., prompt: _Optional[str] = ..., completion: _Optional[str] = ..., code: _Optional[str] = ..., verdict: _Optional[_Union[_sandbox_pb2.Verdict, _Mapping]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., generate_seconds: _Optional[float] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., prompt_seconds: _Optional[float] = ..., reused_prompt_tokens: _Optional[int] = ..., resamples: _Optional[int] = ..., resample_seconds: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "state", "koan_id", "attempts", "adapter_id", "model", "run_id", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: TaskState
    koan_id: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    adapter_id: str
    model: str
    run_id: str
    error: str
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., koan_id: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., adapter_id: _Optional[str] = ..., model: _Optional[str] = ..., run_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("attempt", "task")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    attempt: Attempt
    task: Task
    def __init__(self, attempt: _Optional[_Union[Attempt, _Mapping]] = ..., task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "path", "available", "size_bytes", "sha256", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    available: bool
    size_bytes: int
    sha256: str
    source: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., available: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("task_id", "koan_id", "passed", "attempts_used", "error_codes", "first_error_code", "last_error_code", "repeated_error", "final_code", "adapter_id", "model", "run_id", "attempts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_USED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODES_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ERROR_FIELD_NUMBER: _ClassVar[int]
    FINAL_CODE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    koan_id: str
    passed: bool
    attempts_used: int
    error_codes: _containers.RepeatedScalarFieldContainer[str]
    first_error_code: str
    last_error_code: str
    repeated_error: bool
    final_code: str
    adapter_id: str
    model: str
    run_id: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, task_id: _Optional[str] = ..., koan_id: _Optional[str] = ..., passed: _Optional[bool] = ..., attempts_used: _Optional[int] = ..., error_codes: _Optional[_Iterable[str]] = ..., first_error_code: _Optional[str] = ..., last_error_code: _Optional[str] = ..., repeated_error: _Optional[bool] = ..., final_code: _Optional[str] = ..., adapter_id: _Optional[str] = ..., model: _Optional[str] = ..., run_id: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class GetEpisodeRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetEpisodeResponse(_message.Message):
    __slots__ = ("episode",)
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    episode: Episode
    def __init__(self, episode: _Optional[_Union[Episode, _Mapping]] = ...) -> None: ...

class ServedAdapter(_message.Message):
    __slots__ = ("adapter_id", "path", "loaded", "champion")
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    adapter_id: str
    path: str
    loaded: bool
    champion: bool
    def __init__(self, adapter_id: _Optional[str] = ..., path: _Optional[str] = ..., loaded: _Optional[bool] = ..., champion: _Optional[bool] = ...) -> None: ...

class ListServedAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServedAdaptersResponse(_message.Message):
    __slots__ = ("adapters", "champion_adapter_id")
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[ServedAdapter]
    champion_adapter_id: str
    def __init__(self, adapters: _Optional[_Iterable[_Union[ServedAdapter, _Mapping]]] = ..., champion_adapter_id: _Optional[str] = ...) -> None: ...
