"""An ONNX Runtime static int8 model of the float model, beside the int8 `.pt2` (PTQSpec `onnx_int8`).

Why a second int8 file: the `.pt2` runs its int8 kernels through `torch.compile`, whose fixed cost per call (the
compiled graph's guards and wrapper, one oneDNN call per layer) dominates a small model at batch 1, while ONNX
Runtime's fused QLinear kernels cost less per call; at batch 32 the `.pt2` (AMX/VNNI oneDNN kernels) is usually
ahead. The job times both at its batch sizes and says which is faster (`bench/int8_speed.py` has the table).

The model is ONNX Runtime's own static quantization of our float ONNX export (`compression.onnx_export`):
QDQ format, uint8 activations (asymmetric, per tensor, min-max over the calibration batches) and int8 weights
(symmetric, per output channel): "u8s8", the combination ONNX Runtime's x86 int8 kernels are made for. Its
calibration sees the same batches as the `.pt2`'s, but its ranges are its own, so its outputs differ slightly from
the `.pt2`'s.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import onnx
import torch

from compression.onnx_export import export_float


class OnnxInt8File(NamedTuple):
    path: Path
    per_channel: bool  # False: ONNX Runtime could not quantize per channel and the weights are per tensor
    reduced_range: bool  # 7-bit weights (PTQSpec.reduce_range): exact on CPUs without VNNI (int8_kernels.py)

    @property
    def weights(self) -> str:
        granularity = ("per output channel" if self.per_channel else
                       "per tensor (ONNX Runtime refused per-channel weights for this model)")
        return "int8 symmetric, " + granularity + (
            ", 7-bit range (reduce_range: exact on CPUs without VNNI)" if self.reduced_range else "")


def write_onnxruntime_int8(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                           calibration: Iterable[tuple[torch.Tensor, ...]], path: str | Path,
                           reduce_range: bool = False) -> OnnxInt8File:
    """Export `model` (float) to ONNX and quantize it statically with ONNX Runtime (u8s8 QDQ, per-channel
    weights, per-tensor where ONNX Runtime refuses per-channel), calibrated on the input tuples of
    `calibration`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = export_float(model, tuple(t.cpu() for t in example_inputs))
    names = [value.name for value in proto.graph.input]
    feeds = [{name: tensor.cpu().numpy() for name, tensor in zip(names, inputs)} for inputs in calibration]
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as scratch:
        float_path, prepared_path = Path(scratch) / "float.onnx", Path(scratch) / "prepared.onnx"
        for node in proto.graph.node:
            del node.metadata_props[:]  # the exporter's per-node stack traces: not worth shipping
        onnx.save(proto, str(float_path))
        # ONNX Runtime's recommended pre-processing: shape inference and its basic graph optimizations, which fold
        # BatchNormalization into the preceding Conv. Without it every BatchNormalization stays a float op between
        # QDQ pairs and the int8 model ran slower than the float one.
        quant_pre_process(str(float_path), str(prepared_path), skip_symbolic_shape=True)
        try:
            _quantize_static(prepared_path, path, feeds, per_channel=True, reduce_range=reduce_range)
            return OnnxInt8File(path, per_channel=True, reduced_range=reduce_range)
        except ValueError:
            # onnxruntime 1.32's int32 bias-scale check fails on some per-channel convs (PESTO's 1175-tap
            # single-channel conv): per-tensor weights still give an int8 model, and the metadata says so.
            _quantize_static(prepared_path, path, feeds, per_channel=False, reduce_range=reduce_range)
            return OnnxInt8File(path, per_channel=False, reduced_range=reduce_range)


def _quantize_static(source: Path, destination: Path, feeds: list[dict], per_channel: bool,
                     reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(feeds)

        def get_next(self):
            return next(self.batches, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(source), str(destination), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # ONNX Runtime's remedy for x86 CPUs without VNNI: 7-bit weights keep its uint8 x int8
                        # pair sums within int16 (compression/ptq/int8_kernels.py).
                        reduce_range=reduce_range)


class OnnxRuntimeModel(torch.nn.Module):
    """An ONNX Runtime session as a module (tensors in, tensors out), so it is evaluated and timed like the
    `.pt2`. It runs on the CPU with as many threads as torch uses, so both are timed on the same cores."""

    runs_without_torch_compile = True  # `compression.measure` times it as it is

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [value.name for value in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor):
        feed = {name: np.ascontiguousarray(tensor.detach().cpu().numpy()) for name, tensor in
                zip(self.input_names, inputs)}
        outputs = [torch.from_numpy(array) for array in self.session.run(None, feed)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
