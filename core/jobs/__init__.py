"""Jobs as rows: their status, their stored spec, their artifacts, and every transition of their state."""
