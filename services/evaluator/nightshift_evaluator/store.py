"""The evaluator's DuckDB file: schema migrations, projected rows, dead letters and consumer positions.

One DuckDB instance per process. All writes go through one dedicated cursor on one
dedicated thread, so they never interleave and never block the event loop; readers get
fresh cursors of the same instance (`read_cursor`). A snapshot (`snapshot`) is read on the
writer thread too, so no projection write lands in the middle of it.

Tables are insert-only; current state (a job's latest state, an adapter's state, a run's
pass rate) is derived by views. docs/evaluator-schema.md describes every table and view.

A batch of events (`apply_batch`) is one transaction: its rows go in per table through Arrow,
which costs a few microseconds a row where a parameterised INSERT costs a millisecond.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow

from nightshift_evaluator.projection import RowInsert

log = logging.getLogger("nightshift.evaluator.store")

# The instance can reach no file but its own, load no extension and change no setting,
# so a query that gets through to DuckDB still cannot touch the host (query.py).
DUCKDB_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


# The columns every event table starts with (projection.envelope_columns).
ENVELOPE_COLUMNS = """\
                event_id VARCHAR PRIMARY KEY,
                stream_sequence BIGINT NOT NULL,
                occurred_at TIMESTAMP,
                correlation_id VARCHAR NOT NULL,
                causation_id VARCHAR NOT NULL,"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "projection bookkeeping",
        (
            """CREATE TABLE projection_positions (
                consumer VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                last_sequence BIGINT NOT NULL,
                PRIMARY KEY (consumer, stream)
            )""",
            # Every event whose rows are in the projections; a second delivery is skipped by id.
            """CREATE TABLE projected_events (
                event_id VARCHAR PRIMARY KEY,
                type VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                stream_sequence BIGINT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "sandbox checks",
        (
            """CREATE TABLE sandbox_checks (
                event_id VARCHAR PRIMARY KEY,
                check_id VARCHAR NOT NULL,
                occurred_at TIMESTAMP,
                correlation_id VARCHAR NOT NULL,
                causation_id VARCHAR NOT NULL,
                task_id VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                mode VARCHAR NOT NULL,
                edition VARCHAR NOT NULL,
                backend VARCHAR NOT NULL,
                source_sha256 VARCHAR NOT NULL,
                source_bytes BIGINT NOT NULL,
                has_tests BOOLEAN NOT NULL,
                tests_replaced BOOLEAN NOT NULL,
                tests_passed INTEGER NOT NULL,
                tests_failed INTEGER NOT NULL,
                error_codes VARCHAR[] NOT NULL,
                compile_seconds DOUBLE NOT NULL,
                run_seconds DOUBLE NOT NULL,
                total_seconds DOUBLE NOT NULL,
                output_truncated BOOLEAN NOT NULL,
                detail VARCHAR NOT NULL,
                stream_sequence BIGINT NOT NULL
            )""",
            """CREATE TABLE sandbox_check_diagnostics (
                event_id VARCHAR NOT NULL,
                position INTEGER NOT NULL,
                code VARCHAR NOT NULL,
                level VARCHAR NOT NULL,
                message VARCHAR NOT NULL,
                line INTEGER NOT NULL,
                "column" INTEGER NOT NULL,
                rendered VARCHAR NOT NULL,
                PRIMARY KEY (event_id, position)
            )""",
        ),
    ),
    Migration(
        3,
        "episodes",
        (
            f"""CREATE TABLE tasks (
{ENVELOPE_COLUMNS}
                task_id VARCHAR NOT NULL,
                koan_id VARCHAR NOT NULL,
                koan_set VARCHAR NOT NULL,
                family VARCHAR NOT NULL,
                run_id VARCHAR NOT NULL,
                request_correlation_id VARCHAR NOT NULL,
                requested_adapter VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                max_attempts INTEGER NOT NULL,
                seed UBIGINT NOT NULL,
                mode VARCHAR NOT NULL,
                edition VARCHAR NOT NULL,
                has_source BOOLEAN NOT NULL,
                source_bytes BIGINT NOT NULL,
                has_tests BOOLEAN NOT NULL
            )""",
            f"""CREATE TABLE attempts (
{ENVELOPE_COLUMNS}
                task_id VARCHAR NOT NULL,
                koan_id VARCHAR NOT NULL,
                number INTEGER NOT NULL,
                run_id VARCHAR NOT NULL,
                adapter_id VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                passed BOOLEAN NOT NULL,
                error_codes VARCHAR[] NOT NULL,
                first_error_code VARCHAR NOT NULL,
                prompt VARCHAR NOT NULL,
                completion VARCHAR NOT NULL,
                code VARCHAR NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                generate_seconds DOUBLE NOT NULL,
                check_seconds DOUBLE NOT NULL,
                temperature DOUBLE NOT NULL,
                seed UBIGINT NOT NULL,
                tests_replaced BOOLEAN NOT NULL,
                tests_passed INTEGER NOT NULL,
                tests_failed INTEGER NOT NULL,
                check_id VARCHAR NOT NULL,
                detail VARCHAR NOT NULL
            )""",
            f"""CREATE TABLE episodes (
{ENVELOPE_COLUMNS}
                task_id VARCHAR NOT NULL,
                koan_id VARCHAR NOT NULL,
                passed BOOLEAN NOT NULL,
                steps INTEGER NOT NULL,
                error_codes VARCHAR[] NOT NULL,
                adapter_id VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                run_id VARCHAR NOT NULL,
                state VARCHAR NOT NULL,
                final_code VARCHAR NOT NULL,
                koan_set VARCHAR NOT NULL,
                family VARCHAR NOT NULL,
                first_error_code VARCHAR NOT NULL,
                last_error_code VARCHAR NOT NULL,
                repeated_error BOOLEAN NOT NULL,
                episode_correlation_id VARCHAR NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "training jobs",
        (
            f"""CREATE TABLE training_jobs_requested (
{ENVELOPE_COLUMNS}
                job_id VARCHAR NOT NULL,
                recipe VARCHAR NOT NULL,
                mix_parameters MAP(VARCHAR, VARCHAR) NOT NULL,
                base_adapter_id VARCHAR NOT NULL,
                preset VARCHAR NOT NULL,
                preset_fields MAP(VARCHAR, VARCHAR) NOT NULL,
                example_ids VARCHAR[] NOT NULL,
                example_count INTEGER NOT NULL,
                data_hash VARCHAR NOT NULL,
                excluded_count INTEGER NOT NULL,
                excluded_by_reason MAP(VARCHAR, UINTEGER) NOT NULL,
                model VARCHAR NOT NULL,
                seed UBIGINT NOT NULL
            )""",
            f"""CREATE TABLE training_job_events (
{ENVELOPE_COLUMNS}
                job_id VARCHAR NOT NULL,
                verb VARCHAR NOT NULL,
                device VARCHAR,
                resumed BOOLEAN,
                from_step INTEGER,
                step INTEGER,
                total_steps INTEGER,
                loss DOUBLE,
                tokens_per_second DOUBLE,
                eta_seconds DOUBLE,
                adapter_id VARCHAR,
                train_seconds DOUBLE,
                train_tokens UBIGINT,
                final_loss DOUBLE,
                error VARCHAR,
                reason VARCHAR
            )""",
            # The latest state of each job: the last of started/completed/failed/cancelled decides
            # (a resumed job starts again), progress alone means running, nothing yet means queued.
            """CREATE VIEW training_jobs AS
            WITH jobs AS (
                SELECT job_id FROM training_jobs_requested UNION SELECT job_id FROM training_job_events
            ),
            requested AS (
                SELECT * FROM training_jobs_requested
                QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY stream_sequence) = 1
            ),
            lifecycle AS (
                SELECT * FROM training_job_events WHERE verb <> 'progressed'
                QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY stream_sequence DESC) = 1
            ),
            started AS (
                SELECT * FROM training_job_events WHERE verb = 'started'
                QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY stream_sequence DESC) = 1
            ),
            progress AS (
                SELECT * FROM training_job_events WHERE verb = 'progressed'
                QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY stream_sequence DESC) = 1
            ),
            ended AS (
                SELECT * FROM training_job_events WHERE verb IN ('completed', 'failed', 'cancelled')
                QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY stream_sequence DESC) = 1
            ),
            latest AS (
                SELECT job_id, max(stream_sequence) AS last_sequence, max(occurred_at) AS last_event_at
                FROM training_job_events GROUP BY job_id
            )
            SELECT
                jobs.job_id,
                CASE
                    WHEN lifecycle.verb = 'started' THEN 'running'
                    WHEN lifecycle.verb IS NOT NULL THEN lifecycle.verb
                    WHEN progress.job_id IS NOT NULL THEN 'running'
                    ELSE 'queued'
                END AS state,
                requested.recipe,
                requested.preset,
                requested.model,
                requested.example_count,
                requested.excluded_count,
                requested.data_hash,
                requested.seed,
                requested.correlation_id,
                started.device,
                progress.step,
                progress.total_steps,
                progress.loss,
                progress.tokens_per_second,
                progress.eta_seconds,
                CASE WHEN ended.verb = 'completed' THEN ended.adapter_id END AS adapter_id,
                ended.train_seconds,
                ended.train_tokens,
                ended.final_loss,
                CASE WHEN ended.verb = 'failed' THEN ended.error END AS error,
                CASE WHEN ended.verb = 'cancelled' THEN ended.reason END AS cancel_reason,
                requested.occurred_at AS requested_at,
                started.occurred_at AS started_at,
                ended.occurred_at AS ended_at,
                coalesce(latest.last_sequence, requested.stream_sequence) AS last_sequence
            FROM jobs
            LEFT JOIN requested USING (job_id)
            LEFT JOIN lifecycle USING (job_id)
            LEFT JOIN started USING (job_id)
            LEFT JOIN progress USING (job_id)
            LEFT JOIN ended USING (job_id)
            LEFT JOIN latest USING (job_id)""",
        ),
    ),
    Migration(
        5,
        "adapters",
        (
            f"""CREATE TABLE adapters (
{ENVELOPE_COLUMNS}
                adapter_id VARCHAR NOT NULL,
                state VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                gguf_path VARCHAR NOT NULL,
                job_id VARCHAR NOT NULL,
                sha256 VARCHAR NOT NULL,
                parent_adapter_id VARCHAR NOT NULL,
                recipe VARCHAR NOT NULL,
                data_hash VARCHAR NOT NULL,
                preset VARCHAR NOT NULL,
                metrics MAP(VARCHAR, DOUBLE) NOT NULL,
                reason VARCHAR NOT NULL,
                has_verification BOOLEAN NOT NULL,
                verification_passed BOOLEAN,
                verification_tolerance DOUBLE,
                verification_max_abs_diff DOUBLE,
                verification_adapter_effect DOUBLE,
                verification_reference_effect DOUBLE,
                verification_prompt VARCHAR,
                verification_detail VARCHAR
            )""",
            f"""CREATE TABLE adapter_events (
{ENVELOPE_COLUMNS}
                adapter_id VARCHAR NOT NULL,
                verb VARCHAR NOT NULL,
                previous_champion_id VARCHAR,
                from_adapter_id VARCHAR,
                to_adapter_id VARCHAR,
                reason VARCHAR,
                gate_decision_id VARCHAR,
                model VARCHAR
            )""",
            # The model an adapter belongs to: as trained, else as its events name it.
            """CREATE VIEW adapter_models AS
            SELECT adapter_id, coalesce(
                max(CASE WHEN source = 'trained' THEN model END),
                max(CASE WHEN source = 'event' THEN model END),
                ''
            ) AS model
            FROM (
                SELECT adapter_id, nullif(model, '') AS model, 'trained' AS source FROM adapters
                UNION ALL
                SELECT adapter_id, nullif(model, ''), 'event' FROM adapter_events
                UNION ALL
                SELECT to_adapter_id, nullif(model, ''), 'event' FROM adapter_events
                WHERE verb = 'rolled_back' AND to_adapter_id <> ''
            )
            GROUP BY adapter_id""",
            # Every change of a model's champion: a promotion, or a rollback ('' = the base model).
            """CREATE VIEW champion_changes AS
            SELECT
                coalesce(nullif(e.model, ''), nullif(crowned.model, ''), nullif(about.model, ''), '')
                    AS model,
                CASE WHEN e.verb = 'promoted' THEN e.adapter_id ELSE e.to_adapter_id END AS adapter_id,
                CASE WHEN e.verb = 'promoted' THEN e.previous_champion_id ELSE e.from_adapter_id END
                    AS previous_adapter_id,
                e.verb,
                e.reason,
                e.gate_decision_id,
                e.event_id,
                e.stream_sequence,
                e.occurred_at
            FROM adapter_events e
            LEFT JOIN adapter_models crowned ON crowned.adapter_id =
                CASE WHEN e.verb = 'promoted' THEN e.adapter_id ELSE e.to_adapter_id END
            LEFT JOIN adapter_models about ON about.adapter_id = e.adapter_id
            WHERE e.verb IN ('promoted', 'rolled_back')""",
            """CREATE VIEW current_champions AS
            SELECT * FROM champion_changes
            QUALIFY row_number() OVER (PARTITION BY model ORDER BY stream_sequence DESC) = 1""",
            # Each adapter's state after its events in stream order: trained -> candidate, promoted ->
            # champion (retiring the previous champion), rejected, rolled back from -> retired, rolled
            # back to -> champion. A champion whose model later crowned another adapter is retired too.
            """CREATE VIEW adapter_states AS
            WITH changes AS (
                SELECT adapter_id,
                    CASE WHEN state IN ('champion', 'rejected', 'retired') THEN state ELSE 'candidate' END
                        AS state,
                    'trained' AS changed_by, 0 AS priority, stream_sequence, occurred_at, reason,
                    '' AS gate_decision_id
                FROM adapters
                UNION ALL
                SELECT adapter_id, 'champion', 'promoted', 1, stream_sequence, occurred_at, reason,
                    gate_decision_id
                FROM adapter_events WHERE verb = 'promoted'
                UNION ALL
                SELECT previous_champion_id, 'retired', 'promoted', 0, stream_sequence, occurred_at, reason,
                    gate_decision_id
                FROM adapter_events WHERE verb = 'promoted' AND previous_champion_id <> ''
                UNION ALL
                SELECT adapter_id, 'rejected', 'rejected', 0, stream_sequence, occurred_at, reason,
                    gate_decision_id
                FROM adapter_events WHERE verb = 'rejected'
                UNION ALL
                SELECT from_adapter_id, 'retired', 'rolled_back', 0, stream_sequence, occurred_at, reason, ''
                FROM adapter_events WHERE verb = 'rolled_back'
                UNION ALL
                SELECT to_adapter_id, 'champion', 'rolled_back', 1, stream_sequence, occurred_at, reason, ''
                FROM adapter_events WHERE verb = 'rolled_back' AND to_adapter_id <> ''
            ),
            latest AS (
                SELECT * FROM changes
                QUALIFY row_number() OVER (
                    PARTITION BY adapter_id ORDER BY stream_sequence DESC, priority DESC
                ) = 1
            ),
            superseded AS (
                SELECT l.adapter_id, min(c.stream_sequence) AS stream_sequence, arg_min(c.occurred_at,
                    c.stream_sequence) AS occurred_at
                FROM latest l
                JOIN adapter_models m USING (adapter_id)
                JOIN champion_changes c ON c.model = m.model AND c.stream_sequence > l.stream_sequence
                WHERE l.state = 'champion'
                GROUP BY l.adapter_id
            )
            SELECT
                l.adapter_id,
                m.model,
                CASE WHEN s.adapter_id IS NULL THEN l.state ELSE 'retired' END AS state,
                CASE WHEN s.adapter_id IS NULL THEN l.changed_by ELSE 'superseded' END AS changed_by,
                coalesce(s.stream_sequence, l.stream_sequence) AS changed_sequence,
                coalesce(s.occurred_at, l.occurred_at) AS changed_at,
                l.reason,
                l.gate_decision_id
            FROM latest l
            JOIN adapter_models m USING (adapter_id)
            LEFT JOIN superseded s USING (adapter_id)""",
        ),
    ),
    Migration(
        6,
        "evaluations, gate decisions and cycles",
        (
            f"""CREATE TABLE evaluation_runs (
{ENVELOPE_COLUMNS}
                run_id VARCHAR NOT NULL,
                koan_set VARCHAR NOT NULL,
                family VARCHAR NOT NULL,
                requested_adapter VARCHAR NOT NULL,
                repeats INTEGER NOT NULL,
                seed UBIGINT NOT NULL,
                max_attempts INTEGER NOT NULL,
                model VARCHAR NOT NULL,
                request_correlation_id VARCHAR NOT NULL,
                koan_ids VARCHAR[] NOT NULL,
                koan_count INTEGER NOT NULL
            )""",
            f"""CREATE TABLE koan_evaluations (
{ENVELOPE_COLUMNS}
                run_id VARCHAR NOT NULL,
                koan_id VARCHAR NOT NULL,
                family VARCHAR NOT NULL,
                "repeat" INTEGER NOT NULL,
                passed BOOLEAN NOT NULL,
                attempts INTEGER NOT NULL,
                passed_first_attempt BOOLEAN NOT NULL,
                error_codes VARCHAR[] NOT NULL,
                task_id VARCHAR NOT NULL
            )""",
            f"""CREATE TABLE evaluation_summaries (
{ENVELOPE_COLUMNS}
                run_id VARCHAR NOT NULL,
                koan_set VARCHAR NOT NULL,
                adapter_id VARCHAR NOT NULL,
                requested_adapter VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                family VARCHAR NOT NULL,
                total INTEGER NOT NULL,
                passed INTEGER NOT NULL,
                pass_rate DOUBLE NOT NULL,
                pass_at_1 DOUBLE NOT NULL,
                pass_rate_low DOUBLE NOT NULL,
                pass_rate_high DOUBLE NOT NULL,
                pass_rate_mean DOUBLE NOT NULL,
                pass_at_1_low DOUBLE NOT NULL,
                pass_at_1_high DOUBLE NOT NULL,
                median_attempts DOUBLE NOT NULL,
                mean_attempts DOUBLE NOT NULL,
                repeat_error_rate DOUBLE NOT NULL,
                families STRUCT(family VARCHAR, passed UINTEGER, total UINTEGER, pass_rate DOUBLE)[] NOT NULL,
                error_codes MAP(VARCHAR, UINTEGER) NOT NULL,
                finished BOOLEAN NOT NULL,
                repeats INTEGER NOT NULL,
                seed UBIGINT NOT NULL,
                max_attempts INTEGER NOT NULL,
                evaluated INTEGER NOT NULL,
                expected INTEGER NOT NULL,
                summary_correlation_id VARCHAR NOT NULL
            )""",
            f"""CREATE TABLE gate_decisions (
{ENVELOPE_COLUMNS}
                decision_id VARCHAR NOT NULL,
                adapter_id VARCHAR NOT NULL,
                promote BOOLEAN NOT NULL,
                reason VARCHAR NOT NULL,
                reasons VARCHAR[] NOT NULL,
                regressions INTEGER NOT NULL,
                gains INTEGER NOT NULL,
                heldout_delta DOUBLE NOT NULL,
                candidate_run_id VARCHAR NOT NULL,
                champion_run_id VARCHAR NOT NULL,
                candidate_heldout_run_id VARCHAR NOT NULL,
                champion_heldout_run_id VARCHAR NOT NULL,
                candidate_pass_rate DOUBLE NOT NULL,
                champion_pass_rate DOUBLE NOT NULL,
                sign_test_p DOUBLE NOT NULL,
                policy MAP(VARCHAR, VARCHAR) NOT NULL,
                decision_correlation_id VARCHAR NOT NULL
            )""",
            f"""CREATE TABLE cycle_phases (
{ENVELOPE_COLUMNS}
                cycle_id VARCHAR NOT NULL,
                cycle INTEGER NOT NULL,
                phase VARCHAR NOT NULL,
                verb VARCHAR NOT NULL,
                run_ids VARCHAR[],
                job_id VARCHAR,
                adapter_id VARCHAR,
                seconds DOUBLE,
                error VARCHAR
            )""",
            f"""CREATE TABLE cycle_requests (
{ENVELOPE_COLUMNS}
                cycle_id VARCHAR NOT NULL,
                cycles INTEGER NOT NULL,
                recipe VARCHAR NOT NULL,
                preset VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                repeats INTEGER NOT NULL,
                quick BOOLEAN NOT NULL,
                overrides MAP(VARCHAR, VARCHAR) NOT NULL,
                recipe_parameters MAP(VARCHAR, VARCHAR) NOT NULL,
                max_attempts INTEGER NOT NULL,
                seed UBIGINT NOT NULL,
                day_set VARCHAR NOT NULL,
                eval_family VARCHAR NOT NULL,
                policy MAP(VARCHAR, VARCHAR) NOT NULL
            )""",
            f"""CREATE TABLE cycle_rounds (
{ENVELOPE_COLUMNS}
                cycle_id VARCHAR NOT NULL,
                phase VARCHAR NOT NULL,
                cycle INTEGER NOT NULL,
                day_run_id VARCHAR NOT NULL,
                job_id VARCHAR NOT NULL,
                adapter_id VARCHAR NOT NULL,
                champion_adapter_id VARCHAR NOT NULL,
                candidate_frozen_run_id VARCHAR NOT NULL,
                champion_frozen_run_id VARCHAR NOT NULL,
                candidate_heldout_run_id VARCHAR NOT NULL,
                champion_heldout_run_id VARCHAR NOT NULL,
                decision_id VARCHAR,
                promote BOOLEAN,
                phase_seconds MAP(VARCHAR, DOUBLE) NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "dead letters",
        (
            # Messages no rule could project, kept with their bytes; written with the position move.
            """CREATE TABLE dead_letters (
                consumer VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                stream_sequence BIGINT NOT NULL,
                subject VARCHAR NOT NULL,
                event_id VARCHAR,
                type VARCHAR,
                reason VARCHAR NOT NULL,
                raw BLOB NOT NULL,
                recorded_at TIMESTAMP NOT NULL,
                PRIMARY KEY (consumer, stream, stream_sequence)
            )""",
        ),
    ),
    Migration(
        8,
        "metric views",
        (
            # Per run and koan: the majority over repeats (a tie does not pass). A koan repeat
            # evaluated twice (a resumed run) counts once, with its latest result.
            """CREATE VIEW run_outcomes AS
            WITH latest AS (
                SELECT * FROM koan_evaluations
                QUALIFY row_number() OVER (
                    PARTITION BY run_id, koan_id, "repeat" ORDER BY stream_sequence DESC
                ) = 1
            )
            SELECT
                run_id,
                koan_id,
                arg_max(family, stream_sequence) AS family,
                count(*) AS repeats,
                count(*) FILTER (WHERE passed) AS passes,
                count(*) FILTER (WHERE passed_first_attempt) AS first_attempt_passes,
                2 * count(*) FILTER (WHERE passed) > count(*) AS passed,
                2 * count(*) FILTER (WHERE passed_first_attempt) > count(*) AS passed_first_attempt,
                avg(attempts) AS mean_attempts
            FROM latest
            GROUP BY run_id, koan_id""",
            """CREATE VIEW run_pass_rates AS
            SELECT
                run_id,
                count(*) AS koans,
                count(*) FILTER (WHERE passed) AS passed,
                count(*) FILTER (WHERE passed) / count(*) AS pass_rate,
                count(*) FILTER (WHERE passed_first_attempt) AS passed_first_attempt,
                count(*) FILTER (WHERE passed_first_attempt) / count(*) AS pass_at_1
            FROM run_outcomes
            GROUP BY run_id""",
            """CREATE VIEW run_family_rates AS
            SELECT
                run_id,
                family,
                count(*) AS koans,
                count(*) FILTER (WHERE passed) AS passed,
                count(*) FILTER (WHERE passed) / count(*) AS pass_rate
            FROM run_outcomes
            GROUP BY run_id, family""",
            """CREATE VIEW attempt_error_codes AS
            SELECT
                event_id, task_id, koan_id, run_id, adapter_id, model, number, status,
                generate_subscripts(error_codes, 1) AS position,
                unnest(error_codes) AS error_code
            FROM attempts""",
            # Two consecutive failed attempts of one task with the same first error code; one row
            # per pair, at the later attempt. An attempt recorded twice counts once (the latest).
            """CREATE VIEW repeat_errors AS
            WITH latest AS (
                SELECT * FROM attempts
                QUALIFY row_number() OVER (PARTITION BY task_id, number ORDER BY stream_sequence DESC) = 1
            ),
            paired AS (
                SELECT
                    task_id, koan_id, run_id, adapter_id, model, number, passed, first_error_code,
                    lag(number) OVER w AS previous_number,
                    lag(passed) OVER w AS previous_passed,
                    lag(first_error_code) OVER w AS previous_error_code
                FROM latest
                WINDOW w AS (PARTITION BY task_id ORDER BY number)
            )
            SELECT task_id, koan_id, run_id, adapter_id, model, previous_number, number,
                first_error_code AS error_code
            FROM paired
            WHERE NOT passed AND NOT previous_passed AND previous_number = number - 1
                AND first_error_code = previous_error_code""",
        ),
    ),
    Migration(
        9,
        "attempt timing and resamples",
        (
            # Where an attempt's generation time goes: prompt evaluation vs decoding (0 for older events).
            "ALTER TABLE attempts ADD COLUMN prompt_seconds DOUBLE NOT NULL DEFAULT 0",
            "ALTER TABLE attempts ADD COLUMN reused_prompt_tokens INTEGER NOT NULL DEFAULT 0",
            # Answers a retry discarded because they repeated a program known to fail, and their cost.
            "ALTER TABLE attempts ADD COLUMN resamples INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE attempts ADD COLUMN resample_seconds DOUBLE NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        10,
        "cycle day attempts and reuse",
        (
            # The day's own attempt budget, and whether the cycle measured everything again (0 / false
            # for older events: the day had max_attempts, finished runs were reused only round to round).
            "ALTER TABLE cycle_requests ADD COLUMN day_max_attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE cycle_requests ADD COLUMN fresh BOOLEAN NOT NULL DEFAULT false",
        ),
    ),
)


# Prefix of the names a batch's Arrow tables are registered under while they are inserted.
BATCH_RELATION = "projection_batch_rows"


@dataclass(frozen=True)
class EventWrite:
    """One event of a batch: its rows, or None when the projections ignore its type (the position moves)."""

    sequence: int
    event_id: str
    event_type: str
    rows: Sequence[RowInsert] | None


@dataclass(frozen=True)
class DeadLetterWrite:
    """One message of a batch the projections cannot use: a `dead_letters` row."""

    sequence: int
    subject: str
    event_id: str | None
    event_type: str | None
    reason: str
    raw: bytes


BatchWrite = EventWrite | DeadLetterWrite


class StoreError(RuntimeError):
    """The DuckDB file cannot be used by this version of the evaluator."""


@dataclass(frozen=True)
class Relation:
    """One table or view of a snapshot: its CREATE statement and, for a table, its rows."""

    name: str
    kind: str  # "table" or "view"
    sql: str
    rows: pyarrow.Table | None  # None for a view: it is recomputed from the tables


@dataclass(frozen=True)
class Snapshot:
    """Every table of the store as of one moment between two projection writes."""

    schema_version: int
    taken_at: datetime
    positions: tuple[tuple[str, str, int], ...]  # (consumer, stream, last_sequence)
    relations: tuple[Relation, ...]

    @property
    def tables(self) -> list[Relation]:
        return [r for r in self.relations if r.kind == "table"]

    @property
    def views(self) -> list[Relation]:
        return [r for r in self.relations if r.kind == "view"]


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rows_by_table(rows: Sequence[RowInsert]) -> dict[tuple[str, tuple[str, ...]], list[RowInsert]]:
    """Rows grouped by (table, columns), groups and rows in the order they first appear."""
    grouped: dict[tuple[str, tuple[str, ...]], list[RowInsert]] = {}
    for r in rows:
        grouped.setdefault((r.table, tuple(r.row)), []).append(r)
    return grouped


def sql_string(value: str) -> str:
    """`value` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def position_statement(consumer: str, stream: str, sequence: int, known: bool) -> str:
    """The statement that moves a consumer's position: an UPDATE of the row once it exists (a third
    of the cost of an upsert), an upsert before."""
    consumer_sql, stream_sql, sequence_sql = sql_string(consumer), sql_string(stream), int(sequence)
    if known:
        return (
            f"UPDATE projection_positions SET last_sequence = {sequence_sql} "
            f"WHERE consumer = {consumer_sql} AND stream = {stream_sql}"
        )
    return (
        f"INSERT INTO projection_positions VALUES ({consumer_sql}, {stream_sql}, {sequence_sql}) "
        "ON CONFLICT (consumer, stream) DO UPDATE SET last_sequence = excluded.last_sequence"
    )


def first_writes(items: Sequence[BatchWrite]) -> list[EventWrite]:
    """The events of a batch that have rows, each event id once (its first delivery), in order."""
    seen: set[str] = set()
    out = []
    for item in items:
        if isinstance(item, EventWrite) and item.rows is not None and item.event_id not in seen:
            seen.add(item.event_id)
            out.append(item)
    return out


def insert_statements(rows: Sequence[RowInsert]) -> list[tuple[str, list[list[object]]]]:
    """Group rows by (table, columns) into INSERT statements with their parameter lists, in order."""
    grouped: dict[tuple[str, tuple[str, ...]], list[list[object]]] = {}
    for r in rows:
        key = (r.table, tuple(r.row))
        grouped.setdefault(key, []).append(list(r.row.values()))
    statements = []
    for (table, columns), params in grouped.items():
        cols = ", ".join(quote_identifier(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        statements.append((f"INSERT INTO {quote_identifier(table)} ({cols}) VALUES ({marks})", params))
    return statements


class ProjectionStore:
    """The DuckDB file of the projections. Open with `await ProjectionStore.open(path)`."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path):
        self.path = path
        self._conn = conn
        self._cursor_lock = threading.Lock()
        self._writer = conn.cursor()
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer")
        self._closed = False
        # (table, columns) -> the Arrow schema DuckDB gives those columns; the schema never changes
        # while the store is open (migrations run before anything is written).
        self._arrow_schemas: dict[tuple[str, tuple[str, ...]], pyarrow.Schema] = {}
        # (consumer, stream) -> last committed sequence. The writer cursor is the file's only writer,
        # so once read, a position changes only by a commit here (which updates this).
        self._positions: dict[tuple[str, str], int] = {}

    @classmethod
    async def open(cls, path: Path) -> ProjectionStore:
        """Open (creating if missing) the file and bring its schema up to date."""
        path = Path(path)
        conn = await asyncio.to_thread(_connect, path)
        store = cls(conn, path)
        try:
            applied = await store._write(store._migrate)
        except BaseException:
            await store.close()
            raise
        if applied:
            log.info("%s: applied migrations %s", path, applied)
        return store

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the same instance, for one reader on one thread."""
        with self._cursor_lock:
            return self._conn.cursor()

    async def apply(
        self,
        *,
        consumer: str,
        stream: str,
        sequence: int,
        event_id: str,
        event_type: str,
        rows: Sequence[RowInsert] | None,
    ) -> bool:
        """Write an event's rows and the consumer's new position in one transaction.

        `rows` None means the projections ignore this event type: only the position moves.
        Returns True when rows were written. A sequence at or behind the stored position (a
        redelivery) changes nothing; an event id already projected (the same event stored
        again at a later sequence) only moves the position.
        """
        return await self._write(self._apply, consumer, stream, sequence, event_id, event_type, rows)

    async def apply_batch(self, *, consumer: str, stream: str, items: Sequence[BatchWrite]) -> list[bool]:
        """Write consecutive messages of one stream and the position of the last, in one transaction.

        `items` are in stream order. Each event is written as `apply` would write it alone: an item
        at or behind the stored position changes nothing, an event id already projected (by an
        earlier batch, or earlier in this one) only moves the position. Returns, per item, True when
        it added rows (an event) or was recorded (a dead letter). Any error rolls the whole batch
        back, the position included.
        """
        return await self._write(self._apply_batch, consumer, stream, list(items))

    async def dead_letter(
        self,
        *,
        consumer: str,
        stream: str,
        sequence: int,
        subject: str,
        event_id: str | None,
        event_type: str | None,
        reason: str,
        raw: bytes,
    ) -> bool:
        """Record a message the projections cannot use and move the position past it, in one transaction.

        Returns False for a redelivery (a sequence at or behind the stored position): nothing changes.
        """
        return await self._write(
            self._dead_letter, consumer, stream, sequence, subject, event_id, event_type, reason, raw
        )

    async def snapshot(self) -> Snapshot:
        """Every table's rows (as Arrow) and every table's and view's DDL, read between two writes."""
        return await self._write(self._snapshot)

    async def position(self, consumer: str, stream: str) -> int:
        """The last stream sequence committed by `consumer` on `stream` (0 when none)."""
        return await self._write(self._position, consumer, stream)

    async def schema_version(self) -> int:
        return await self._write(self._schema_version)

    async def close(self) -> None:
        """Finish pending writes and close the file (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._writer_thread.shutdown, True)
        self._writer.close()
        self._conn.close()

    async def _write(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    def _schema_version(self) -> int:
        row = self._writer.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def _migrate(self) -> list[int]:
        cur = self._writer
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name VARCHAR NOT NULL,
                applied_at TIMESTAMP NOT NULL
            )"""
        )
        current = self._schema_version()
        known = max(m.version for m in MIGRATIONS)
        if current > known:
            raise StoreError(f"{self.path} has schema version {current}, newer than this evaluator's {known}")
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            cur.execute("BEGIN TRANSACTION")
            try:
                for statement in migration.statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    [migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None)],
                )
                cur.execute("COMMIT")
            except BaseException:
                _rollback_quietly(cur)
                raise
            applied.append(migration.version)
        return applied

    def _position(self, consumer: str, stream: str) -> int:
        key = (consumer, stream)
        if key not in self._positions:
            # fetchall, not fetchone: a result left unfinished keeps the cursor from registering Arrow.
            rows = self._writer.execute(
                "SELECT last_sequence FROM projection_positions WHERE consumer = ? AND stream = ?",
                [consumer, stream],
            ).fetchall()
            self._positions[key] = int(rows[0][0]) if rows else 0
        return self._positions[key]

    def _apply(
        self,
        consumer: str,
        stream: str,
        sequence: int,
        event_id: str,
        event_type: str,
        rows: Sequence[RowInsert] | None,
    ) -> bool:
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            if sequence <= self._position(consumer, stream):
                cur.execute("ROLLBACK")
                return False
            written = False
            if rows is not None:
                seen = cur.execute("SELECT 1 FROM projected_events WHERE event_id = ?", [event_id]).fetchone()
                if seen is None:
                    for sql, params in insert_statements(rows):
                        if len(params) == 1:
                            cur.execute(sql, params[0])
                        else:
                            cur.executemany(sql, params)
                    cur.execute(
                        "INSERT INTO projected_events VALUES (?, ?, ?, ?)",
                        [event_id, event_type, stream, sequence],
                    )
                    written = True
            self._move_position(consumer, stream, sequence)
            cur.execute("COMMIT")
        except BaseException:
            _rollback_quietly(cur)
            raise
        self._positions[(consumer, stream)] = sequence
        return written

    def _apply_batch(self, consumer: str, stream: str, items: list[BatchWrite]) -> list[bool]:
        try:
            # Most batches hold no event projected before: insert them without looking, and let
            # the primary key of projected_events catch the rare one that was.
            return self._apply_batch_once(consumer, stream, items, look_up_ids=False)
        except duckdb.ConstraintException:
            return self._apply_batch_once(consumer, stream, items, look_up_ids=True)

    def _apply_batch_once(
        self, consumer: str, stream: str, items: list[BatchWrite], look_up_ids: bool
    ) -> list[bool]:
        position = self._position(consumer, stream)
        fresh = [item for item in items if item.sequence > position]
        if not fresh:
            return [False] * len(items)
        written = first_writes(fresh)
        if look_up_ids and written:
            seen = self._projected_ids([w.event_id for w in written])
            written = [w for w in written if w.event_id not in seen]
        letters = [item for item in fresh if isinstance(item, DeadLetterWrite)]
        inserts = self._batch_tables(consumer, stream, written, letters)
        last = max(item.sequence for item in fresh)
        names = [f"{BATCH_RELATION}_{i}" for i in range(len(inserts))]
        statements = [
            "BEGIN TRANSACTION",
            *(
                f"INSERT INTO {quote_identifier(table)} ({', '.join(map(quote_identifier, columns))}) "
                f"SELECT * FROM {name}"
                for (table, columns, _), name in zip(inserts, names, strict=True)
            ),
            position_statement(consumer, stream, last, known=position > 0),
            "COMMIT",
        ]
        cur = self._writer
        # One statement list, one execute: the writer thread waits for the GIL once per batch,
        # not once per statement (a wait as long as the switch interval when the loop is busy).
        for name, (_, _, table) in zip(names, inserts, strict=True):
            cur.register(name, table)
        try:
            cur.execute(";\n".join(statements)).fetchall()
        except BaseException:
            _rollback_quietly(cur)
            raise
        finally:
            for name in names:
                cur.unregister(name)
        self._positions[(consumer, stream)] = last
        recorded = {id(item) for item in letters} | {id(item) for item in written}
        return [id(item) in recorded for item in items]

    def _batch_tables(
        self, consumer: str, stream: str, written: list[EventWrite], letters: list[DeadLetterWrite]
    ) -> list[tuple[str, tuple[str, ...], pyarrow.Table]]:
        """(table, columns, rows as Arrow) of everything a batch inserts, in the order it goes in."""
        out = []
        if written:
            projected = [
                {
                    "event_id": w.event_id,
                    "type": w.event_type,
                    "stream": stream,
                    "stream_sequence": w.sequence,
                }
                for w in written
            ]
            out.append(self._arrow_rows("projected_events", tuple(projected[0]), projected))
            rows = [r for w in written for r in w.rows]
            for (table, columns), group in rows_by_table(rows).items():
                out.append(self._arrow_rows(table, columns, [r.row for r in group]))
        if letters:
            recorded_at = datetime.now(UTC).replace(tzinfo=None)
            dead = [
                {
                    "consumer": consumer,
                    "stream": stream,
                    "stream_sequence": d.sequence,
                    "subject": d.subject,
                    "event_id": d.event_id,
                    "type": d.event_type,
                    "reason": d.reason,
                    "raw": bytes(d.raw),
                    "recorded_at": recorded_at,
                }
                for d in letters
            ]
            out.append(self._arrow_rows("dead_letters", tuple(dead[0]), dead))
        return out

    def _arrow_rows(
        self, table: str, columns: tuple[str, ...], rows: list[Mapping[str, object]]
    ) -> tuple[str, tuple[str, ...], pyarrow.Table]:
        """Rows (mappings of every one of `columns`) as an Arrow table of the types DuckDB gives
        those columns; a value that does not fit raises before anything is written."""
        return table, columns, pyarrow.Table.from_pylist(rows, schema=self._arrow_schema(table, columns))

    def _projected_ids(self, event_ids: list[str]) -> set[str]:
        """Which of `event_ids` are in projected_events already."""
        rows = self._writer.execute(
            "SELECT event_id FROM projected_events WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
            [event_ids],
        ).fetchall()
        return {event_id for (event_id,) in rows}

    def _arrow_schema(self, table: str, columns: tuple[str, ...]) -> pyarrow.Schema:
        key = (table, columns)
        schema = self._arrow_schemas.get(key)
        if schema is None:
            cols = ", ".join(quote_identifier(c) for c in columns)
            schema = (
                self._writer.sql(f"SELECT {cols} FROM {quote_identifier(table)} LIMIT 0")
                .to_arrow_table()
                .schema
            )
            self._arrow_schemas[key] = schema
        return schema

    def _move_position(self, consumer: str, stream: str, sequence: int) -> None:
        # An UPDATE costs a third of an INSERT ... ON CONFLICT DO UPDATE; the row exists after the first.
        ((updated,),) = self._writer.execute(
            "UPDATE projection_positions SET last_sequence = ? WHERE consumer = ? AND stream = ?",
            [sequence, consumer, stream],
        ).fetchall()
        if not updated:
            self._writer.execute(
                "INSERT INTO projection_positions VALUES (?, ?, ?)", [consumer, stream, sequence]
            ).fetchall()

    def _dead_letter(
        self,
        consumer: str,
        stream: str,
        sequence: int,
        subject: str,
        event_id: str | None,
        event_type: str | None,
        reason: str,
        raw: bytes,
    ) -> bool:
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            if sequence <= self._position(consumer, stream):
                cur.execute("ROLLBACK")
                return False
            cur.execute(
                "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    consumer,
                    stream,
                    sequence,
                    subject,
                    event_id,
                    event_type,
                    reason,
                    bytes(raw),
                    datetime.now(UTC).replace(tzinfo=None),
                ],
            )
            self._move_position(consumer, stream, sequence)
            cur.execute("COMMIT")
        except BaseException:
            _rollback_quietly(cur)
            raise
        self._positions[(consumer, stream)] = sequence
        return True

    def _snapshot(self) -> Snapshot:
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            version = self._schema_version()
            positions = cur.execute(
                "SELECT consumer, stream, last_sequence FROM projection_positions ORDER BY consumer, stream"
            ).fetchall()
            where = "database_name = current_database() AND schema_name = 'main' AND NOT internal"
            tables = cur.execute(
                f"SELECT table_name, sql FROM duckdb_tables() WHERE {where} ORDER BY table_name"
            ).fetchall()
            views = cur.execute(
                f"SELECT view_name, sql FROM duckdb_views() WHERE {where} ORDER BY view_name"
            ).fetchall()
            relations = [
                Relation(
                    name, "table", sql, cur.sql(f"SELECT * FROM {quote_identifier(name)}").to_arrow_table()
                )
                for name, sql in tables
            ]
            relations += [Relation(name, "view", sql, None) for name, sql in views]
        finally:
            _rollback_quietly(cur)
        return Snapshot(
            schema_version=version,
            taken_at=datetime.now(UTC).replace(tzinfo=None),
            positions=tuple((c, s, int(n)) for c, s, n in positions),
            relations=tuple(relations),
        )


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), config=DUCKDB_CONFIG)


def _rollback_quietly(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.warning("rollback failed: %s", exc)
