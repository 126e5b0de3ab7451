"""Per-layer output SQNR holds every layer's outputs of a slice of examples at once: slices bounded in bytes give
the same figures as whole batches."""

import pytest
import torch
from torch import nn

from compression.quant.diagnostics import output_sqnr
from compression.quant.graph import as_graph_module, find_layers
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat


def test_output_sqnr_in_slices_bounded_in_bytes_matches_whole_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    images = torch.randn(12, 3, 16, 16)
    gm = as_graph_module(model, (images[:2],))
    sim = QuantSimulation(gm, find_layers(gm), observers=None)
    config = {name: WeightFormat(bits=4, granularity="per_tensor", symmetric=True) for name in sim.layers}
    whole = output_sqnr(sim, config, [(images[:7],), (images[7:],)])
    # one example's outputs of both layers, float and quantized, are 4 x 8 x 16 x 16 floats = 32 KiB: 3 fit in 100 KiB
    sliced = output_sqnr(sim, config, [(images[:7],), (images[7:],)], max_bytes=100 * 1024)
    assert set(whole) == set(sim.layers) and all(value > 5 for value in whole.values())
    assert sliced == pytest.approx(whole, rel=1e-9)
