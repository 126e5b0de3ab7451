"""Celery worker: turns job rows into compression-library calls and library results into rows and artifacts."""
