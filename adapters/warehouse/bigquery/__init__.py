"""BigQuery: the warehouse (`warehouse.BigQueryWarehouse`) and what it builds on: `jobs` (ids, labels,
parameters, vendor errors), `schema` (SchemaFields, new tables, drift) and `sql` (the apply script)."""
