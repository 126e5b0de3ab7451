"""The general PTQ path stores embedding tables as integers too (issue 10): weight-only int8 / int4 of an encoder
shrinks by the table's share, and what `load_packed` and ONNX Runtime compute is what the metrics measured."""

import json
import zlib

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from torch import nn

from compression.context import RunContext
from compression.data import Dataset
from compression.quant.general import apply_general_ptq, build_simulation, initial_config
from compression.specs.ptq import PTQSpec
from compression.task import Task
from compression.zoo import tiny_transformer

VOCAB, DIM = 1024, 64
TABLE = "embed.weight"
# bytes of the quantized table: codes plus one bfloat16 scale per row (int8) or per group of 32 (int4)
TABLE_BYTES = {8: VOCAB * DIM + VOCAB * 2, 4: VOCAB * DIM // 2 + VOCAB * DIM // 32 * 2}


@pytest.fixture(scope="module")
def encoder_task(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_transformer(vocab_size=VOCAB, max_length=16, dim=DIM, layers=1).eval()
    ids = np.random.default_rng(0).integers(0, VOCAB, (192, 16))
    dataset = Dataset.from_arrays({"train.input_ids": ids[:128], "val.input_ids": ids[128:]}, ["input_ids"])
    return model, dataset, ids, tmp_path_factory


def _run(encoder_task, embeddings, bits):
    model, dataset, ids, tmp = encoder_task
    task = Task(dataset, model, (torch.from_numpy(ids[:4]),), tmp.mktemp("ptq"))
    spec = PTQSpec.model_validate({"method": "ptq", "activations": None, "weights": {"bits": bits},
                                   "embeddings": embeddings, "calibration_samples": 64, "selection_samples": 64})
    return spec, task, apply_general_ptq(spec, model, task, RunContext())


def _artifact(result, kind):
    return next(artifact for artifact in result.artifacts if artifact.kind == kind)


@pytest.mark.parametrize("embeddings, bits", [({"bits": 8}, 8), ({"bits": 4, "group_size": 32}, 4)],
                         ids=["int8-rows", "int4-groups"])
def test_weight_only_stores_the_table_as_integers_and_runs_what_was_measured(encoder_task, embeddings, bits):
    spec, task, result = _run(encoder_task, embeddings, bits)
    _, _, float_tables = _run(encoder_task, None, bits)

    packed, fp32_packed = _artifact(result, "packed.safetensors"), _artifact(float_tables, "packed.safetensors")
    # A float table travels inside the zlib-compressed graph, which shrinks random fp32 values by a few percent.
    fp32_table_bytes = len(zlib.compress(encoder_task[0].embed.weight.detach().numpy().tobytes(), 9))
    expected_saving = fp32_table_bytes - TABLE_BYTES[bits]
    saved = fp32_packed.size_bytes - packed.size_bytes
    assert abs(saved - expected_saving) < 0.02 * expected_saving, (saved, expected_saving)
    assert packed.metadata["compression_ratio"] > fp32_packed.metadata["compression_ratio"]

    report = result.metrics["embeddings"]
    assert report["tables"] == [TABLE] and report["format"].startswith(f"int{bits} symmetric")
    assert packed.metadata["embeddings"] == report["format"] == _artifact(result, "model.onnx").metadata["embeddings"]
    assert float_tables.metrics["embeddings"] == {"format": "fp32", "tables": [],
                                                  "kept_float": {TABLE: "embeddings: null"}}
    assert fp32_packed.metadata["embeddings"] == "fp32"
    with safe_open(str(packed.path), framework="pt") as archive:
        manifest = {entry["attr"]: entry for entry in json.loads(archive.metadata()["manifest"])}
    assert manifest[TABLE]["embedding"] is True and manifest[TABLE]["bits"] == bits

    # The loaded model's table holds at most 2^bits values per row (per group at 4 bits)...
    table = result.model.get_parameter(TABLE).detach()
    rows = table if bits == 8 else table.reshape(-1, 32)
    assert max(len(row.unique()) for row in rows) <= 2 ** bits
    # ...and it computes what the simulation the metrics came from computes, as ONNX Runtime does.
    sim, _, _ = build_simulation(spec, encoder_task[0], task, RunContext())
    sim.configure(initial_config(spec, sim))
    x = torch.from_numpy(encoder_task[2][128:])
    with torch.no_grad():
        simulated, loaded = sim.gm(x), result.model(x)
    torch.testing.assert_close(loaded, simulated, atol=1e-5, rtol=1e-5)
    onnx_path = _artifact(result, "model.onnx").path
    graph = onnx.load(str(onnx_path)).graph  # int codes -> DequantizeLinear (-> Reshape for groups) -> Gather
    assert TABLE not in {init.name for init in graph.initializer}
    assert any(node.op_type == "DequantizeLinear" and node.input[0] == f"{TABLE}_quantized" for node in graph.node)
    options = onnxruntime.SessionOptions()
    # ORT's fused kernels (attention, layer norm) differ from torch by ~1e-3 with or without quantized tables
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_path), options)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, loaded.numpy(), atol=1e-5 * float(loaded.abs().max()), rtol=0)


