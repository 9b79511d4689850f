from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    OK: _ClassVar[CheckStatus]
    COMPILE_ERROR: _ClassVar[CheckStatus]
    TEST_FAILED: _ClassVar[CheckStatus]
    LINT_FAILED: _ClassVar[CheckStatus]
    TIMEOUT: _ClassVar[CheckStatus]
    MEMORY_LIMIT: _ClassVar[CheckStatus]
    OUTPUT_LIMIT: _ClassVar[CheckStatus]
    SANDBOX_ERROR: _ClassVar[CheckStatus]

class CheckMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_MODE_UNSPECIFIED: _ClassVar[CheckMode]
    MODE_BUILD: _ClassVar[CheckMode]
    MODE_TEST: _ClassVar[CheckMode]
    MODE_CLIPPY: _ClassVar[CheckMode]
CHECK_STATUS_UNSPECIFIED: CheckStatus
OK: CheckStatus
COMPILE_ERROR: CheckStatus
TEST_FAILED: CheckStatus
LINT_FAILED: CheckStatus
TIMEOUT: CheckStatus
MEMORY_LIMIT: CheckStatus
OUTPUT_LIMIT: CheckStatus
SANDBOX_ERROR: CheckStatus
CHECK_MODE_UNSPECIFIED: CheckMode
MODE_BUILD: CheckMode
MODE_TEST: CheckMode
MODE_CLIPPY: CheckMode

class CheckLimits(_message.Message):
    __slots__ = ("cpu_seconds", "wall_seconds", "memory_bytes", "max_processes", "output_bytes")
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_seconds: float
    wall_seconds: float
    memory_bytes: int
    max_processes: int
    output_bytes: int
    def __init__(self, cpu_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., max_processes: _Optional[int] = ..., output_bytes: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("source", "tests", "edition", "mode", "limits", "backend", "correlation_id", "causation_id", "task_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    EDITION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    source: str
    tests: str
    edition: str
    mode: CheckMode
    limits: CheckLimits
    backend: str
    correlation_id: str
    causation_id: str
    task_id: str
    def __init__(self, source: _Optional[str] = ..., tests: _Optional[str] = ..., edition: _Optional[str] = ..., mode: _Optional[_Union[CheckMode, str]] = ..., limits: _Optional[_Union[CheckLimits, _Mapping]] = ..., backend: _Optional[str] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("code", "level", "message", "line", "column", "rendered")
    CODE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    code: str
    level: str
    message: str
    line: int
    column: int
    rendered: str
    def __init__(self, code: _Optional[str] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., rendered: _Optional[str] = ...) -> None: ...

class TestResult(_message.Message):
    __slots__ = ("name", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("status", "diagnostics", "tests", "tests_replaced", "compile_seconds", "run_seconds", "total_seconds", "stdout", "stderr", "output_truncated", "backend", "detail", "check_id", "source_sha256")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    TESTS_REPLACED_FIELD_NUMBER: _ClassVar[int]
    COMPILE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    status: CheckStatus
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    tests: _containers.RepeatedCompositeFieldContainer[TestResult]
    tests_replaced: bool
    compile_seconds: float
    run_seconds: float
    total_seconds: float
    stdout: str
    stderr: str
    output_truncated: bool
    backend: str
    detail: str
    check_id: str
    source_sha256: str
    def __init__(self, status: _Optional[_Union[CheckStatus, str]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., tests: _Optional[_Iterable[_Union[TestResult, _Mapping]]] = ..., tests_replaced: _Optional[bool] = ..., compile_seconds: _Optional[float] = ..., run_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., backend: _Optional[str] = ..., detail: _Optional[str] = ..., check_id: _Optional[str] = ..., source_sha256: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...
