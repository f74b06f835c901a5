"""External-service adapters (Dataform, Power BI): vendor errors become PermanentError / TransientError here."""
