"""`model.onnx`: an ONNX QDQ model (integer weights behind DequantizeLinear, QDQ activations), opset 21."""

from __future__ import annotations

from pathlib import Path

from compression.onnx_export import export_onnx_qdq

KIND = "model.onnx"
DESCRIPTION = "ONNX QDQ model (opset 21)"
PACKAGES = ("onnxruntime>=1.18", "numpy")
RECIPE = '''import onnxruntime

session = onnxruntime.InferenceSession("{path}", providers=["CPUExecutionProvider"])
input_names = [i.name for i in session.get_inputs()]
# outputs = session.run(None, dict(zip(input_names, numpy_arrays)))
'''

write = export_onnx_qdq


def load(path: str | Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
