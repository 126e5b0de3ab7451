"""Run by test_int8_kernels in a fresh process (its environment may cap oneDNN's ISA): quantizes a small CNN to
an int8 `.pt2` graph and an ONNX Runtime int8 file as a job does, and prints what the machine's int8 kernels made
of them as JSON."""

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
    report = {}
    int8 = quantize_int8(model, (x,), [(x,)], report=report)
    with torch.no_grad():
        reference = int8(x)  # the Q/DQ graph in float: what the job measured and the kernels must compute
        kernel_error = (run_compiled(int8)(x) - reference).abs().max() / reference.abs().max()
    with tempfile.TemporaryDirectory() as scratch:
        written = write_onnxruntime_int8(model, (x,), [(x,)], Path(scratch) / "model.onnx")
        int8_weights = [numpy_helper.to_array(t) for t in onnx.load(str(written.path)).graph.initializer
                        if t.data_type == onnx.TensorProto.INT8]
    print(json.dumps({"saturate": full_range_activations_saturate(), "activation_range": report["activation_range"],
                      "kernel_error": kernel_error.item(), "onnx_reduced_range": written.reduced_range,
                      "onnx_max_abs_weight": int(max(np.abs(w.astype(np.int64)).max() for w in int8_weights))}))


if __name__ == "__main__":
    sys.exit(main())
