"""Programs lowered to core ATen (`run_decompositions()`, the ExecuTorch flow) get every method: their
convolutions and linear layers are layer calls again (`compression.core_aten_layers`)."""

import numpy as np
import torch
from torch import nn

from compression import zoo
from compression.context import RunContext
from compression.core_aten_layers import core_aten_layers
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.quant.graph import find_layers
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec
from tests.compression.real_shapes import bert_inputs, tiny_bert


class _EveryLayerKind(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.tokens = nn.Linear(4, 6)  # on a 3-D input: expand, view and bmm once decomposed
        self.heads = nn.Linear(6, 3)  # on a 4-D input
        self.temporal = nn.Conv1d(6, 6, 3)
        self.hidden = nn.Linear(6, 6)  # 2-D with a bias: addmm
        self.out = nn.Linear(6, 5, bias=False)  # 2-D without: mm (weight_products_as_linear's)

    def forward(self, x):
        y = self.up(self.norm(self.conv(x)).relu()).flatten(2).transpose(1, 2)
        y = self.tokens(y)
        per_head = self.heads(y.unsqueeze(1).expand(-1, 2, -1, -1)).mean((1, 2))
        z = self.temporal(y.transpose(1, 2)).mean(-1)
        return self.out(self.hidden(z)), per_head


def test_decomposed_layers_become_layer_calls_that_compute_exactly_the_same():
    torch.manual_seed(0)
    graph = export_model(_EveryLayerKind().eval(), (torch.randn(2, 3, 8, 8),)).run_decompositions().module()
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        before = graph(x)
    assert core_aten_layers(graph) == {"convolutions": 3, "addmm_linears": 1, "bmm_linears": 2}
    targets = {node.target for node in graph.graph.nodes if node.op == "call_function"}
    aten = torch.ops.aten
    assert not targets & {aten.convolution.default, aten.addmm.default, aten.bmm.default}
    assert {aten.conv2d.default, aten.conv_transpose2d.input, aten.conv1d.default, aten.linear.default} <= targets
    with torch.no_grad():
        after = graph(x)
    for got, want in zip(after, before):  # linear and addmm may take different BLAS kernels: rounding apart
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    linear_inputs = [node.args[0].meta["val"].dim() for node in graph.graph.nodes if node.target == aten.linear.default]
    assert sorted(linear_inputs) == [2, 3, 4]  # each on the input the layer was called on, not a flattened view
    assert {layer.name for layer in find_layers(graph)} == {"conv", "temporal", "tokens", "heads", "hidden"}


def _decomposed_job(tmp_path, model, inputs, arrays, spec):
    program = export_model(model, inputs).run_decompositions()
    save_program(program, tmp_path / "m.pt2")
    np.savez(tmp_path / "d.npz", **arrays)
    return run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [spec], EvaluationSpec(latency=False),
                        RunContext(), tmp_path / "work")


def test_a_decomposed_cnn_is_quantized_as_its_exported_program_is(tmp_path):
    """Failed before in the dry run: "convolution is not an aten conv2d operator"."""
    torch.manual_seed(0)
    model = zoo.build("small_cnn", image_size=16, width=8).eval()
    images = np.random.default_rng(0).standard_normal((64, 1, 16, 16)).astype("float32")
    result = _decomposed_job(tmp_path, model, (torch.randn(2, 1, 16, 16),),
                             {"train.x": images[:48], "val.x": images[48:]}, PTQSpec(calibration_samples=16))
    assert result.baseline["core_aten_layers"] == {"convolutions": 2, "addmm_linears": 2}
    assert result.final["method_metrics"]["quantized_layers"] == 4 and result.final["top1_agreement"] > 0.9


def _token_arrays():
    generator = np.random.default_rng(0)
    ids = generator.integers(0, 100, (48, 8))
    mask = np.ones((48, 8), dtype=np.int64)
    mask[::3, -3:] = 0
    return {"train.input_ids": ids[:32], "train.attention_mask": mask[:32], "val.input_ids": ids[32:],
            "val.attention_mask": mask[32:]}


def test_a_decomposed_encoder_gets_every_linear_quantized_and_its_mlp_pruned(tmp_path):
    """The views around each flattened product were traced inside its nn.Linear, which the quantizer took for the
    layer's calls ("mul_30 is not an aten linear operator"), and they froze every channel group for pruning."""
    quantized = _decomposed_job(tmp_path / "ptq", tiny_bert(), bert_inputs(), _token_arrays(),
                                PTQSpec(calibration_samples=16))
    assert quantized.baseline["core_aten_layers"] == {"addmm_linears": 10, "bmm_linears": 2}
    assert quantized.final["method_metrics"]["quantized_layers"] == 12
    assert quantized.final["cosine"] > 0.99
    pruned = _decomposed_job(tmp_path / "prune", tiny_bert(), bert_inputs(), _token_arrays(),
                             PruneSpec(kind="structured", sparsity=0.25))
    groups = pruned.final["method_metrics"]["groups"]
    assert groups and pruned.final["method_metrics"]["parameter_reduction"] > 0.05
