"""Jobs side by side: what each did to its model's quality, size and speed (for `client.compare` and the CLI's
`report`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from modelpress.jobs import Job

# What a job that names no `metric` of its own (jobs from before it did) reports; all are higher-is-better.
QUALITY_METRICS = ("accuracy", "top1_agreement", "cosine")


def quality_metric(final: dict) -> str | None:
    """The figure a job is judged by: the `metric` it names (accuracy, label_spearman, similarity_spearman, ...),
    else the first of QUALITY_METRICS it has."""
    named = final.get("metric")
    if isinstance(named, str) and isinstance(final.get(named), (int, float)):
        return named
    return next((name for name in QUALITY_METRICS if name in final), None)


@dataclass(frozen=True)
class Row:
    job_id: str
    status: str
    methods: str
    metric: str | None  # the figure the job is judged by (`quality_metric`)
    baseline: float | None
    value: float | None
    size_bytes: int | None
    compression_ratio: float | None
    latency_ms: float | None  # at the smallest batch size measured
    latency_batch: str | None
    speedup: float | None


def row(job: "Job") -> Row:
    final, baseline = job.metrics.get("final") or {}, job.metrics.get("baseline") or {}
    metric = quality_metric(final)
    latency = final.get("latency_ms") or {}
    batch = min(latency, key=int) if latency else None
    return Row(job.id, job.status, "+".join(job.methods), metric, baseline.get(metric) if metric else None,
               final.get(metric) if metric else None, final.get("size_bytes"), final.get("compression_ratio"),
               latency.get(batch) if batch else None, batch,
               (final.get("speedup") or {}).get(batch) if batch else None)


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def table(self) -> str:
        """A markdown table, best quality first among the succeeded jobs."""
        header = ["job", "status", "methods", "metric", "baseline", "value", "bytes", "x smaller", "latency ms",
                  "speed-up"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in sorted(self.rows, key=lambda r: (r.value is None, -(r.value or 0))):
            cells = [r.job_id, r.status, r.methods, r.metric or "", _num(r.baseline, 4), _num(r.value, 4),
                     f"{r.size_bytes:,}" if r.size_bytes else "", _num(r.compression_ratio, 2),
                     f"{_num(r.latency_ms, 3)} (batch {r.latency_batch})" if r.latency_ms else "",
                     f"{_num(r.speedup, 2)}x" if r.speedup else ""]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def compare(jobs: Sequence["Job"]) -> Comparison:
    return Comparison([row(job) for job in jobs])


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
