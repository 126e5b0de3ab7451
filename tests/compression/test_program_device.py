"""Devices burnt into exported graphs (compression.program_device): a program exported on a GPU runs on a CPU
worker, and a program traced on the CPU runs where a stage moves it."""

import zipfile

import numpy as np
import pytest
import torch
import transformers
from torch.export import Dim

from compression.context import RunContext
from compression.io import load_program
from compression.pipeline import run_pipeline
from compression.program_device import move_model, retarget_devices
from compression.specs import EvaluationSpec, PTQSpec


class Encoder(torch.nn.Module):
    """A BERT [CLS] vector: its graph makes position ids with `arange(device=...)` and casts the mask with
    `to(dtype, device=...)`, as every Hugging Face encoder does."""

    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=32)
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]


def _inputs(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (rows, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[:, 9:] = torch.randint(0, 2, (rows, 3), generator=generator)
    return ids, mask


@pytest.fixture(scope="module")
def program():
    torch.manual_seed(0)
    batch = Dim("batch")
    return torch.export.export(Encoder().eval(), _inputs(4, 0), dynamic_shapes=({0: batch}, {0: batch}))


def _devices(graph: torch.fx.Graph) -> set[str]:
    return {str(node.kwargs["device"]) for node in graph.nodes if "device" in node.kwargs}


def _as_if_exported_on_a_gpu(path, target):
    """The archive of `path` as `torch.export.save` writes it for a model traced on cuda:0 (tensor metadata and
    every device argument say cuda; the weights' bytes are the same)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".json"):
                data = data.replace(b'"type": "cpu", "index": null', b'"type": "cuda", "index": 0')
            out.writestr(info.filename, data)


def test_a_program_exported_on_a_gpu_runs_the_default_job_on_a_cpu_worker(program, tmp_path):
    torch.export.save(program, tmp_path / "cpu.pt2")
    _as_if_exported_on_a_gpu(tmp_path / "cpu.pt2", tmp_path / "gpu.pt2")
    with pytest.raises(AssertionError, match="not compiled with CUDA"):  # torch's own loader, on this build
        torch.export.load(tmp_path / "gpu.pt2")
    loaded = load_program(tmp_path / "gpu.pt2")
    assert _devices(loaded.graph) == {"cpu"}
    ids, mask = _inputs(3, 1)
    torch.testing.assert_close(loaded.module()(ids, mask), program.module()(ids, mask), rtol=0, atol=0)

    arrays = {f"{split}.{name}": value.numpy() for split, seed in (("train", 2), ("val", 3))
              for name, value in zip(("input_ids", "attention_mask"), _inputs(32, seed))}
    np.savez(tmp_path / "tokens.npz", **arrays)
    result = run_pipeline(tmp_path / "gpu.pt2", tmp_path / "tokens.npz", [PTQSpec(calibration_samples=16)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "job")
    assert result.stages[0].metrics["cosine"] > 0.99


def test_a_cpu_traced_module_moved_elsewhere_computes_there(program):
    # The meta device stands in for a GPU this machine lacks: moved with `.to()` alone, the graph's cast still
    # sends the mask to the CPU; moved with move_model, every op runs where the weights are.
    ids, mask = _inputs(2, 4)
    with pytest.raises(NotImplementedError, match="meta"):
        program.module().to("meta")(ids.to("meta"), mask.to("meta"))
    moved = move_model(program.module(), "meta")
    assert _devices(moved.graph) == {"meta"}
    assert moved(ids.to("meta"), mask.to("meta")).device.type == "meta"
    assert retarget_devices(moved, "meta") == 0  # nothing left to change
    assert retarget_devices(program.module(), "cpu") == 0 and retarget_devices(program.module(), "meta") > 0
