import math

import pytest
import torch

from compression import zoo
from compression.measure import (
    SPREAD_TARGET,
    alternate,
    compiled,
    file_size,
    latency_ms,
    latency_profile,
    parameter_count,
    spread,
    time_in_alternation,
    verdict,
)
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
    profile = latency_profile(model, (torch.randn(3, 8),), [1, 16], budget_s=0.2)
    assert set(profile) == {1, 16} and all(0 < ms < 1000 and math.isfinite(ms) for ms in profile.values())
    assert 0 < latency_ms(model, (torch.randn(3, 8),), budget_s=0.1)
    assert is_training(model)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1234)
    assert file_size(path) == 1234


def test_spread_is_the_interquartile_range_over_the_median():
    assert spread([10.0]) == 0.0
    assert spread([10.0, 10.0, 10.0, 10.0, 10.0]) == 0.0
    assert spread([8.0, 9.0, 10.0, 11.0, 12.0]) == pytest.approx((11 - 9) / 10)
    assert spread([1.0, 10.0, 10.0, 10.0, 100.0]) == 0.0  # one outlier each side does not move the quartiles


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rounds_stop_once_every_model_is_steady_or_the_budget_is_spent():
    clock = FakeClock()

    def steady():
        clock.now += 0.1
        return {"a": 5.0, "b": 2.0}

    figures, busy = alternate(steady, budget_s=10, min_rounds=5, clock=clock)
    assert figures == {"a": [5.0] * 5, "b": [2.0] * 5} and len(busy) == 5  # steady: stops at the minimum

    def slow_steady():  # a round of seconds (a large model): three steady rounds are enough
        clock.now += 3.0
        return {"a": 900.0, "b": 2500.0}

    figures, _ = alternate(slow_steady, budget_s=2.0, min_rounds=5, clock=clock)
    assert figures == {"a": [900.0] * 3, "b": [2500.0] * 3}
    slow_values = iter([900.0, 1500.0] * 100)

    def slow_noisy():
        clock.now += 3.0
        return {"a": next(slow_values)}

    figures, _ = alternate(slow_noisy, budget_s=100, min_rounds=5, clock=clock)
    assert len(figures["a"]) > 3  # the shorter minimum still needs a steady spread to stop

    noisy_values = iter([1.0, 3.0] * 1000)

    def one_noisy():
        clock.now += 0.25
        return {"steady": 2.0, "noisy": next(noisy_values)}

    clock.now = 0.0
    figures, _ = alternate(one_noisy, budget_s=2.0, min_rounds=5, clock=clock)
    assert len(figures["noisy"]) == 9 and spread(figures["noisy"]) >= SPREAD_TARGET  # ran until the budget ended
    figures, _ = alternate(one_noisy, budget_s=100, min_rounds=5, max_rounds=30, clock=clock)
    assert len(figures["noisy"]) == 30


def test_a_timing_under_load_or_with_a_wide_spread_is_not_reliable():
    assert verdict([10.0, 10.1, 9.9, 10.0, 10.0], busy_cpus=0, cpus=2, threads=1) == (True, None)
    reliable, reason = verdict([10.0, 10.1, 9.9, 10.0, 10.0], busy_cpus=1.5, cpus=2, threads=1)
    assert not reliable and "under load" in reason
    reliable, reason = verdict([5.0, 10.0, 15.0, 20.0, 25.0], busy_cpus=0, cpus=8, threads=1)
    assert not reliable and "spread" in reason


def test_models_are_timed_in_alternation_and_compiled_once():
    torch.manual_seed(0)
    model, other = zoo.build("mlp", input_shape=8, hidden=(16,)), zoo.build("mlp", input_shape=8, hidden=(32,))
    timings = time_in_alternation({"model": model, "other": other}, (torch.randn(3, 8),), [1, 4], budget_s=0.1)
    for per_batch in timings.values():
        assert set(per_batch) == {1, 4}
        for timing in per_batch.values():
            assert timing.median_ms > 0 and timing.rounds >= 5 and timing.load_average >= 0
            assert timing.reliable == (timing.reason is None)
    assert timings["model"][1].rounds == timings["other"][1].rounds  # one figure each per round
    assert compiled(model) is compiled(model) and compiled(model) is not compiled(other)


def test_a_runtime_that_runs_without_torch_compile_is_timed_as_it_is_beside_a_compiled_model(tmp_path):
    from compression.measure import _COMPILED
    from compression.onnx_export import export_float
    from compression.ptq.onnx_int8 import OnnxRuntimeModel

    torch.manual_seed(0)
    model, x = zoo.build("mlp", input_shape=8, hidden=(16,)), torch.randn(3, 8)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(export_float(model, (x,)).SerializeToString())
    runtime = OnnxRuntimeModel(path, threads=1)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), model(x), rtol=1e-4, atol=1e-5)
    timings = time_in_alternation({"model": model, "onnx": runtime}, (x,), [2], compile=True, budget_s=0.1)
    assert timings["onnx"][2].median_ms > 0 and timings["onnx"][2].rounds == timings["model"][2].rounds
    kept = [kept for kept, _ in _COMPILED]
    assert any(m is model for m in kept) and not any(m is runtime for m in kept)
