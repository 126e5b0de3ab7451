import torch
from torch import nn

from compression.quant.graph import as_graph_module, find_layers
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat


def _mean_output_error(sim: QuantSimulation, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((sim.gm(x) - model(x)).mean(0).abs().mean())


def test_bias_correction_removes_the_mean_output_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()
    generator = torch.Generator().manual_seed(1)
    calibration = torch.rand(512, 64, generator=generator) + 0.5  # non-zero mean inputs: weight error biases outputs
    held_out = torch.rand(512, 64, generator=generator) + 0.5
    gm = as_graph_module(model, (calibration[:4],))
    sim = QuantSimulation(gm, find_layers(gm), observers=None)
    config = {name: WeightFormat(bits=3, granularity="per_tensor", symmetric=False) for name in sim.layers}
    sim.configure(config)
    before = _mean_output_error(sim, model, held_out)
    sim.enable_bias_correction(config, [(calibration,)])
    sim.configure(config)
    after = _mean_output_error(sim, model, held_out)
    assert after < 0.3 * before
    sim.configure({})  # float again: the corrections apply only to quantized layers
    assert _mean_output_error(sim, model, held_out) < 1e-6
