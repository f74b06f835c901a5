"""Adapters behind CAF's ports: storage, warehouse, publisher, external services."""
