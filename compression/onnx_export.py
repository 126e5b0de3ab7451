"""ONNX QDQ export of an integer-quantized model, for onnxruntime, TensorRT and OpenVINO.

The float graph is exported with `torch.onnx.export` (dynamo, with the model's own dynamic dims as
`compression.io` derives them), then every quantized weight initializer is replaced by its integer codes feeding a
`DequantizeLinear` (scale, zero point, per-tensor / per-channel `axis` / per-group `block_size`), and the
activation input of its Conv/Gemm/MatMul gets a `QuantizeLinear -> DequantizeLinear` pair with the calibrated
scale. These are exactly the values and the rounding the simulated torch model uses, so runtimes that fuse QDQ
into integer kernels compute the same function.

Weights of up to 4 bits are stored as ONNX INT4/UINT4 (two codes per byte), 5-7 bit weights as int8/uint8 codes
limited to their range (dequantization does not clamp, so the values are exact); activations must be 8-bit (the
only width every runtime quantizes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from compression.io import dynamic_shapes_of
from compression.quant.affine import QParams
from compression.quant.weights import QuantizedWeight

OPSET = 21  # blocked (per-group) DequantizeLinear needs opset 21
COMPUTE_OPS = {"Conv", "Gemm", "MatMul"}


def export_float(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> onnx.ModelProto:
    example_inputs = tuple(tensor[:2].clone() for tensor in example_inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exported graph modules report training=True; their ops are eval ops
        program = torch.onnx.export(model, example_inputs, dynamo=True, opset_version=OPSET,
                                    dynamic_shapes=dynamic_shapes_of(model, len(example_inputs)), optimize=False,
                                    verbose=False)
    return program.model_proto


def _code_tensor(name: str, codes: np.ndarray, bits: int, signed: bool) -> onnx.TensorProto:
    """Codes of up to 4 bits as ONNX INT4/UINT4 (two per byte in the file), wider ones as INT8/UINT8."""
    if bits <= 4:
        # ONNX 4-bit layout: element 2j in the low nibble of byte j, element 2j+1 in the high nibble.
        nibbles = (codes.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
        nibbles = np.pad(nibbles, (0, nibbles.size % 2))
        packed = nibbles[0::2] | (nibbles[1::2] << 4)
        dtype = TensorProto.INT4 if signed else TensorProto.UINT4
        return helper.make_tensor(name, dtype, codes.shape, packed.tobytes(), raw=True)
    return _initializer(name, codes.astype(np.int8 if signed else np.uint8))


def _weight_initializers(attr: str, weight: QuantizedWeight) -> tuple[list[onnx.TensorProto], dict, list | None]:
    """(codes, scale and zero point initializers, DequantizeLinear attributes, shape to reshape the result to)."""
    params = weight.qparams
    bits, signed = weight.format.bits, params.qmin < 0
    codes = weight.codes.numpy()
    scale = params.scale.float().numpy()
    zero_point = params.zero_point.numpy()
    attributes, shape = {}, None
    if params.group_size is not None:
        # Groups run along the flattened input dims of each output channel: dequantize (out, K) in blocks along K
        # (ONNX allows a shorter last block, as our groups do), then restore the weight's shape.
        codes, shape = codes.reshape(codes.shape[0], -1), list(codes.shape)
        attributes = {"axis": 1, "block_size": params.group_size}
    elif params.axis is not None:
        attributes = {"axis": params.axis}
    else:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    tensors = [_code_tensor(f"{attr}_quantized", codes, bits, signed), _initializer(f"{attr}_scale", scale),
               _code_tensor(f"{attr}_zero_point", zero_point, bits, signed)]
    return tensors, attributes, shape


def _compute_node(graph: onnx.GraphProto, tensor: str) -> tuple[onnx.NodeProto, int] | None:
    """The Conv/Gemm/MatMul consuming `tensor` (possibly through a Transpose) and the input slot it uses."""
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name != tensor:
                continue
            if node.op_type in COMPUTE_OPS:
                return node, slot
            if node.op_type == "Transpose":
                return _compute_node(graph, node.output[0])
    return None


def _initializer(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def insert_qdq(proto: onnx.ModelProto, weights: dict[str, QuantizedWeight],
               activations: dict[str, QParams]) -> onnx.ModelProto:
    """Rewrite the float `proto` in place: integer weights behind DequantizeLinear, QDQ on quantized inputs.

    `weights` and `activations` are keyed by the weight's attribute name, which is its initializer name.
    """
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for attr, weight in weights.items():
        if attr not in initializers:
            raise ValueError(f"weight '{attr}' is not an initializer of the exported graph")
        found = _compute_node(graph, attr)
        tensors, attributes, shape = _weight_initializers(attr, weight)
        graph.initializer.remove(initializers[attr])
        graph.initializer.extend(tensors)
        dequantized = f"{attr}_dequantized" if shape else attr
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{attr}_quantized", f"{attr}_scale",
                                                               f"{attr}_zero_point"], [dequantized], **attributes))
        if shape:
            graph.initializer.append(_initializer(f"{attr}_shape", np.array(shape, dtype=np.int64)))
            new_nodes.append(helper.make_node("Reshape", [dequantized, f"{attr}_shape"], [attr]))
        if attr in activations and found is not None:
            new_nodes.extend(_activation_qdq(graph, found[0], 1 - found[1] if found[0].op_type == "MatMul" else 0,
                                             attr, activations[attr]))
    graph.node.extend(new_nodes)
    _topological_sort(graph)
    return proto


def _activation_qdq(graph: onnx.GraphProto, node: onnx.NodeProto, slot: int, attr: str,
                    params: QParams) -> list[onnx.NodeProto]:
    if params.qmax - params.qmin != 255:
        raise ValueError("ONNX export quantizes activations to 8 bits only")
    dtype = np.uint8 if params.qmin >= 0 else np.int8
    source, prefix = node.input[slot], f"{attr}_input"
    graph.initializer.extend([_initializer(f"{prefix}_scale", params.scale.float().numpy().reshape(())),
                              _initializer(f"{prefix}_zero_point", params.zero_point.numpy().astype(dtype).reshape(()))])
    node.input[slot] = f"{prefix}_dequantized"
    return [helper.make_node("QuantizeLinear", [source, f"{prefix}_scale", f"{prefix}_zero_point"],
                             [f"{prefix}_quantized"]),
            helper.make_node("DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
                             [f"{prefix}_dequantized"])]


def _topological_sort(graph: onnx.GraphProto) -> None:
    available = {init.name for init in graph.initializer} | {value.name for value in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("ONNX graph has a cycle or an undefined input after inserting QDQ nodes")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        placed = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in placed]
    copies = [onnx.NodeProto.FromString(node.SerializeToString()) for node in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def export_onnx_qdq(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path,
                    weights: dict[str, QuantizedWeight], activations: dict[str, QParams]) -> Path:
    """Write `model` (running float weights, no activation fake-quant) as an ONNX QDQ model at `path`."""
    proto = insert_qdq(export_float(model, example_inputs), weights, activations)
    for node in proto.graph.node:
        # The exporter annotates every node with its Python stack trace: a third of a small model's file.
        del node.metadata_props[:]
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path
