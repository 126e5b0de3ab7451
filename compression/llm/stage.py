"""`llm_ptq` as a job stage: the registry's `apply(spec, model, task, ctx)` where `model` is the source Hugging
Face folder and `task` a `TextTask`; the output is the compressed-tensors folder, zipped for download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from compression import formats
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.apply import apply_llm_ptq
from compression.result import Artifact
from compression.specs.llm import LLMPTQSpec


@dataclass
class TextTask:
    """What a stage on a language model gets: token streams of the job's splits (None when the dataset lacks the
    split) and a folder to write to."""

    calibration_tokens: torch.Tensor | None  # 1-D stream of the train split
    workdir: Path
    train_split: str = "train"


@dataclass
class FolderResult:
    folder: Path
    artifacts: list[Artifact]
    metrics: dict


def apply_llm_stage(spec: LLMPTQSpec, model: Path, task: TextTask, ctx: RunContext) -> FolderResult:
    if spec.needs_calibration and task.calibration_tokens is None:
        raise ValueError(f"algorithm '{spec.algorithm}' calibrates on the '{task.train_split}' split, which the "
                         "dataset does not have")
    result = apply_llm_ptq(spec, model, task.workdir / "model", task.calibration_tokens, ctx)
    archive = hf_folder.write(result.folder, task.workdir / hf_folder.ARTIFACT_NAME)
    artifact = formats.artifact(hf_folder.KIND, hf_folder.ARTIFACT_NAME, archive, algorithm=spec.algorithm,
                                load="unzip, then transformers.AutoModelForCausalLM.from_pretrained(folder) with the "
                                     "compressed-tensors package installed, or vllm serve folder")
    return FolderResult(result.folder, [artifact], result.metrics)
