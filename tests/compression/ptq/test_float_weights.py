"""An int8 program that left most of its weights float says so (`compression/ptq/float_weights.py`): a mixture of
experts exported with stacked expert tensors (read by index + bmm, no linear layer) was 1.2x smaller and read as
done."""

import torch

from compression.ptq.float_weights import float_weight_report, float_weight_warning
from compression.ptq.quantize import quantize_int8, quantized_layer_count


class StackedExperts(torch.nn.Module):
    """A router (a linear layer) and experts stacked in one 3-D tensor, each token through its top expert."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.router = torch.nn.Linear(16, 4)
        self.experts = torch.nn.Parameter(torch.randn(4, 16, 64) / 4)
        self.out = torch.nn.Linear(64, 3)

    def forward(self, x):
        chosen = self.router(x).argmax(-1)
        return self.out(torch.bmm(x.unsqueeze(1), self.experts[chosen]).squeeze(1))


class Dense(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(16, 64), torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def _int8(model, **options):
    example = (torch.randn(8, 16),)
    return quantize_int8(model, example, [(torch.randn(8, 16),) for _ in range(2)], **options)


def test_weights_no_layer_reads_are_named_and_warned_about():
    program = _int8(StackedExperts())
    assert quantized_layer_count(program) == 2
    report = float_weight_report(program)
    assert report["unquantizable_share"] > 0.8
    assert report["largest_unquantizable"][0].startswith("experts [4, 16, 64] read by index")
    assert "stay float" in float_weight_warning(report)


def test_a_quantized_model_and_layers_the_job_excluded_get_no_warning():
    report = float_weight_report(_int8(Dense()))
    assert report["float_share"] == 0 and float_weight_warning(report) is None
    excluded = float_weight_report(_int8(Dense(), exclude=["first"]))
    assert excluded["float_share"] > 0.8 and excluded["unquantizable_share"] == 0
    assert float_weight_warning(excluded) is None


def test_3d_convolutions_left_float_are_warned_about_with_the_path_that_quantizes_them():
    # int8 PTQ stores a Conv3d's weights int8 (`kernelless_weights.py`); one it could not (read by another op too)
    # is named with the weight-only path, and no mixture-of-experts hint
    report = {"float_share": 0.96, "unquantizable_share": 0.96,
              "largest_unquantizable": ["conv.weight [16, 3, 3, 3, 3] read by conv3d, mul"],
              "unquantizable_readers": ["conv3d", "mul"]}
    warning = float_weight_warning(report)
    assert "3-D convolutions" in warning and "activations: null" in warning and "experts" not in warning