def test_tables_stay_float_where_no_layer_is_quantized(encoder_task):
    model, dataset, ids, tmp = encoder_task
    task = Task(dataset, model, (torch.from_numpy(ids[:4]),), tmp.mktemp("ptq"))
    spec = PTQSpec(activations=None, include=["head"])
    sim, _, tables = build_simulation(spec, model, task, RunContext())
    with sim.configured({}) as float_model, torch.no_grad():
        assert torch.equal(float_model.get_parameter(TABLE), model.embed.weight)
    with sim.configured({"head": initial_config(spec, sim)["head"]}) as quantized, torch.no_grad():
        assert torch.equal(quantized.get_parameter(TABLE), tables.quantized[TABLE].dequantized)
    assert tables.report(written=False) == {"format": "fp32", "tables": [],
                                            "kept_float": {TABLE: "no layer is quantized"}}


def test_the_general_path_accepts_embeddings_but_not_smoothquant():
    assert not PTQSpec(activations=None, embeddings={"bits": 4, "group_size": 16}).is_x86_int8_default
    with pytest.raises(ValueError, match="smoothquant and extra_formats"):
        PTQSpec(activations=None, smoothquant={"alpha": 0.5})


class TiedHead(nn.Module):
    """Output projection sharing the embedding table, as language models do."""

    def __init__(self):
        super().__init__()
        self.embed, self.mid, self.head = nn.Embedding(100, 32), nn.Linear(32, 32), nn.Linear(32, 100, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mid(self.embed(ids)))).mean(1)


def test_a_tied_table_is_stored_once_as_its_layer_weight(tmp_path):
    torch.manual_seed(0)
    model = TiedHead().eval()
    ids = np.random.default_rng(0).integers(0, 100, (64, 8))
    dataset = Dataset.from_arrays({"train.ids": ids[:32], "val.ids": ids[32:]}, ["ids"])
    task = Task(dataset, model, (torch.from_numpy(ids[:4]),), tmp_path)
    result = apply_general_ptq(PTQSpec(activations=None, export_onnx=False), model, task, RunContext())
    tied = next(iter(result.metrics["embeddings"]["kept_float"]))
    assert result.metrics["embeddings"]["tables"] == []
    assert result.metrics["embeddings"]["kept_float"][tied] == "tied to layer 'head': stored as that layer's weight"
    with safe_open(str(result.artifacts[0].path), framework="pt") as archive:
        manifest = {entry["attr"]: entry for entry in json.loads(archive.metadata()["manifest"])}
    assert tied in manifest and "embedding" not in manifest[tied]  # once, as the int8 head weight
