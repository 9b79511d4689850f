"""The evaluator service: projects every event into DuckDB and answers read-only queries over it."""
