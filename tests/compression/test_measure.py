import math

import torch

from compression import zoo
from compression.measure import file_size, latency_ms, latency_profile, parameter_count
from compression.modes import is_training, train_mode
from compression.ptq import quantize_int8


def test_parameter_count_includes_int8_weights_of_a_quantized_graph():
    torch.manual_seed(0)
    model = zoo.build("mlp", input_shape=8, hidden=(16,), num_classes=3)
    assert parameter_count(model) == 8 * 16 + 16 + 16 * 3 + 3
    x = torch.randn(32, 8)
    quantized = quantize_int8(model, (x[:4],), [(x,)])
    assert sum(p.numel() for p in quantized.parameters()) == 16 + 3  # only the fp32 biases stay parameters
    assert parameter_count(quantized) == parameter_count(model)


def test_latency_is_a_positive_median_and_leaves_the_mode_alone(tmp_path):
    model = zoo.build("mlp", input_shape=8, hidden=(16,))
    train_mode(model)
    profile = latency_profile(model, (torch.randn(3, 8),), [1, 16], repeats=5)
    assert set(profile) == {1, 16} and all(0 < ms < 1000 and math.isfinite(ms) for ms in profile.values())
    assert 0 < latency_ms(model, (torch.randn(3, 8),), repeats=3)
    assert is_training(model)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1234)
    assert file_size(path) == 1234
