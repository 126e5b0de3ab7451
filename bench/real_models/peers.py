"""The two peers each compressed row is compared with: PyTorch's dynamic int8
(`torch.ao.quantization.quantize_dynamic`, Linear layers only) and, for CNNs, ONNX Runtime's static int8 (QDQ,
per-channel weights, activations calibrated on the training frames), as the service writes it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compression.measure import compare_latency, latency_profile
from compression.ptq.onnx_int8 import OnnxRuntimeModel, write_onnxruntime_int8


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
                            directory: Path, batch_sizes: list[int]) -> dict:
    """{"run" (numpy inputs -> numpy outputs), "bytes" (the .onnx file), "latency_ms", "reference_latency_ms"
    (compiled fp32 in torch, timed in alternation with the ONNX Runtime session), "per_channel" (False when
    per-channel weights could not be quantized and per-tensor was used)}. The model is the one a `ptq` job's
    `extra_formats: ["onnx_int8"]` writes (`compression.ptq.onnx_int8`: u8s8 QDQ, BatchNorm folded)."""
    batches = [(torch.from_numpy(calibration[i:i + 32]),) for i in range(0, len(calibration), 32)]
    written = write_onnxruntime_int8(model, example, batches, directory / "int8.onnx")
    runtime = OnnxRuntimeModel(written.path)
    timings = compare_latency({"peer": runtime, "fp32": model}, example, batch_sizes, compile=True)

    def run(inputs: np.ndarray) -> np.ndarray:
        return runtime(torch.from_numpy(inputs)).numpy()

    return {"run": run, "bytes": written.path.stat().st_size, "latency_ms": timings["peer"],
            "reference_latency_ms": timings["fp32"], "per_channel": written.per_channel}
