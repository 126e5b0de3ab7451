"""modelpress HTTP API. Never imports torch: the worker does the heavy lifting."""
