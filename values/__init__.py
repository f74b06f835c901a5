"""The ground floor: value types shared by every layer (no I/O, no imports above `errors` / `logs`).

`messages` (object versions, Pub/Sub envelopes, outgoing events), `tables` (warehouse columns and
targets, the BigQuery type vocabulary), `definitions` (table definition files), `identifiers`
(allow-listed SQL names) and `reasons` (stable error labels for log-based metrics).
"""
