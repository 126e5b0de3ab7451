"""Prometheus metrics at /metrics: HTTP traffic counted by the API processes, job and queue figures read from the
database at scrape time (so every API process answers the same)."""
