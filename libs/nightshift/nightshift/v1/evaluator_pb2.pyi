from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryRequest(_message.Message):
    __slots__ = ("sql", "max_rows")
    SQL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    max_rows: int
    def __init__(self, sql: _Optional[str] = ..., max_rows: _Optional[int] = ...) -> None: ...

class QueryValue(_message.Message):
    __slots__ = ("is_null", "int_value", "double_value", "string_value", "bool_value")
    IS_NULL_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    is_null: bool
    int_value: int
    double_value: float
    string_value: str
    bool_value: bool
    def __init__(self, is_null: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class QueryRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[QueryValue]
    def __init__(self, values: _Optional[_Iterable[_Union[QueryValue, _Mapping]]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "column_types", "rows", "truncated")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_TYPES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    column_types: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[QueryRow]
    truncated: bool
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., column_types: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[QueryRow, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StartEvaluationRequest(_message.Message):
    __slots__ = ("koan_set", "family", "adapter_id", "repeats", "seed", "max_attempts", "model", "correlation_id")
    KOAN_SET_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    koan_set: str
    family: str
    adapter_id: str
    repeats: int
    seed: int
    max_attempts: int
    model: str
    correlation_id: str
    def __init__(self, koan_set: _Optional[str] = ..., family: _Optional[str] = ..., adapter_id: _Optional[str] = ..., repeats: _Optional[int] = ..., seed: _Optional[int] = ..., max_attempts: _Optional[int] = ..., model: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class StartEvaluationResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class FamilyRate(_message.Message):
    __slots__ = ("family", "passed", "total", "pass_rate")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    family: str
    passed: int
    total: int
    pass_rate: float
    def __init__(self, family: _Optional[str] = ..., passed: _Optional[int] = ..., total: _Optional[int] = ..., pass_rate: _Optional[float] = ...) -> None: ...

class EvaluationSummary(_message.Message):
    __slots__ = ("run_id", "koan_set", "adapter_id", "total", "passed", "pass_rate", "pass_at_1", "pass_rate_low", "pass_rate_high", "median_attempts", "repeat_error_rate", "families", "finished", "model", "mean_attempts", "repeats", "seed", "max_attempts", "family", "evaluated", "expected", "error_codes", "correlation_id", "requested_adapter", "pass_rate_mean", "pass_at_1_low", "pass_at_1_high")
    class ErrorCodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KOAN_SET_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    PASS_AT_1_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_LOW_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_HIGH_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REPEAT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEAN_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODES_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_MEAN_FIELD_NUMBER: _ClassVar[int]
    PASS_AT_1_LOW_FIELD_NUMBER: _ClassVar[int]
    PASS_AT_1_HIGH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    koan_set: str
    adapter_id: str
    total: int
    passed: int
    pass_rate: float
    pass_at_1: float
    pass_rate_low: float
    pass_rate_high: float
    median_attempts: float
    repeat_error_rate: float
    families: _containers.RepeatedCompositeFieldContainer[FamilyRate]
    finished: bool
    model: str
    mean_attempts: float
    repeats: int
    seed: int
    max_attempts: int
    family: str
    evaluated: int
    expected: int
    error_codes: _containers.ScalarMap[str, int]
    correlation_id: str
    requested_adapter: str
    pass_rate_mean: float
    pass_at_1_low: float
    pass_at_1_high: float
    def __init__(self, run_id: _Optional[str] = ..., koan_set: _Optional[str] = ..., adapter_id: _Optional[str] = ..., total: _Optional[int] = ..., passed: _Optional[int] = ..., pass_rate: _Optional[float] = ..., pass_at_1: _Optional[float] = ..., pass_rate_low: _Optional[float] = ..., pass_rate_high: _Optional[float] = ..., median_attempts: _Optional[float] = ..., repeat_error_rate: _Optional[float] = ..., families: _Optional[_Iterable[_Union[FamilyRate, _Mapping]]] = ..., finished: _Optional[bool] = ..., model: _Optional[str] = ..., mean_attempts: _Optional[float] = ..., repeats: _Optional[int] = ..., seed: _Optional[int] = ..., max_attempts: _Optional[int] = ..., family: _Optional[str] = ..., evaluated: _Optional[int] = ..., expected: _Optional[int] = ..., error_codes: _Optional[_Mapping[str, int]] = ..., correlation_id: _Optional[str] = ..., requested_adapter: _Optional[str] = ..., pass_rate_mean: _Optional[float] = ..., pass_at_1_low: _Optional[float] = ..., pass_at_1_high: _Optional[float] = ...) -> None: ...

class GetEvaluationRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetEvaluationResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: EvaluationSummary
    def __init__(self, summary: _Optional[_Union[EvaluationSummary, _Mapping]] = ...) -> None: ...

class WatchEvaluationRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchEvaluationResponse(_message.Message):
    __slots__ = ("summary", "last_koan_id", "last_passed")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    LAST_KOAN_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_PASSED_FIELD_NUMBER: _ClassVar[int]
    summary: EvaluationSummary
    last_koan_id: str
    last_passed: bool
    def __init__(self, summary: _Optional[_Union[EvaluationSummary, _Mapping]] = ..., last_koan_id: _Optional[str] = ..., last_passed: _Optional[bool] = ...) -> None: ...

class DecideGateRequest(_message.Message):
    __slots__ = ("candidate_run_id", "champion_run_id", "candidate_heldout_run_id", "champion_heldout_run_id", "adapter_id", "policy", "correlation_id")
    class PolicyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CANDIDATE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    candidate_run_id: str
    champion_run_id: str
    candidate_heldout_run_id: str
    champion_heldout_run_id: str
    adapter_id: str
    policy: _containers.ScalarMap[str, str]
    correlation_id: str
    def __init__(self, candidate_run_id: _Optional[str] = ..., champion_run_id: _Optional[str] = ..., candidate_heldout_run_id: _Optional[str] = ..., champion_heldout_run_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., policy: _Optional[_Mapping[str, str]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class GateDecision(_message.Message):
    __slots__ = ("decision_id", "adapter_id", "promote", "reason", "regressions", "gains", "heldout_delta", "reasons", "candidate_run_id", "champion_run_id", "candidate_heldout_run_id", "champion_heldout_run_id", "candidate_pass_rate", "champion_pass_rate", "sign_test_p", "policy", "correlation_id")
    class PolicyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REGRESSIONS_FIELD_NUMBER: _ClassVar[int]
    GAINS_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_DELTA_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    SIGN_TEST_P_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    adapter_id: str
    promote: bool
    reason: str
    regressions: int
    gains: int
    heldout_delta: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    candidate_run_id: str
    champion_run_id: str
    candidate_heldout_run_id: str
    champion_heldout_run_id: str
    candidate_pass_rate: float
    champion_pass_rate: float
    sign_test_p: float
    policy: _containers.ScalarMap[str, str]
    correlation_id: str
    def __init__(self, decision_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., promote: _Optional[bool] = ..., reason: _Optional[str] = ..., regressions: _Optional[int] = ..., gains: _Optional[int] = ..., heldout_delta: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., candidate_run_id: _Optional[str] = ..., champion_run_id: _Optional[str] = ..., candidate_heldout_run_id: _Optional[str] = ..., champion_heldout_run_id: _Optional[str] = ..., candidate_pass_rate: _Optional[float] = ..., champion_pass_rate: _Optional[float] = ..., sign_test_p: _Optional[float] = ..., policy: _Optional[_Mapping[str, str]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class DecideGateResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: GateDecision
    def __init__(self, decision: _Optional[_Union[GateDecision, _Mapping]] = ...) -> None: ...

class StartCycleRequest(_message.Message):
    __slots__ = ("cycles", "recipe", "preset", "model", "repeats", "quick", "overrides", "recipe_parameters", "max_attempts", "seed", "day_set", "eval_family", "policy", "day_max_attempts", "fresh")
    class OverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RecipeParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PolicyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    QUICK_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    RECIPE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DAY_SET_FIELD_NUMBER: _ClassVar[int]
    EVAL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DAY_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    cycles: int
    recipe: str
    preset: str
    model: str
    repeats: int
    quick: bool
    overrides: _containers.ScalarMap[str, str]
    recipe_parameters: _containers.ScalarMap[str, str]
    max_attempts: int
    seed: int
    day_set: str
    eval_family: str
    policy: _containers.ScalarMap[str, str]
    day_max_attempts: int
    fresh: bool
    def __init__(self, cycles: _Optional[int] = ..., recipe: _Optional[str] = ..., preset: _Optional[str] = ..., model: _Optional[str] = ..., repeats: _Optional[int] = ..., quick: _Optional[bool] = ..., overrides: _Optional[_Mapping[str, str]] = ..., recipe_parameters: _Optional[_Mapping[str, str]] = ..., max_attempts: _Optional[int] = ..., seed: _Optional[int] = ..., day_set: _Optional[str] = ..., eval_family: _Optional[str] = ..., policy: _Optional[_Mapping[str, str]] = ..., day_max_attempts: _Optional[int] = ..., fresh: _Optional[bool] = ...) -> None: ...

class StartCycleResponse(_message.Message):
    __slots__ = ("cycle_id",)
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    def __init__(self, cycle_id: _Optional[str] = ...) -> None: ...

class CycleRound(_message.Message):
    __slots__ = ("cycle", "day_run_id", "job_id", "adapter_id", "champion_adapter_id", "candidate_frozen_run_id", "champion_frozen_run_id", "candidate_heldout_run_id", "champion_heldout_run_id", "decision", "phase_seconds")
    class PhaseSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    DAY_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FROZEN_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FROZEN_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_HELDOUT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PHASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    cycle: int
    day_run_id: str
    job_id: str
    adapter_id: str
    champion_adapter_id: str
    candidate_frozen_run_id: str
    champion_frozen_run_id: str
    candidate_heldout_run_id: str
    champion_heldout_run_id: str
    decision: GateDecision
    phase_seconds: _containers.ScalarMap[str, float]
    def __init__(self, cycle: _Optional[int] = ..., day_run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., champion_adapter_id: _Optional[str] = ..., candidate_frozen_run_id: _Optional[str] = ..., champion_frozen_run_id: _Optional[str] = ..., candidate_heldout_run_id: _Optional[str] = ..., champion_heldout_run_id: _Optional[str] = ..., decision: _Optional[_Union[GateDecision, _Mapping]] = ..., phase_seconds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CycleStatus(_message.Message):
    __slots__ = ("cycle_id", "cycle", "phase", "state", "run_ids", "job_id", "adapter_id", "decision", "request", "rounds", "error", "retries")
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    cycle: int
    phase: str
    state: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    job_id: str
    adapter_id: str
    decision: GateDecision
    request: StartCycleRequest
    rounds: _containers.RepeatedCompositeFieldContainer[CycleRound]
    error: str
    retries: int
    def __init__(self, cycle_id: _Optional[str] = ..., cycle: _Optional[int] = ..., phase: _Optional[str] = ..., state: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., job_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., decision: _Optional[_Union[GateDecision, _Mapping]] = ..., request: _Optional[_Union[StartCycleRequest, _Mapping]] = ..., rounds: _Optional[_Iterable[_Union[CycleRound, _Mapping]]] = ..., error: _Optional[str] = ..., retries: _Optional[int] = ...) -> None: ...

class GetCycleRequest(_message.Message):
    __slots__ = ("cycle_id",)
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    def __init__(self, cycle_id: _Optional[str] = ...) -> None: ...

class GetCycleResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: CycleStatus
    def __init__(self, status: _Optional[_Union[CycleStatus, _Mapping]] = ...) -> None: ...

class RetryCycleRequest(_message.Message):
    __slots__ = ("cycle_id",)
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    def __init__(self, cycle_id: _Optional[str] = ...) -> None: ...

class RetryCycleResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: CycleStatus
    def __init__(self, status: _Optional[_Union[CycleStatus, _Mapping]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("run_id", "compare_run_id", "cycle_id", "compare_cycle_ids")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COMPARE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPARE_CYCLE_IDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    compare_run_id: str
    cycle_id: str
    compare_cycle_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., compare_run_id: _Optional[str] = ..., cycle_id: _Optional[str] = ..., compare_cycle_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportFile(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: bytes
    def __init__(self, name: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("files", "markdown")
    FILES_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[ReportFile]
    markdown: str
    def __init__(self, files: _Optional[_Iterable[_Union[ReportFile, _Mapping]]] = ..., markdown: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("format",)
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    format: str
    def __init__(self, format: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("name", "data", "end_of_file")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_OF_FILE_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    end_of_file: bool
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., end_of_file: _Optional[bool] = ...) -> None: ...
