"""The upload's outputs on the evaluation split, computed once and compared with by every stage.

Fidelity compares a stage's model with the upload on the same inputs. Running the upload again for each stage
doubled the cost of every evaluation (on a 22M-parameter encoder, half a minute per stage on one core), although
its outputs never change: they are kept from the baseline's evaluation (or computed by the first stage that needs
them) and, with `path`, stored in a file that a later job on the same model, dataset and evaluation settings
reads instead of running the upload at all (the worker names it after the baseline's key, in the tenant's own
cache directory). The file is plain arrays (`np.load(allow_pickle=False)`), checked against the split before use;
one that does not fit is ignored and written again.

Under `compile` with latency timed, models are evaluated in their compiled form at the largest timed batch size:
the graphs timing needs anyway, compiled once (`compression.measure.run_compiled`), run several times faster than
an eager int8 Q/DQ graph. A short last batch runs eagerly rather than compiling one more shape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from compression.context import Cancelled
from compression.data import Split
from compression.evaluate import KeptOutputs, outputs_of
from compression.measure import run_compiled
from compression.specs.common import EvaluationSpec

log = logging.getLogger(__name__)
# Outputs larger than this (say a language model's logits over many tokens) are not kept: the upload runs again.
MAX_KEPT_BYTES = 256 * 1024**2
EVALUATION_BATCH_SIZE = 256
# Below this a compiled batch gains little over an eager batch of 256: evaluation then stays eager.
MIN_COMPILED_BATCH = 8


def evaluation_batch_size(evaluation: EvaluationSpec) -> int:
    """The same whether or not this evaluation is compiled (the upload's, before any stage, is not: the stages'
    exports reset torch.compile's caches), so every evaluation of a job reads the same batches."""
    if evaluation.compile and max(evaluation.latency_batch_sizes) >= MIN_COMPILED_BATCH:
        return max(evaluation.latency_batch_sizes)
    return EVALUATION_BATCH_SIZE


def evaluation_runner(model: torch.nn.Module, evaluation: EvaluationSpec) -> Callable | None:
    """What runs `model` on an evaluation batch: its compiled form for a full batch when the job times compiled
    models anyway, else None (the model itself)."""
    if not _compiled_evaluation(evaluation):
        return None
    batch_size, run = evaluation_batch_size(evaluation), run_compiled(model)

    def runner(*inputs: torch.Tensor):
        return run(*inputs) if inputs[0].shape[0] == batch_size else model(*inputs)
    return runner


def _compiled_evaluation(evaluation: EvaluationSpec) -> bool:
    return evaluation.latency and evaluation_batch_size(evaluation) != EVALUATION_BATCH_SIZE


class UploadOutputs:
    """The upload's outputs per evaluation batch: read from `path`, kept from the baseline's evaluation
    (`keeper`/`kept`) or computed when first needed (`outputs`)."""

    def __init__(self, split: Split, evaluation: EvaluationSpec, path: str | Path | None = None):
        self.split, self.evaluation = split, evaluation
        self.path = Path(path) if path is not None else None
        self.batch_size = evaluation_batch_size(evaluation)
        self.batches: list[torch.Tensor] | None = None
        self.too_large = False
        self.from_file = False
        if self.path is not None and self.path.is_file():
            self.batches = self._read()
            self.from_file = self.batches is not None

    def keeper(self) -> KeptOutputs | None:
        """Where an evaluation of the upload puts its outputs (None when they are known already)."""
        return None if self.batches is not None or self.too_large else KeptOutputs(MAX_KEPT_BYTES)

    def kept(self, keep: KeptOutputs | None) -> None:
        if keep is None:
            return
        if keep.batches is None:
            self.too_large = True
            return
        self.batches = keep.batches
        self._write()

    def outputs(self, reference: torch.nn.Module) -> list[torch.Tensor] | None:
        """The upload's outputs, computed now if no earlier evaluation kept them; None when they are too large to
        keep (fidelity then runs the upload alongside each stage)."""
        if self.batches is None and not self.too_large:
            def compute(run: Callable | None) -> KeptOutputs:
                return outputs_of(reference, self.split, KeptOutputs(MAX_KEPT_BYTES), self.batch_size,
                                  self.evaluation.max_samples, run)
            try:
                keep = compute(evaluation_runner(reference, self.evaluation))
            except Cancelled:
                raise
            except Exception as exc:  # an upload that cannot be compiled is still evaluated (its timing says why)
                log.info("running the compiled upload failed (%s: %s); running it eagerly", type(exc).__name__, exc)
                keep = compute(None)
            self.kept(keep)
        return self.batches

    def _lengths(self) -> list[int]:
        rows = len(self.split) if self.evaluation.max_samples is None else min(len(self.split),
                                                                              self.evaluation.max_samples)
        return [min(self.batch_size, rows - start) for start in range(0, rows, self.batch_size)]

    def _read(self) -> list[torch.Tensor] | None:
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                if int(stored["batch_size"]) != self.batch_size:
                    return None
                lengths = self._lengths()
                batches = [torch.from_numpy(stored[f"batch_{index}"]) for index in range(len(lengths))]
                if len(stored.files) != len(lengths) + 1:
                    return None
        except (OSError, KeyError, ValueError) as exc:
            log.info("stored outputs of the upload not used (%s); computing them again", exc)
            return None
        if [len(batch) for batch in batches] != lengths or any(
                b.dtype != torch.float32 or b.shape[1:] != batches[0].shape[1:] for b in batches):
            return None
        return batches

    def _write(self) -> None:
        """Store the outputs for later jobs; only a saving, so a failure to write is logged, never raised."""
        if self.path is None or self.from_file:
            return
        partial = self.path.with_name(self.path.name + ".partial.npz")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(partial, batch_size=np.array(self.batch_size),
                     **{f"batch_{index}": batch.numpy() for index, batch in enumerate(self.batches)})
            os.replace(partial, self.path)
        except OSError as exc:
            log.info("could not store the upload's outputs for later jobs: %s", exc)
