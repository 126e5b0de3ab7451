"""Each benchmarked model as the files a user uploads plus what the benchmark needs to judge the results.

CNNs are uploaded as `.pt2` programs with an `.npz` dataset (and a narrower `.pt2` student); transformers as the
zipped Hugging Face folder with a `.jsonl` text dataset, which the worker turns into a program and arrays
(`compression.hf_program.folder_to_program`). The benchmark calls that same function once to get the exact
token arrays the jobs see, to run every row's model on the evaluation split and to build the peer.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.real_models import crepe, minilm, pesto_cnn, rxnfp_bert
from bench.real_models.text_metrics import cls_vector, fidelity, mean_pool
from compression.archive.jsonl import read_jsonl
from compression.hf_program import folder_to_program, load_folder_model
from compression.io import export_model, input_names, load_program, save_program

CACHE = Path(__file__).resolve().parents[1] / "results" / "real_models_cache"


@dataclass
class Case:
    name: str
    kind: str  # "cnn" or "transformer"
    metric_name: str
    upload: Path  # what the user uploads: .pt2 or a zipped folder
    dataset: Path  # .npz or .jsonl
    fp32: torch.nn.Module  # the uncompressed model as an ordinary module (the peers start from it)
    example: tuple[torch.Tensor, ...]
    eval_inputs: tuple[torch.Tensor, ...]
    judge: Callable[[torch.Tensor, torch.Tensor], dict]  # (outputs, fp32 outputs) -> {"task", "fidelity", ...}
    hf_task: str | None = None
    uploaded_models: dict[str, Path] = field(default_factory=dict)
    calibration: np.ndarray | None = None  # ONNX Runtime's static int8 calibration inputs (CNNs)
    # What every row's fidelity is measured against: the program the jobs start from (fp32 when None).
    reference: torch.nn.Module | None = None
    skip_rows: tuple[str, ...] = ()  # rows that mean nothing for this model


def outputs_of(model, inputs: tuple[torch.Tensor, ...], batch: int = 32) -> torch.Tensor:
    with torch.no_grad():
        chunks = [model(*(t[i:i + batch] for t in inputs)) for i in range(0, len(inputs[0]), batch)]
    chunks = [c if isinstance(c, torch.Tensor) else next(iter(c.values() if isinstance(c, dict) else c))
              for c in chunks]
    return torch.cat([c.float() for c in chunks])


def _top1_agreement(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    return float((outputs.argmax(1) == reference.argmax(1)).float().mean())


def crepe_case(workdir: Path, sizes: dict, capacity: str = "tiny") -> Case:
    torch.manual_seed(0)
    model = crepe.pretrained(capacity)
    train_x, _ = crepe.pitch_frames(sizes["train"], seed=1)
    val_x, val_f0 = crepe.pitch_frames(sizes["val"], seed=2)
    example = (torch.from_numpy(val_x[:8]),)
    program = export_model(model, example)
    upload = save_program(program, workdir / f"crepe_{capacity}.pt2")
    dataset = workdir / f"pitch_{capacity}.npz"
    name = input_names(program)[0]
    np.savez(dataset, **{f"train.{name}": train_x, f"val.{name}": val_x})
    student = save_program(export_model(crepe.student(capacity), example), workdir / f"student_{capacity}.pt2")

    def judge(outputs, reference):
        return {"task": crepe.raw_pitch_accuracy(outputs, val_f0), "fidelity": _top1_agreement(outputs, reference)}

    return Case(f"crepe-{capacity}", "cnn", "RPA (50 cents)", upload, dataset, model, example,
                (torch.from_numpy(val_x),), judge, uploaded_models={"student": student}, calibration=train_x[:256])


def pesto_case(workdir: Path, sizes: dict) -> Case:
    torch.manual_seed(0)
    pesto = pesto_cnn.Pesto()
    train_audio, _ = pesto_cnn.tones(sizes["train"], seed=1)
    val_audio, val_f0 = pesto_cnn.tones(sizes["val"], seed=2)
    train_x, val_x = pesto.frames(train_audio), pesto.frames(val_audio)
    example = (torch.from_numpy(val_x[:8]),)
    program = export_model(pesto.encoder, example)
    upload = save_program(program, workdir / "pesto.pt2")
    dataset = workdir / "pesto_cqt.npz"
    name = input_names(program)[0]
    np.savez(dataset, **{f"train.{name}": train_x, f"val.{name}": val_x})
    student = save_program(export_model(pesto_cnn.student(), example), workdir / "student_pesto.pt2")

    def judge(outputs, reference):
        return {"task": pesto_cnn.raw_pitch_accuracy(pesto, outputs, val_f0),
                "fidelity": _top1_agreement(outputs, reference)}

    return Case("pesto-mir1k", "cnn", "RPA (50 cents)", upload, dataset, pesto.encoder, example,
                (torch.from_numpy(val_x),), judge, uploaded_models={"student": student}, calibration=train_x[:256])


def _zip_folder(folder: Path, destination: Path) -> Path:
    """As a user would: the folder zipped with its directory entries (`zip -r`), subfolders included."""
    return Path(shutil.make_archive(str(destination.with_suffix("")), "zip", folder.parent, folder.name))


def _text_case(name: str, folder: Path, texts: dict[str, list[str]], workdir: Path, metric_name: str,
               pool: Callable, task_metrics: Callable[[np.ndarray], dict]) -> Case:
    upload = _zip_folder(folder, workdir / f"{name}.zip")
    dataset = workdir / f"{name}.jsonl"
    dataset.write_text("".join(json.dumps({"split": split, "text": text}) + "\n"
                               for split, rows in texts.items() for text in rows))
    # The worker's own conversion, once, for the token arrays every job sees.
    program_path, arrays_path = workdir / f"{name}_program.pt2", workdir / f"{name}_arrays.npz"
    folder_to_program(folder, minilm.TASK, read_jsonl(dataset, keep_text=True), program_path, arrays_path)
    arrays = np.load(arrays_path)
    eval_inputs = (torch.from_numpy(arrays["val.input_ids"]), torch.from_numpy(arrays["val.attention_mask"]))
    mask = eval_inputs[1]

    def judge(outputs, reference):
        vectors, reference_vectors = pool(outputs, mask), pool(reference, mask)
        scores = task_metrics(vectors)
        return scores | {"fidelity": fidelity(vectors, reference_vectors)["cosine"],
                         "similarity_spearman": fidelity(vectors, reference_vectors)["similarity_spearman"]}

    fp32 = load_folder_model(folder, minilm.TASK)
    example = tuple(t[:8] for t in eval_inputs)
    return Case(name, "transformer", metric_name, upload, dataset, fp32, example, eval_inputs, judge,
                hf_task=minilm.TASK, reference=load_program(program_path).module())


def minilm_case(workdir: Path, sizes: dict) -> Case:
    return _text_case("minilm-l6", minilm.folder(), minilm.texts(sizes["train"]), workdir, minilm.METRIC,
                      mean_pool, minilm.task_metrics)


def rxnfp_case(workdir: Path, sizes: dict) -> Case:
    folder = rxnfp_bert.write_upload_folder(CACHE / "rxnfp_bert_ft")
    reactions = rxnfp_bert.reactions(sizes["train"])
    labels = reactions.pop("val_labels")
    case = _text_case("rxnfp-bert-ft", folder, reactions, workdir, rxnfp_bert.METRIC, cls_vector,
                      lambda vectors: rxnfp_bert.task_metrics(vectors, labels))
    # Its embedding table (591 SMILES tokens) is 2 % of the weights: the embedding rows would repeat int8's.
    case.skip_rows = ("int8 PTQ, embeddings fp32", "int8 PTQ + int4 embeddings")
    return case


CASES = {"crepe-tiny": crepe_case, "pesto": pesto_case, "minilm": minilm_case, "rxnfp": rxnfp_case}
