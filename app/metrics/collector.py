"""Job, queue and worker figures read from the database when Prometheus scrapes."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from core.config import get_settings
from core.db.models import Job, utcnow
from core.db.session import session_scope
from core.jobs.status import ACTIVE, FINISHED, JobStatus
from core.workers import known_workers

DURATION_WINDOW = timedelta(hours=24)


class JobCollector:
    def collect(self):
        now = utcnow()
        with session_scope() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            finished = session.execute(select(Job.status, Job.started_at, Job.finished_at).where(
                Job.status.in_(FINISHED), Job.started_at.is_not(None),
                Job.finished_at >= now - DURATION_WINDOW)).all()
            oldest_queued = session.scalar(select(func.min(Job.enqueued_at)).where(
                Job.status == JobStatus.QUEUED))
            heartbeats = session.scalars(select(Job.heartbeat_at).where(
                Job.status == JobStatus.RUNNING, Job.heartbeat_at.is_not(None))).all()
            queued_by_queue = dict(session.execute(select(Job.queue, func.count()).where(
                Job.status == JobStatus.QUEUED).group_by(Job.queue)).all())
            workers = known_workers(session, get_settings())

        jobs = GaugeMetricFamily("modelpress_jobs", "Jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily("modelpress_queue_depth", "Jobs queued and not yet started.",
                                value=by_status.get(JobStatus.QUEUED.value, 0))
        yield GaugeMetricFamily("modelpress_jobs_active", "Jobs queued or running.",
                                value=sum(by_status.get(status.value, 0) for status in ACTIVE))
        yield GaugeMetricFamily("modelpress_oldest_queued_job_age_seconds",
                                "How long the oldest queued job has waited (0 when none waits).",
                                value=_age(now, oldest_queued))
        yield GaugeMetricFamily("modelpress_running_job_heartbeat_age_max_seconds",
                                "Age of the stalest heartbeat among running jobs (a dead worker shows here first).",
                                value=max((_age(now, beat) for beat in heartbeats), default=0.0))
        queued = GaugeMetricFamily("modelpress_queued_jobs", "Jobs queued, by the worker queue they wait on.",
                                   labels=["queue"])
        for queue, count in sorted(queued_by_queue.items(), key=lambda item: str(item[0])):
            queued.add_metric([str(queue)], count)
        yield queued
        beats = GaugeMetricFamily("modelpress_worker_heartbeat_age_seconds",
                                  "Seconds since each registered worker's last heartbeat.",
                                  labels=["worker", "device"])
        for worker in workers:
            beats.add_metric([worker.name, worker.device], worker.heartbeat_age_s)
        yield beats
        durations = SummaryMetricFamily("modelpress_job_duration_seconds",
                                        "Run time of jobs finished in the last 24 hours, by final status.",
                                        labels=["status"])
        for status in FINISHED:
            seconds = [(end - start).total_seconds() for state, start, end in finished if state == status]
            durations.add_metric([status.value], count_value=len(seconds), sum_value=sum(seconds))
        yield durations


def _age(now, then) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None and now.tzinfo is not None:
        then = then.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - then).total_seconds())
