"""Convolutions padded "same" or "valid" (`aten.conv2d.padding`, as transformers' EfficientNet and Keras ports
have) get numeric padding before int8 quantization: the x86 quantizer refused them and the whole stage failed."""

import torch
from torch import nn

from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.quantize import quantized_layer_count
from compression.ptq.string_padding import numeric_conv_padding


class _StringPadded(nn.Module):
    """Every kind of string padding: odd and even kernels (an even one pads one more element after), dilation,
    depthwise groups, "valid", and a 1-D conv."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding="same")
        self.depthwise = nn.Conv2d(8, 8, (4, 3), padding="same", groups=8, dilation=(1, 2))
        self.valid = nn.Conv2d(8, 8, 3, padding="valid")
        self.temporal = nn.Conv1d(8, 4, 4, padding="same")

    def forward(self, x):
        features = self.depthwise(torch.relu(self.first(x)))
        return self.temporal(features.mean(2)).flatten(1).sum(1, keepdim=True) + self.valid(features).mean((2, 3))


def test_string_padding_becomes_numeric_padding_exactly_and_every_conv_is_quantized():
    torch.manual_seed(0)
    model, x = _StringPadded().eval(), torch.randn(4, 3, 12, 11)
    graph = export_model(model, (x,)).module()
    assert numeric_conv_padding(graph) == 4
    assert not any(str(node.target).endswith(".padding") for node in graph.graph.nodes)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))  # the same arithmetic: zeros before and after, as PyTorch pads

    report = {}
    int8 = quantize_int8(model, (x,), [(torch.randn(4, 3, 12, 11),) for _ in range(4)], report=report)
    assert report["numeric_conv_padding"] == 4 and quantized_layer_count(int8) == 4
    with torch.no_grad():
        reference = model(x)
        assert (int8(x) - reference).abs().max() < 0.05 * reference.abs().max()


def test_even_string_padding_becomes_numeric_in_place_for_every_method(tmp_path):
    """Before any stage, the upload's string-padded convs whose padding is even on both sides become numeric convs
    that keep their traced outputs (no re-export): a weight-only stage found no layer in a model whose convs were
    all string-padded (transformers' EfficientNetModel: 'no conv/linear layer left to quantize')."""
    import numpy as np

    from compression.context import RunContext
    from compression.io import save_program
    from compression.pipeline import run_pipeline
    from compression.ptq.string_padding import even_conv_padding_in_place
    from compression.specs import EvaluationSpec, PTQSpec

    torch.manual_seed(0)
    model, x = _StringPadded().eval(), torch.randn(4, 3, 12, 11)
    graph = export_model(model, (x,)).module()
    # the (4, 3) kernel's "same" pads one more row after: left for int8 PTQ's own rewrite, which re-exports
    assert even_conv_padding_in_place(graph) == 2
    names = [str(node.target) for node in graph.graph.nodes if "conv" in str(node.target)]
    assert sorted(names) == ["aten.conv1d.padding", "aten.conv2d.default", "aten.conv2d.default",
                             "aten.conv2d.padding"]
    assert all("val" in node.meta for node in graph.graph.nodes if node.target == torch.ops.aten.conv2d.default)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))

    class _AllStringPadded(nn.Module):  # EfficientNet's kind: no layer but string-padded convs
        def __init__(self):
            super().__init__()
            self.stem, self.block = nn.Conv2d(3, 16, 3, padding="valid"), nn.Conv2d(16, 16, 5, padding="same")

        def forward(self, x):
            return self.block(torch.relu(self.stem(x)))

    program = tmp_path / "model.pt2"
    save_program(export_model(_AllStringPadded().eval(), (x,)), program)
    np.savez(tmp_path / "data.npz", **{f"{split}.x": torch.randn(8, 3, 12, 11).numpy() for split in ("train", "val")})
    result = run_pipeline(program, tmp_path / "data.npz", [PTQSpec(weights={"bits": 8}, activations=None)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.stages[0].metrics["cosine"] > 0.99 and result.stages[0].metrics["compression_ratio"] > 2
