"""Shared infrastructure of the API (`app/`) and the worker (`worker/`): settings, database, blob store, queue and
broker, and job state. Both depend on it; it depends on neither (and never imports torch)."""
