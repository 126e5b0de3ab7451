import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from compression.onnx_export import export_onnx_qdq
from compression.quant.graph import as_graph_module, find_layers, fold_batchnorm
from compression.quant.observers import make_observer
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat
from tests.compression.quant.conftest import tiny_cnn


@pytest.mark.parametrize("fmt", [WeightFormat(bits=8), WeightFormat(bits=4, symmetric=False, granularity="per_group",
                                                                      group_size=16)],
                         ids=["int8-per-channel", "int4-asym-group16"])
def test_onnxruntime_runs_the_qdq_model_like_torch(tmp_path, fmt):
    model = tiny_cnn()
    x = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    gm = as_graph_module(model, (x[:4],))
    fold_batchnorm(gm)
    layers = find_layers(gm)
    sim = QuantSimulation(gm, layers, {layer.name: make_observer("minmax", 8, False) for layer in layers})
    sim.calibrate([(x,)])
    config = {name: fmt for name in sim.layers}
    sim.configure(config)
    with torch.no_grad():
        expected = sim.gm(x).numpy()
        float_out = model(x).numpy()
    weights = {sim.layers[name].weight_attr: sim.quantized(name, fmt) for name in sim.layers}
    activations = {sim.layers[name].weight_attr: sim.input_quantizers[name].qparams for name in sim.layers}
    for quantizer in sim.input_quantizers.values():
        quantizer.mode = "off"
    path = export_onnx_qdq(sim.gm, (x[:4],), tmp_path / "model.onnx", weights, activations)

    session = onnxruntime.InferenceSession(str(path))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("DequantizeLinear") == 2 * len(layers) and ops.count("QuantizeLinear") == len(layers)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    # Same function up to float rounding (an activation on a rounding tie may land one step away).
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.02 * scale
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95
    # and it is really quantized: it differs from the float model far more than from the simulation
    assert np.abs(got - expected).mean() < 0.2 * np.abs(got - float_out).mean()
