"""Event handlers: one module per event kind, plus the routing that main.py delegates to."""
