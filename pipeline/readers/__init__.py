"""One reader per source format behind `pipeline.read.read_batches`, plus the byte-stream layers they share.

Readers build the types of `pipeline.source`; they never import `pipeline.read` (no import circle).
"""
