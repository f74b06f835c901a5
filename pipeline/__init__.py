"""Ingestion stages for one source file: read → validate → stage → load (one module per stage)."""
