"""In-place ops of exported graphs rewritten out of place before training (SEW-D's attention failed every training
method at its first backward)."""

import torch
from torch import nn

from compression.training.in_place_ops import rewrite_in_place_ops

aten = torch.ops.aten


class MaskedSoftmax(nn.Module):
    """DeBERTa's XSoftmax as export traces it: softmax, then the masked positions zeroed in place."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.register_buffer("seen", torch.zeros(6))

    def forward(self, x, mask):
        probs = torch.softmax(self.proj(x), -1)
        probs.masked_fill_(~mask, 0)
        return probs * 2 + probs.sum(-1, keepdim=True)  # read after the write


def _targets(graph_module):
    return [node.target for node in graph_module.graph.nodes if node.op == "call_function"]


def test_a_write_into_a_saved_output_is_rewritten_and_training_runs():
    x, mask = torch.randn(3, 6), torch.rand(3, 6) > 0.3
    module = torch.export.export(MaskedSoftmax().eval(), (x, mask)).module()
    assert aten.masked_fill_.Scalar in _targets(module)
    expected = module(x, mask)
    try:
        module(x, mask).sum().backward()
        raised = False
    except RuntimeError as exc:  # what every training method met on SEW-D
        raised = "modified by an inplace operation" in str(exc)
    assert raised
    assert rewrite_in_place_ops(module) == 1
    assert aten.masked_fill_.Scalar not in _targets(module) and aten.masked_fill.Scalar in _targets(module)
    got = module(x, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # later readers read the written values
    got.sum().backward()
    assert module.proj.weight.grad is not None and module.proj.weight.grad.abs().sum() > 0


class StateWrites(nn.Module):
    """Writes the program means to make: into its input and into a view, both of which stay in place."""

    def forward(self, x):
        x.add_(1)
        y = x * 2
        view = y[0]
        view.mul_(3)
        return y


def test_writes_into_inputs_and_views_stay_in_place():
    module = torch.export.export(StateWrites(), (torch.zeros(2, 3),)).module()
    writes = [aten.add_.Tensor, aten.mul_.Tensor]
    assert [target for target in _targets(module) if target in writes] == writes
    assert rewrite_in_place_ops(module) == 0
    assert [target for target in _targets(module) if target in writes] == writes
