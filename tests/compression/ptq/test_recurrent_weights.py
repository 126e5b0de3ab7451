"""GRU and LSTM weights in the int8 program: int8 codes with one scale per row, dequantized before the recurrent
op (torchao's x86 recipe has no recurrent layer; they stayed float32, half of a CRNN's weights)."""

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
        assert len(report["recurrent_weights"]) == 8
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
