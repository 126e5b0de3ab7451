"""Accuracy, markdown tables and JSON results, the same in every benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.common.models import RESULTS
from compression.evaluate import evaluate
from compression.task import Task


def accuracy(model: torch.nn.Module, task: Task) -> float:
    """Top-1 on the task's evaluation split, to four decimals."""
    return round(evaluate(model, task.dataset.split(task.eval_split))["accuracy"], 4)


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict, indent: int = 2) -> Path:
    """bench/results/<name>, the figures behind a printed table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=indent))
    return path
