import pytest
import torch
from pydantic import ValidationError

from compression.evaluate import tensor_sqnr_db
from compression.ptq.quantize import quantize_int8
from compression.specs.ptq import EmbeddingQuantSpec, PTQSpec, SmoothQuantSpec, WeightQuantSpec


class OutlierBlock(torch.nn.Module):
    """LayerNorm -> Linear -> ReLU -> Linear whose LayerNorm gain makes two activation channels 25-40x larger
    than the rest, the pattern SmoothQuant targets in transformers; optionally with a residual read of the
    LayerNorm output (then the division cannot be folded into it)."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.norm = torch.nn.LayerNorm(64)
        self.fc1 = torch.nn.Linear(64, 64)
        self.fc2 = torch.nn.Linear(64, 8)
        with torch.no_grad():
            self.norm.weight[5], self.norm.weight[17] = 40.0, -25.0

    def forward(self, x):
        h = self.norm(x)
        out = self.fc2(torch.relu(self.fc1(h)))
        return out + h[:, :8] if self.residual else out


@pytest.mark.parametrize("residual", [False, True])
def test_smoothquant_lowers_the_error_outlier_channels_cause_in_w8a8(residual):
    torch.manual_seed(0)
    model = OutlierBlock(residual).eval()
    x = torch.randn(256, 64)
    calibration = [(x[i:i + 64],) for i in range(0, 256, 64)]
    with torch.no_grad():
        expected = model(x)
    plain = quantize_int8(model, (x[:4],), calibration, embeddings=None)
    report = {}
    smoothed = quantize_int8(model, (x[:4],), calibration, embeddings=None, smoothquant_alpha=0.5, report=report)
    with torch.no_grad():
        plain_sqnr, smoothed_sqnr = tensor_sqnr_db(expected, plain(x)), tensor_sqnr_db(expected, smoothed(x))
    assert smoothed_sqnr > plain_sqnr + 6  # measured 28 -> 39 dB (47 -> 58 with the float residual)
    # When the LayerNorm feeds only fc1 the division by s is folded into its gain and bias (no extra op).
    assert report["smoothquant"]["folded_into_layer_norm"] == (0 if residual else 1)
    assert report["smoothquant"]["groups"] == 2
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # the caller's model is untouched


def test_smoothquant_and_embedding_options_stay_on_the_default_int8_path():
    assert PTQSpec(smoothquant=SmoothQuantSpec(alpha=0.8), embeddings=EmbeddingQuantSpec(bits=4)).is_x86_int8_default
    assert PTQSpec(embeddings=None).is_x86_int8_default
    with pytest.raises(ValidationError, match="default int8 recipe only"):
        PTQSpec(smoothquant=SmoothQuantSpec(), weights=WeightQuantSpec(bits=4))
