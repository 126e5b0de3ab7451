"""Uploaded models and datasets: the inputs of jobs."""
