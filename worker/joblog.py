"""A job's own log, for its user: the `job_logs` rows behind `GET /v1/jobs/{id}/logs` and the event stream.

What goes in: the worker's steps for the job (attempt started, inputs fetched), each new stage and phase, the
warnings the job's process logged, the traceback of a failure the user caused, and the final state. Nothing of the
server's: every line passes `redact`, which replaces the scratch directory, the data directory, the Python
installation and the service's source tree with placeholders, and the database and broker URLs with `<hidden>`.

Lines are buffered and written in batches (at most every `FLUSH_INTERVAL_S`, or `FLUSH_LINES` at once), so a
chatty job costs few transactions; a job keeps at most `job_log_max_lines`, the last of which says lines were
dropped.
"""

from __future__ import annotations

import logging
import re
import sys
import sysconfig
import time
from pathlib import Path

from sqlalchemy import func, select

from core.config import Settings
from core.db.models import Job, JobLog, utcnow
from core.db.session import session_scope

log = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 1.0
FLUSH_LINES = 50
MESSAGE_CHARS = 8000
SOURCE_ROOT = Path(__file__).resolve().parents[1]
# A path left in a traceback line after the known prefixes were replaced: keep only the file name.
_TRACEBACK_PATH = re.compile(r'File "(/[^"]*/)([^/"]+)"')


class Redactor:
    def __init__(self, settings: Settings, scratch: Path | None = None):
        places = {str(SOURCE_ROOT): "<modelpress>", str(settings.data_dir.resolve()): "<data>"}
        for name in ("purelib", "platlib", "stdlib", "platstdlib"):
            places[sysconfig.get_paths()[name]] = "<python>"
        places[sys.prefix] = places[sys.base_prefix] = "<python>"
        if scratch is not None:
            places[str(scratch)] = "<job>"
        for url in (settings.resolved_database_url, settings.resolved_broker_url):
            places[url] = "<hidden>"
        # Longest first, so a directory inside another gets its own placeholder.
        self.places = sorted(places.items(), key=lambda item: -len(item[0]))

    def __call__(self, text: str) -> str:
        for place, shown in self.places:
            text = text.replace(place, shown)
        return _TRACEBACK_PATH.sub(r'File "\2"', text)[:MESSAGE_CHARS]


class JobLogWriter:
    """Appends lines to one job's log; call `flush()` when the job ends (`close()` adds its final state)."""

    def __init__(self, job_id: str, settings: Settings):
        self.job_id, self.max_lines = job_id, settings.job_log_max_lines
        self.redact = Redactor(settings)
        try:
            with session_scope() as session:  # an earlier attempt's lines stay: seq continues after them
                self.seq = session.scalar(select(func.coalesce(func.max(JobLog.seq), 0))
                                          .where(JobLog.job_id == job_id))
        except Exception:  # the user's log is worth less than the job: run it without one
            log.exception("job %s: cannot read its log; this attempt keeps none", job_id)
            self.seq = self.max_lines
        self.pending: list[JobLog] = []
        self.last_flush = time.monotonic()

    def use_scratch(self, settings: Settings, scratch: Path) -> None:
        self.redact = Redactor(settings, scratch)

    def add(self, level: str, source: str, message: str) -> None:
        if self.seq >= self.max_lines:
            return
        self.seq += 1
        if self.seq == self.max_lines:
            level, source, message = "WARNING", "worker", f"log limit of {self.max_lines} lines reached; later " \
                                                          "lines of this job are not kept"
        self.pending.append(JobLog(job_id=self.job_id, seq=self.seq, at=utcnow(), level=level, source=source,
                                   message=self.redact(message)))
        if len(self.pending) >= FLUSH_LINES or time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        lines, self.pending, self.last_flush = self.pending, [], time.monotonic()
        if not lines:
            return
        try:
            with session_scope() as session:
                session.add_all(lines)
        except Exception:  # the user's log is worth less than the job: never fail the job over it
            log.exception("job %s: could not store %d log lines", self.job_id, len(lines))

    def close(self) -> None:
        """Add the job's final state (read back from its row, whichever path finished it) and write everything."""
        try:
            with session_scope() as session:
                status, code, message = session.execute(select(Job.status, Job.error_code, Job.error_message)
                                                         .where(Job.id == self.job_id)).one()
        except Exception:
            log.exception("job %s: cannot read its final state for its log", self.job_id)
            self.flush()
            return
        if code:
            self.add("ERROR" if status == "failed" else "INFO", "worker", f"job {status}: {code}: {message}")
        else:
            self.add("INFO", "worker", f"job {status}")
        self.flush()
