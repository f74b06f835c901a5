"""The composition root: clients built from settings (`deps`) and the services wired from them (`alerts`).

Used by handlers/ and cli/; engine/ and pipeline/ never import it: they receive the ports they
need (`engine.ports.TaskPorts`, `pipeline.ports.IngestPorts`), which `deps.Deps` provides.
"""
