"""Run by test_int8_kernels in a fresh process (its environment may cap oneDNN's ISA): quantizes a small CNN to
int8 `.pt2` graphs with full-range and with 0..127 activations and to an ONNX Runtime int8 file with 7-bit
weights, and prints as JSON how far the machine's compiled int8 kernels are from each Q/DQ graph."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from compression.measure import run_compiled
from compression.ptq.int8_kernels import full_range_activations_saturate
from compression.ptq.onnx_int8 import write_onnxruntime_int8
from compression.ptq.quantize import quantize_int8


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 16)).eval()
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    figures = {"saturate": full_range_activations_saturate()}
    for reduce_range in (False, True):
        report = {}
        int8 = quantize_int8(model, (x,), [(x,)], report=report, reduce_range=reduce_range)
        with torch.no_grad():
            reference = int8(x)  # the Q/DQ graph in float: what the kernels are meant to compute
            error = (run_compiled(int8)(x) - reference).abs().max() / reference.abs().max()
        figures[f"kernel_error_{report['activation_range']}"] = error.item()
    with tempfile.TemporaryDirectory() as scratch:
        written = write_onnxruntime_int8(model, (x,), [(x,)], Path(scratch) / "model.onnx", reduce_range=True)
        int8_weights = [numpy_helper.to_array(t) for t in onnx.load(str(written.path)).graph.initializer
                        if t.data_type == onnx.TensorProto.INT8]
    figures["onnx_reduced_max_abs_weight"] = int(max(np.abs(w.astype(np.int64)).max() for w in int8_weights))
    print(json.dumps(figures))

if __name__ == "__main__":
    sys.exit(main())
