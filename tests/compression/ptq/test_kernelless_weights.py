"""Weights of layers the x86 int8 recipe has no kernel for (GRU, LSTM, Conv3d, transposed convs) in the int8
program: int8 codes with one scale per slice of their first dimension, dequantized before the op (they stayed
float32: half of a CRNN's weights, 96 % of a video CNN's)."""

import torch

from compression.io import export_model, save_program
from compression.ptq.float_weights import float_weight_report
from compression.ptq.quantize import quantize_int8


class ConvThenRecurrent(torch.nn.Module):
    def __init__(self, kind: type[torch.nn.Module]):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(4, 16, 3, padding=1)
        self.rnn = kind(16, 24, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(48, 5)

    def forward(self, x):
        steps = torch.relu(self.conv(x)).transpose(1, 2)
        return self.head(self.rnn(steps)[0])


def _int8(kind):
    model, x = ConvThenRecurrent(kind).eval(), torch.randn(6, 4, 10)
    report = {}
    program = quantize_int8(model, (x,), [(x,)], report=report)
    return model, x, program, report


def test_gru_and_lstm_weights_are_stored_int8_per_row_and_compute_close_to_float(tmp_path):
    for kind, gates in ((torch.nn.GRU, 3), (torch.nn.LSTM, 4)):
        model, x, program, report = _int8(kind)
        # 2 layers x 2 directions x (input and hidden weights); the biases stay float
        assert len(report["weights_int8_without_kernel"]) == 8
        codes = program.get_buffer("rnn.weight_hh_l0_codes")
        assert codes.dtype == torch.int8 and codes.shape == (gates * 24, 24)
        assert program.get_buffer("rnn.weight_hh_l0_scale").shape == (gates * 24,)
        assert float_weight_report(program)["unquantizable_share"] == 0, float_weight_report(program)
        with torch.no_grad():
            expected, got = model(x), program(x)
        assert float((got - expected).abs().max() / expected.abs().max()) < 0.05
        # the program exports and saves with its int8 codes (the .pt2 the user downloads)
        path = save_program(export_model(program, (x,)), tmp_path / f"{kind.__name__}.pt2")
        float_path = save_program(export_model(model, (x,)), tmp_path / f"{kind.__name__}_fp32.pt2")
        assert path.stat().st_size < 0.5 * float_path.stat().st_size


class VideoDecoder(torch.nn.Module):
    """A Conv3d encoder and a ConvTranspose2d / ConvTranspose1d decoder, beside an ordinary conv2d."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encode = torch.nn.Conv3d(3, 8, (2, 3, 3), padding=(0, 1, 1))
        self.mix = torch.nn.Conv2d(8, 8, 1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, 2)
        self.up1d = torch.nn.ConvTranspose1d(4, 2, 2, 2)

    def forward(self, clip):
        frames = torch.relu(self.encode(clip)).mean(2)
        image = self.up(torch.relu(self.mix(frames)))
        return self.up1d(image.mean(2))


def test_3d_and_transposed_conv_weights_are_stored_int8_per_first_dimension():
    model, clip = VideoDecoder().eval(), torch.randn(4, 3, 2, 8, 8)
    report = {}
    program = quantize_int8(model, (clip,), [(clip,)], report=report)
    assert report["weights_int8_without_kernel"] == ["encode.weight", "up.weight", "up1d.weight"]
    codes = program.get_buffer("encode.weight_codes")
    assert codes.dtype == torch.int8 and codes.shape == (8, 3, 2, 3, 3)
    assert program.get_buffer("up.weight_scale").shape == (8,)  # a transposed conv's weight is [in, out, k, k]
    assert float_weight_report(program)["float_share"] == 0
    with torch.no_grad():
        expected, got = model(clip), program(clip)
    assert float((got - expected).abs().max() / expected.abs().max()) < 0.05


class Bags(torch.nn.Module):
    """A recommender's EmbeddingBag (sum over each row's bag of ids) into a linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bags, self.out = torch.nn.EmbeddingBag(40, 16, mode="sum"), torch.nn.Linear(16, 3)

    def forward(self, ids):
        return self.out(self.bags(ids))


def test_an_embedding_bags_table_is_stored_int8_per_row():
    """int8 PTQ left it float ("56 % of the model's weights stay float") with no int8 path for embedding_bag."""
    model, ids = Bags().eval(), torch.randint(0, 40, (8, 6))
    report = {}
    program = quantize_int8(model, (ids,), [(ids,)], report=report)
    assert report["weights_int8_without_kernel"] == ["bags.weight"]
    assert program.get_buffer("bags.weight_codes").dtype == torch.int8
    assert program.get_buffer("bags.weight_scale").shape == (40,)
    assert float_weight_report(program)["float_share"] < 0.2  # the output layer's bias and scales
    with torch.no_grad():
        expected, got = model(ids), program(ids)
    assert float((got - expected).abs().max() / expected.abs().max()) < 0.05


def test_the_general_path_warns_when_a_recurrent_layer_holds_most_weights_and_names_the_int8_recipe(tmp_path):
    import numpy as np

    from compression.context import RunContext
    from compression.data import Dataset
    from compression.quant.general import apply_general_ptq
    from compression.specs.ptq import PTQSpec
    from compression.task import Task

    model = ConvThenRecurrent(torch.nn.GRU).eval()
    x = np.random.default_rng(0).standard_normal((48, 4, 10)).astype(np.float32)
    dataset = Dataset.from_arrays({"train.x": x[:32], "val.x": x[32:]}, ["x"])
    task = Task(dataset, model, (torch.from_numpy(x[:4]),), tmp_path)
    result = apply_general_ptq(PTQSpec(activations=None, export_onnx=False), model, task, RunContext())
    report = result.metrics["float_weights"]
    assert report["unquantizable_share"] > 0.9 and "read by gru" in report["largest_unquantizable"][0]
    warning = result.metrics["warnings"][0]
    assert warning.startswith(f"{report['unquantizable_share']:.0%} of the model's weights stay float: the general")
    assert "default int8 recipe" in warning and "experts" not in warning
