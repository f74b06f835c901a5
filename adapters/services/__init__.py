"""External-service adapters (Dataform, Power BI); vendor errors become Permanent/TransientError here."""
