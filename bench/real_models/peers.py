"""The two peers each compressed row is compared with: PyTorch's dynamic int8
(`torch.ao.quantization.quantize_dynamic`, Linear layers only) and, for CNNs, ONNX Runtime's static int8 (QDQ,
per-channel weights, activations calibrated on the training frames)."""

from __future__ import annotations

import io
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compression.measure import compare_latency, latency_profile
from compression.onnx_export import export_float


def dynamic_int8(model: nn.Module, example: tuple[torch.Tensor, ...], batch_sizes: list[int]) -> dict:
    """{"model", "bytes" (its state dict as torch.save writes it), "latency_ms", "reference_latency_ms" (compiled
    fp32, timed in alternation with it), "compiled"}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    try:
        timings, compiled = compare_latency({"peer": quantized, "fp32": model}, example, batch_sizes, True), True
    except Exception:  # quantized dynamic modules do not always compile; their eager time is what users get
        timings = {"peer": latency_profile(quantized, example, batch_sizes, compile=False),
                   "fp32": latency_profile(model, example, batch_sizes, compile=True)}
        compiled = False
    return {"model": quantized, "bytes": len(buffer.getvalue()), "latency_ms": timings["peer"],
            "reference_latency_ms": timings["fp32"], "compiled": compiled}


def onnxruntime_static_int8(model: nn.Module, example: tuple[torch.Tensor, ...], calibration: np.ndarray,
                            directory: Path, batch_sizes: list[int], repeats: int = 10) -> dict:
    """{"run" (numpy inputs -> numpy outputs), "bytes" (the .onnx file), "latency_ms", "reference_latency_ms"
    (compiled fp32 in torch, timed just before each batch size's ONNX Runtime timing), "per_channel" (False when
    per-channel weights could not be quantized and per-tensor was used)}."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path, int8_path = directory / "float.onnx", directory / "int8.onnx"
    onnx.save(export_float(model, example), float_path)
    name = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: calibration[i:i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    per_channel = True
    try:
        quantize_static(str(float_path), str(int8_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    except ValueError:  # onnxruntime 1.32's int32-bias scale check fails on some per-channel convs (PESTO's)
        per_channel = False
        quantize_static(str(float_path), str(int8_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=False,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])

    def run(inputs: np.ndarray) -> np.ndarray:
        return session.run(None, {name: inputs})[0]

    latency, reference = {}, {}
    for batch_size in batch_sizes:
        reference[batch_size] = latency_profile(model, example, [batch_size], compile=True)[batch_size]
        inputs = np.resize(calibration, (batch_size, *calibration.shape[1:])).astype(np.float32)
        for _ in range(3):
            run(inputs)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            run(inputs)
            timings.append((time.perf_counter() - started) * 1000)
        latency[batch_size] = statistics.median(timings)
    return {"run": run, "bytes": int8_path.stat().st_size, "latency_ms": latency, "reference_latency_ms": reference,
            "per_channel": per_channel}
