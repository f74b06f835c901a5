"""One reader per source format behind `pipeline.read.read_batches`, plus the byte-stream layers they share."""
