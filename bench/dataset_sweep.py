"""Datasets as users upload them: a sweep of dtypes, layouts and `.jsonl` variants through the code the service
runs for a dataset, with the outcome of each.

    .venv/bin/python -m bench.dataset_sweep [--only NAME ...]

Each case goes through the API's upload check (`compression.inspect.inspect_dataset`: refused = HTTP 422), the
job submission check (`app.jobs.validation.validate_job`: refused = 422), then the worker's library pipeline
(`compression.pipeline.run_pipeline` / `run_folder_pipeline` with a tiny PTQ, or KD for labelled cases), whose
exception is classified the way the worker's job process does (`worker.child_errors.describe`). A case expects
to "work" (a user would reasonably expect it to) or to be "refused"; the verdict flags a 500, an internal error,
a failure after the dry run ("late"), a refusal of what should work and a silent success of what should not.
Prints a markdown table and writes bench/results/dataset_sweep.json. Models are built here; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).parent / "results" / "dataset_sweep.json"
EVALUATION = {"latency": False, "compile": False, "max_samples": 64}
PTQ = [{"method": "ptq", "calibration_samples": 16}]
KD = [{"method": "kd", "student": {"kind": "input"}, "alpha": 0.5, "training": {"steps": 3, "batch_size": 8}}]
ROWS = 48


class ImageCNN(nn.Module):
    def __init__(self, channels: int, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class SignalCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 8, 3), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=2))


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int = 100, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, input_ids, attention_mask):
        hidden = torch.relu(self.mix(self.embed(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


class BinaryCNN(ImageCNN):
    """One logit per example: a binary classifier."""

    def __init__(self):
        super().__init__(1, classes=1)


class MultiLabelCNN(ImageCNN):
    """Independent sigmoid probabilities over 4 tags: a multi-label classifier."""

    def __init__(self):
        super().__init__(1, classes=4)

    def forward(self, x):
        return torch.sigmoid(super().forward(x))


# name -> (module factory, example inputs, classes)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple], int]] = {
    "cnn28": (lambda: ImageCNN(1), lambda n: (torch.randn(n, 1, 28, 28),), 10),
    "cnn32": (lambda: ImageCNN(3), lambda n: (torch.randn(n, 3, 32, 32),), 10),
    "binary": (BinaryCNN, lambda n: (torch.randn(n, 1, 28, 28),), 2),
    "binary2": (lambda: ImageCNN(1, classes=2), lambda n: (torch.randn(n, 1, 28, 28),), 2),
    "multilabel": (MultiLabelCNN, lambda n: (torch.randn(n, 1, 28, 28),), 2),
    "cnn1d": (SignalCNN, lambda n: (torch.randn(n, 2, 64),), 5),
    "tokens": (TokenClassifier, lambda n: (torch.randint(0, 100, (n, 12)), torch.ones(n, 12, dtype=torch.int64)),
               3),
}


def write_models(directory: Path) -> dict[str, Path]:
    from compression.io import export_model, save_program

    paths = {}
    for name, (factory, example, _) in MODELS.items():
        torch.manual_seed(0)
        model = factory().eval()
        paths[name] = save_program(export_model(model, example(4)), directory / f"{name}.pt2")
    return paths


def write_bert(directory: Path) -> Path:
    from tests.hf_folders import bert_folder, zip_bytes

    folder = bert_folder(directory / "bert", classes=3)
    path = directory / "bert.zip"
    path.write_bytes(zip_bytes(folder))
    return path


# ---- datasets --------------------------------------------------------------------------------------------------

def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def images(shape: tuple, rows: int = ROWS, dtype=np.float32) -> np.ndarray:
    return rng().standard_normal((rows, *shape)).astype(dtype)


def labels(classes: int, rows: int = ROWS, dtype=np.int64) -> np.ndarray:
    return (np.arange(rows) % classes).astype(dtype)


def tags(rows: int = ROWS, count: int = 4) -> np.ndarray:
    """A multi-label 0/1 matrix [rows, count]."""
    return (rng().random((rows, count)) > 0.5).astype(np.float32)


def scores(targets: int | None = None, rows: int = ROWS) -> np.ndarray:
    """Values a regression model predicts: [rows], or [rows, targets]."""
    return rng(1).normal(size=(rows,) if targets is None else (rows, targets)).astype(np.float32) * 2 + 3


def labelled(x: np.ndarray, y: np.ndarray, val_x: np.ndarray | None = None, val_y: np.ndarray | None = None) -> dict:
    return {"train.x": x, "train.y": y, "val.x": x if val_x is None else val_x, "val.y": y if val_y is None else val_y}


def tokens(rows: int = ROWS, ids_dtype=np.int64, mask_dtype=np.int64) -> dict:
    ids = rng().integers(0, 100, (rows, 12)).astype(ids_dtype)
    mask = np.ones((rows, 12), mask_dtype)
    mask[:, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def token_splits(rows: int = ROWS, **kwargs) -> dict:
    arrays = {}
    for split in ("train", "val"):
        arrays |= {f"{split}.{k}": v for k, v in tokens(rows, **kwargs).items()}
        arrays[f"{split}.y"] = labels(3, rows)
    return arrays


def jsonl(rows: list[dict], bom: bool = False, newline: str = "\n", blank_lines: bool = False) -> bytes:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    if blank_lines:
        lines = [line for pair in zip(lines, [""] * len(lines)) for line in pair]
    text = newline.join(lines) + newline
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


SENTENCES = [f"the {a} {v} the {t}" for a in ("cat", "dog", "bird", "fox") for v in ("sees", "finds", "likes")
             for t in ("ball", "stick", "box")]


def text_rows(label: Callable[[int], object] = lambda i: i % 3, text: Callable[[int], str] = lambda i: SENTENCES[
        i % len(SENTENCES)], rows: int = 24) -> list[dict]:
    out = []
    for split in ("train", "val"):
        for i in range(rows):
            row = {"split": split, "text": text(i)}
            value = label(i)
            if value is not None:
                row["label"] = value
            out.append(row)
    return out


@dataclass
class Case:
    name: str
    model: str  # key of MODELS, or "bert"
    data: Callable[[], dict | bytes]  # npz arrays or .jsonl bytes
    expect: str  # "work" or "refuse"
    stages: list = field(default_factory=lambda: PTQ)
    job: dict = field(default_factory=dict)  # extra JobCreate fields (train_split, evaluation)


def cases() -> list[Case]:
    c28, c32 = (1, 28, 28), (3, 32, 32)
    return [
        # dtypes
        Case("baseline float32 + int64 labels (1x28x28)", "cnn28", lambda: labelled(images(c28), labels(10)), "work"),
        Case("baseline 3x32x32, KD with labels", "cnn32", lambda: labelled(images(c32), labels(10)), "work", KD),
        Case("float64 images", "cnn28", lambda: labelled(images(c28, dtype=np.float64), labels(10)), "work"),
        Case("float16 images", "cnn32", lambda: labelled(images(c32, dtype=np.float16), labels(10)), "work"),
        Case("uint8 images 0..255 for a float model", "cnn28", lambda: labelled(
            rng().integers(0, 256, (ROWS, *c28)).astype(np.uint8), labels(10)), "refuse"),
        Case("labels int32", "cnn28", lambda: labelled(images(c28), labels(10, dtype=np.int32)), "work", KD),
        Case("labels uint8", "cnn28", lambda: labelled(images(c28), labels(10, dtype=np.uint8)), "work"),
        Case("labels float, whole numbers", "cnn28", lambda: labelled(images(c28), labels(10, dtype=np.float32)),
             "work", KD),
        Case("labels float, fractional, for a classifier (values, undeclared)", "cnn28", lambda: labelled(
            images(c28), labels(10).astype(np.float32) + .5), "refuse"),
        Case("regression values [N] for a one-output model, declared", "binary", lambda: labelled(
            images(c28), scores()), "work", KD, job={"evaluation": EVALUATION | {"output_kind": "regression"}}),
        Case("regression values [N] for a one-output model, undeclared", "binary", lambda: labelled(
            images(c28), scores()), "work"),
        Case("regression values [N, 4] for a 4-output model, undeclared", "multilabel", lambda: labelled(
            images(c28), scores(4)), "refuse"),
        Case("regression values [N, 4] for a 4-output model, declared", "multilabel", lambda: labelled(
            images(c28), scores(4)), "work", job={"evaluation": EVALUATION | {"output_kind": "regression"}}),
        Case("regression ratings 1..5 (whole numbers), declared", "binary", lambda: labelled(
            images(c28), labels(5) + 1), "work", KD, job={"evaluation": EVALUATION | {"output_kind": "regression"}}),
        Case("regression values [N] for a 10-logit model, declared", "cnn28", lambda: labelled(images(c28), scores()),
             "refuse", job={"evaluation": EVALUATION | {"output_kind": "regression"}}),
        Case("labels as strings", "cnn28", lambda: labelled(images(c28), labels(10).astype(str)), "refuse"),
        Case("labels one-hot [N, C]", "cnn28", lambda: labelled(images(c28), np.eye(10, dtype=np.int64)[labels(10)]),
             "refuse"),
        Case("labels [N, 1]", "cnn28", lambda: labelled(images(c28), labels(10)[:, None]), "work", KD),
        Case("labels bool for a 2-logit model", "binary2", lambda: labelled(images(c28), labels(2).astype(bool)),
             "work"),
        Case("labels >= classes", "cnn28", lambda: labelled(images(c28), labels(12)), "refuse"),
        Case("labels negative", "cnn28", lambda: labelled(images(c28), labels(10) - 1), "refuse"),
        Case("int32 token ids + int64 mask", "tokens", lambda: token_splits(ids_dtype=np.int32), "work", KD),
        Case("bool attention mask", "tokens", lambda: token_splits(mask_dtype=np.bool_), "work"),
        Case("float token ids", "tokens", lambda: token_splits(ids_dtype=np.float32), "refuse"),
        Case("token ids >= vocabulary", "tokens", lambda: {
            **token_splits(), "train.input_ids": np.full((ROWS, 12), 500, np.int64)}, "refuse"),
        # layouts
        Case("channels-last images (N, H, W, C)", "cnn32", lambda: labelled(images((32, 32, 3)), labels(10)),
             "refuse"),
        Case("no channel dim (N, H, W) for 1 channel", "cnn28", lambda: labelled(images((28, 28)), labels(10)),
             "work"),
        Case("wrong spatial size 32x32 for 28x28", "cnn28", lambda: labelled(images((1, 32, 32)), labels(10)),
             "refuse"),
        Case("1-D signals (N, C, L)", "cnn1d", lambda: labelled(images((2, 64)), labels(5)), "work", KD),
        Case("1-D signals without channel dim", "cnn1d", lambda: labelled(images((64,)), labels(5)), "refuse"),
        Case("a single example per split", "cnn28", lambda: labelled(images(c28, 1), labels(10, 1)), "work"),
        Case("a single example, KD training", "cnn28", lambda: labelled(images(c28, 1), labels(10, 1)), "work", KD),
        Case("splits of very different sizes", "cnn28", lambda: labelled(images(c28, 200), labels(10, 200),
                                                                           images(c28, 3), labels(10, 3)), "work"),
        Case("only a train split", "cnn28", lambda: {"train.x": images(c28), "train.y": labels(10)}, "refuse"),
        Case("only a train split, evaluated on train", "cnn28", lambda: {"train.x": images(c28),
                                                                         "train.y": labels(10)}, "work",
             job={"evaluation": EVALUATION | {"split": "train"}}),
        Case("only a val split", "cnn28", lambda: {"val.x": images(c28), "val.y": labels(10)}, "refuse"),
        Case("extra unknown array (ignored, named in metrics)", "cnn28", lambda: {
            **labelled(images(c28), labels(10)), "train.weights": np.ones(ROWS, np.float32)}, "work"),
        Case("tokenizer output incl. token_type_ids", "tokens", lambda: {
            **token_splits(), "train.token_type_ids": np.zeros((ROWS, 12), np.int64)}, "work"),
        Case("input arrays named after model inputs", "tokens", token_splits, "work"),
        Case("input array named after the model input (x)", "cnn28", lambda: labelled(images(c28), labels(10)),
             "work"),
        Case("unlabelled (fidelity)", "cnn28", lambda: {"train.x": images(c28), "val.x": images(c28)}, "work"),
        Case("split with 0 rows", "cnn28", lambda: {**labelled(images(c28), labels(10)),
                                                    "test.x": images(c28, 0), "test.y": labels(10, 0)}, "refuse"),
        Case("all-zero images", "cnn28", lambda: labelled(np.zeros((ROWS, *c28), np.float32), labels(10)), "work"),
        # Finite values far from the model's training range are the user's data: the job measures them honestly.
        Case("huge finite values (1e30)", "cnn28", lambda: labelled(images(c28) * 1e30, labels(10)), "work"),
        Case("NaN in images", "cnn28", lambda: labelled(np.where(np.arange(ROWS)[:, None, None, None] == 5, np.nan,
                                                                 images(c28)).astype(np.float32), labels(10)),
             "refuse"),
        Case("Inf in float64 images", "cnn28", lambda: labelled(np.where(np.arange(ROWS)[:, None, None, None] == 7,
                                                                        np.inf, images(c28, dtype=np.float64)),
                                                               labels(10)), "refuse"),
        Case("float64 beyond float32 range", "cnn28", lambda: labelled(images(c28, dtype=np.float64) * 1e300,
                                                                       labels(10)), "refuse"),
        Case("savez_compressed", "cnn28", lambda: labelled(images(c28), labels(10)), "work", job={"compressed": True}),
        Case("Fortran-ordered images", "cnn28", lambda: labelled(np.asfortranarray(images(c28)), labels(10)), "work"),
        Case("big-endian float32 images and labels", "cnn28", lambda: labelled(images(c28).astype(">f4"),
                                                                              labels(10).astype(">i8")), "work", KD),
        Case("float attention mask", "tokens", lambda: token_splits(mask_dtype=np.float32), "refuse"),
        Case("arrays without a split prefix", "cnn28", lambda: {"x": images(c28), "y": labels(10)}, "refuse"),
        Case("arrays named train_x (np.savez keywords)", "cnn28", lambda: {"train_x": images(c28),
                                                                           "train_y": labels(10)}, "refuse"),
        Case("a single .npy instead of .npz", "cnn28", lambda: raw_file(lambda f: np.save(f, images(c28))), "refuse"),
        Case("torch.save of a dict of tensors", "cnn28", lambda: raw_file(lambda f: torch.save(
            {"train.x": torch.from_numpy(images(c28))}, f)), "refuse"),
        Case("KD alpha > 0, unlabelled train split", "cnn28", lambda: {"train.x": images(c28), "val.x": images(c28),
                                                                       "val.y": labels(10)}, "refuse", KD),
        Case("binary classifier [N, 1] logit, 0/1 labels", "binary", lambda: labelled(images(c28), labels(2)),
             "work"),
        Case("binary classifier [N, 1] logit, labels 0/1/2", "binary", lambda: labelled(images(c28), labels(3)),
             "refuse"),
        Case("multi-label 0/1 matrix [N, 4], declared multi_label", "multilabel", lambda: labelled(
            images(c28), tags()), "work", job={"evaluation": EVALUATION | {"multi_label": True}}),
        Case("multi-label 0/1 matrix [N, 4], undeclared (the program ends in sigmoid)", "multilabel",
             lambda: labelled(images(c28), tags()), "work"),
        Case("0/1 matrix [N, 10] for a 10-logit model, undeclared", "cnn28", lambda: labelled(
            images(c28), tags(count=10)), "refuse"),
        Case("splits named train/test (evaluation.split test)", "cnn28", lambda: {
            "train.x": images(c28), "train.y": labels(10), "test.x": images(c28), "test.y": labels(10)}, "work",
             job={"evaluation": EVALUATION | {"split": "test"}}),
        Case("splits named train/test, default evaluation split", "cnn28", lambda: {
            "train.x": images(c28), "train.y": labels(10), "test.x": images(c28), "test.y": labels(10)}, "refuse"),
        # .jsonl text for a Hugging Face BERT classifier (3 classes)
        Case("jsonl int labels", "bert", lambda: jsonl(text_rows()), "work"),
        Case("jsonl unlabelled", "bert", lambda: jsonl(text_rows(label=lambda i: None)), "work"),
        Case("jsonl label names the model does not have", "bert", lambda: jsonl(text_rows(
            label=lambda i: ["a", "b", "c"][i % 3])), "refuse"),
        Case("jsonl label names of config id2label, other case", "bert", lambda: jsonl(text_rows(
            label=lambda i: f"label_{i % 3}")), "work"),
        Case("jsonl label lists for a single-label classifier", "bert", lambda: jsonl(text_rows(
            label=lambda i: [i % 3])), "refuse"),
        Case("jsonl fractional scores for a 3-class classifier", "bert", lambda: jsonl(text_rows(
            label=lambda i: i % 5 + 0.25)), "refuse"),
        Case("jsonl label as float 1.0", "bert", lambda: jsonl(text_rows(label=lambda i: float(i % 3))), "work"),
        Case("jsonl labels missing in some rows", "bert", lambda: jsonl(text_rows(
            label=lambda i: None if i % 5 == 0 else i % 3)), "refuse"),
        Case("jsonl labels >= classes", "bert", lambda: jsonl(text_rows(label=lambda i: i % 7)), "refuse"),
        Case("jsonl empty text", "bert", lambda: jsonl(text_rows(text=lambda i: "" if i == 3 else SENTENCES[i])),
             "refuse"),
        Case("jsonl whitespace-only text", "bert", lambda: jsonl(text_rows(text=lambda i: "   " if i == 3 else
                                                                             SENTENCES[i])), "work"),
        Case("jsonl with an extra 'id' field", "bert", lambda: jsonl([r | {"id": i} for i, r in enumerate(
            text_rows())]), "refuse"),
        Case("jsonl unicode text", "bert", lambda: jsonl(text_rows(text=lambda i: f"le chat {i} voit l'été ☀️ 猫")),
             "work"),
        Case("jsonl very long text", "bert", lambda: jsonl(text_rows(text=lambda i: " ".join(SENTENCES) * 20)),
             "work"),
        Case("jsonl blank lines", "bert", lambda: jsonl(text_rows(), blank_lines=True), "work"),
        Case("jsonl with a BOM", "bert", lambda: jsonl(text_rows(), bom=True), "work"),
        Case("jsonl Windows line endings", "bert", lambda: jsonl(text_rows(), newline="\r\n"), "work"),
        Case("jsonl one row per split", "bert", lambda: jsonl(text_rows(rows=1)), "work"),
        Case("jsonl for a .pt2 model", "tokens", lambda: jsonl(text_rows()), "refuse"),
        Case("npz for a Hugging Face folder", "bert", token_splits, "refuse"),
        Case("jsonl only a train split", "bert", lambda: jsonl([r for r in text_rows() if r["split"] == "train"]),
             "refuse"),
    ]


# ---- driving one case ------------------------------------------------------------------------------------------

def raw_file(write: Callable[[io.BytesIO], None]) -> tuple[str, bytes]:
    """A file written by some other tool (an upload that is not an .npz of the format)."""
    buffer = io.BytesIO()
    write(buffer)
    return ("raw", buffer.getvalue())


def write_dataset(case: Case, directory: Path) -> Path:
    data = case.data()
    if isinstance(data, tuple):
        path = directory / f"{case.name.replace(' ', '_')[:40]}.bin"
        path.write_bytes(data[1])
        return path
    if isinstance(data, bytes):
        path = directory / f"{case.name.replace(' ', '_')[:40]}.jsonl"
        path.write_bytes(data)
        return path
    path = directory / f"{case.name.replace(' ', '_').replace('/', '_')[:40]}.npz"
    buffer = io.BytesIO()
    (np.savez_compressed if case.job.get("compressed") else np.savez)(buffer, **data)
    path.write_bytes(buffer.getvalue())
    return path


def upload_check(dataset: Path):
    """What POST /v1/datasets does with the file: (manifest, None) or (None, "422: ..." / "500: ...")."""
    from compression.inspect import InvalidUpload, inspect_dataset

    with open(dataset, "rb") as file:
        try:
            return inspect_dataset(file), None
        except InvalidUpload as exc:
            return None, f"422: {exc}"
        except Exception as exc:  # the API's handler would answer 500
            return None, f"500: {type(exc).__name__}: {exc}"


def submission_check(case: Case, model: Path, manifest):
    """What POST /v1/jobs does: None when accepted, else "422: ..." / "500: ..."."""
    from pydantic import ValidationError

    from app.core.errors import InvalidInput
    from app.jobs.validation import validate_job
    from compression.inspect import ModelSignature, inspect_model
    from core.jobs.spec import JobCreate

    try:
        with open(model, "rb") as file:
            inspected = inspect_model(file, task="sequence-classification" if case.model == "bert" else None)
        spec = JobCreate(model_id="mdl_sweep", dataset_id="ds_sweep", stages=case.stages,
                         **({"evaluation": EVALUATION} | {k: v for k, v in case.job.items() if k != "compressed"}))
        validate_job(spec, ModelSignature.from_json(inspected.signature), manifest, inspected.signature.get("hf"))
    except (InvalidInput, ValidationError) as exc:
        return spec if "spec" in locals() else None, f"422: {exc}"
    except Exception as exc:
        return None, f"500: {type(exc).__name__}: {exc}"
    return spec, None


def run_job(case: Case, spec, model: Path, dataset: Path, workdir: Path) -> dict:
    """The worker's child: the library pipeline, its exception described as the job's error."""
    from compression.context import RunContext
    from compression.llm.pipeline import run_folder_pipeline
    from compression.pipeline import run_pipeline
    from worker.child_errors import describe

    where = {"stage": None, "phase": "start", "dry_run_done": None}
    started = time.monotonic()

    def report(event) -> None:
        where["stage"], where["phase"] = event.stage, event.phase
        if event.phase == "dry_run" and event.step == event.total:
            where["dry_run_done"] = time.monotonic() - started

    ctx = RunContext(report=report)
    stages, evaluation = spec.stages, spec.evaluation
    try:
        if case.model == "bert":
            result = run_folder_pipeline(model, dataset, "sequence-classification", stages, evaluation, ctx, workdir,
                                         spec.train_split)
        else:
            result = run_pipeline(model, dataset, stages, evaluation, ctx, workdir, train_split=spec.train_split)
    except Exception as exc:
        error = describe(exc, where, [s.model_dump() for s in stages], evaluation.model_dump())
        late = where["dry_run_done"] is not None
        return {"job": error["code"], "message": error["message"].split("\n")[0][:300],
                "seconds": round(time.monotonic() - started, 1), "phase": f"{where['stage']}/{where['phase']}",
                "late": late}
    final = result.final
    return {"job": "succeeded", "seconds": round(time.monotonic() - started, 1),
            "metric": f"{final.get('metric')}={final.get('metric_points')}"
                      + (f", ignored {final['ignored_arrays']}" if final.get("ignored_arrays") else ""),
            "baseline": f"{result.baseline.get('metric')}={result.baseline.get('metric_points')}"}


def verdict(case: Case, row: dict) -> str:
    refused = row.get("upload", "").startswith("422") or row.get("submit", "").startswith("422")
    if "500" in (row.get("upload", "")[:3], row.get("submit", "")[:3]):
        return "BAD: 500"
    if row.get("job") == "internal_error":
        return "BAD: internal error"
    if row.get("job") not in (None, "succeeded") and row.get("late"):
        return "BAD: late failure"
    failed = refused or row.get("job") not in (None, "succeeded")
    if case.expect == "work":
        return "ok" if not failed else "refused (could work?)"
    return "ok" if failed else "BAD: silently accepted"


def run_case(case: Case, models: dict[str, Path], directory: Path) -> dict:
    row = {"case": case.name, "model": case.model, "expect": case.expect}
    dataset = write_dataset(case, directory)
    manifest, row["upload"] = upload_check(dataset)
    row["upload"] = row["upload"] or "accepted"
    if manifest is not None:
        spec, submitted = submission_check(case, models[case.model], manifest)
        row["submit"] = submitted or "accepted"
        if submitted is None:
            row |= run_job(case, spec, models[case.model], dataset, directory / f"job_{abs(hash(case.name))}")
    row["verdict"] = verdict(case, row)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| case | model | expect | upload | submit | job | verdict |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        job = row.get("job", "")
        if job == "succeeded":
            job = f"succeeded {row['seconds']}s ({row['metric']})"
        elif job:
            job = f"{job} after {row['seconds']}s in {row['phase']}: {row['message']}"
        cells = [row["case"], row["model"], row["expect"], _short(row["upload"]), _short(row.get("submit", "")),
                 _short(job), row["verdict"]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    selected = [c for c in cases() if not args.only or any(part in c.name for part in args.only)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dataset_sweep_") as tmp:
        directory = Path(tmp)
        models = write_models(directory)
        if any(c.model == "bert" for c in selected):
            models["bert"] = write_bert(directory)
        for case in selected:
            started = time.monotonic()
            rows.append(run_case(case, models, directory))
            print(f"{time.strftime('%H:%M:%S')} {case.name}: {rows[-1]['verdict']} "
                  f"({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)
    counts = {}
    for row in rows:
        key = row["verdict"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    print(table(rows))
    print(f"\n{len(rows)} cases: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"cases": rows, "counts": counts}, indent=1) + "\n")


if __name__ == "__main__":
    main()
