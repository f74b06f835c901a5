"""The task engine: DAGs kept in Postgres, run as batches fanned out over the publisher.

definitions (YAML → TaskDefinition) → sync (database) → scheduler (batches, children, skips,
closing) → runner (claim, run a kind, record) → kinds/ (sql, python, wait_for_files, dataform,
powerbi); retry decides when to try again, freshness says whether a table is up to date.
"""
