"""The `caf` command line."""
