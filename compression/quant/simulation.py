"""A graph module with switchable simulated quantization per layer.

Every selected conv/linear gets an `InputQuantizer` inserted on its input and an `OutputTap` on its output.
`configure({layer: WeightFormat | None})` swaps each layer's weight between its float value and its dequantized
quantized value (cached per format) and switches its input quantizer, so sensitivity analysis and the accuracy
budget search re-evaluate configurations without re-tracing or re-calibrating anything. Embedding tables given
to the simulation run quantized in every configuration that quantizes a layer (so sensitivity, the budget search
and the reported metric see them as the packed file stores them) and float in the all-float reference.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch
from torch import fx, nn

from compression.errors import check_finite_range
from compression.quant.affine import QParams, fake_quantize, qparams_from_min_max
from compression.quant.graph import Layer, ensure_bias, get_tensor, set_tensor
from compression.quant.observers import Observer
from compression.quant.weights import QuantizedWeight, WeightFormat, quantize_weight


class InputQuantizer(nn.Module):
    """Observes (calibration) or fake-quantizes (inference) a layer's input; optionally records its batch mean."""

    def __init__(self, observer: Observer | None):
        super().__init__()
        self.observer = observer
        self.mode = "off"  # off | observe | quantize
        self.qparams: QParams | None = None
        self.record_mean = False
        self.input_sum: torch.Tensor | None = None
        self.count = 0

    def finish_calibration(self, where: str = "a layer input") -> None:
        lo, hi = self.observer.range()
        check_finite_range(lo, hi, where)
        self.qparams = qparams_from_min_max(torch.tensor(lo), torch.tensor(hi), self.observer.bits,
                                            symmetric=self.observer.symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            self.observer.observe(x)
        elif self.mode == "quantize":
            x = fake_quantize(x, self.qparams)
        if self.record_mean:
            batch_sum = x.detach().double().sum(0)
            self.input_sum = batch_sum if self.input_sum is None else self.input_sum + batch_sum
            self.count += x.shape[0]
        return x


class OutputTap(nn.Module):
    """Identity that can keep the outputs it sees (for per-layer output SQNR)."""

    def __init__(self):
        super().__init__()
        self.keep = False
        self.kept: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep:
            self.kept.append(x.detach())
        return x


def _module_name(layer: Layer, role: str) -> str:
    return f"_ptq_{role}_{layer.name.replace('.', '_')}"


class QuantSimulation:
    def __init__(self, gm: fx.GraphModule, layers: list[Layer], observers: dict[str, Observer] | None,
                 tables: dict[str, QuantizedWeight] | None = None, folded_batch_norms: dict[str, dict] | None = None):
        """`observers` maps layer name -> activation observer (None: weights only); `tables` embedding table
        attribute -> its quantized value; `folded_batch_norms` what `fold_batchnorm` folded into `gm`'s convs."""
        self.gm = gm
        self.folded_batch_norms = folded_batch_norms or {}
        self.tables = tables or {}
        self.float_tables = {attr: get_tensor(gm, attr).detach().clone() for attr in self.tables}
        self.layers = {layer.name: layer for layer in layers}
        self.float_weights = {layer.name: get_tensor(gm, layer.weight_attr).detach().clone() for layer in layers}
        self.input_quantizers: dict[str, InputQuantizer] = {}
        self.taps: dict[str, OutputTap] = {}
        self.corrections: dict[tuple[str, WeightFormat], torch.Tensor] = {}
        self.float_biases: dict[str, torch.Tensor] = {}
        self.mean_inputs: dict[str, torch.Tensor] = {}
        self.bias_correction = False
        self._cache: dict[tuple[str, WeightFormat], QuantizedWeight] = {}
        self.config: dict[str, WeightFormat | None] = {name: None for name in self.layers}
        for layer in layers:
            quantizer = InputQuantizer(observers[layer.name] if observers else None)
            tap = OutputTap()
            gm.add_submodule(_module_name(layer, "input"), quantizer)
            gm.add_submodule(_module_name(layer, "output"), tap)
            with gm.graph.inserting_before(layer.node):
                quantized_input = gm.graph.call_module(_module_name(layer, "input"), (layer.node.args[0],))
            layer.node.args = (quantized_input, *layer.node.args[1:])
            with gm.graph.inserting_after(layer.node):
                tapped = gm.graph.call_module(_module_name(layer, "output"), (layer.node,))
            layer.node.replace_all_uses_with(tapped, delete_user_cb=lambda user: user is not tapped)
            self.input_quantizers[layer.name] = quantizer
            self.taps[layer.name] = tap
        gm.recompile()

    @property
    def quantizes_activations(self) -> bool:
        return any(q.observer is not None for q in self.input_quantizers.values())

    def quantized(self, name: str, fmt: WeightFormat) -> QuantizedWeight:
        key = (name, fmt)
        if key not in self._cache:
            self._cache[key] = quantize_weight(self.float_weights[name], fmt)
        return self._cache[key]

    def configure(self, config: dict[str, WeightFormat | None]) -> None:
        """Quantize the layers mapped to a format; the others (and layers missing from `config`) run in float."""
        self.config = {name: config.get(name) for name in self.layers}
        for name, fmt in self.config.items():
            layer = self.layers[name]
            weight = self.float_weights[name] if fmt is None else self.quantized(name, fmt).dequantized
            set_tensor(self.gm, layer.weight_attr, weight)
            if self.bias_correction:
                correction = 0 if fmt is None else self.correction(name, fmt)
                set_tensor(self.gm, layer.bias_attr, self.float_biases[name] + correction)
            quantizer = self.input_quantizers[name]
            quantizer.mode = "quantize" if fmt is not None and quantizer.qparams is not None else "off"
        for attr, table in self.tables.items():
            set_tensor(self.gm, attr, table.dequantized if self.tables_quantized else self.float_tables[attr])

    @property
    def tables_quantized(self) -> bool:
        """Whether the current configuration runs (and the packed file would store) the quantized tables."""
        return any(fmt is not None for fmt in self.config.values())

    @contextmanager
    def configured(self, config: dict[str, WeightFormat | None]):
        previous = dict(self.config)
        self.configure(config)
        try:
            yield self.gm
        finally:
            self.configure(previous)

    def calibrate(self, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        """Observe every quantized layer's input range on the float model, then fix the activation scales."""
        if not self.quantizes_activations:
            return
        self.configure({})
        for quantizer in self.input_quantizers.values():
            quantizer.mode = "observe"
        with torch.no_grad():
            for inputs in batches:
                self.gm(*inputs)
        for name, quantizer in self.input_quantizers.items():
            quantizer.finish_calibration(f"the input of layer {name}")
            quantizer.mode = "off"

    def enable_bias_correction(self, config: dict[str, WeightFormat | None],
                               batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        """Record each layer's mean (quantized) input under `config`; corrections follow from it per format.

        The layer is linear in its weight, so the mean output shift its weight error causes is exactly
        op(E[x], W_float - W_quant) averaged over the output's non-channel positions; E[x] is taken with the
        upstream layers quantized, since that is the input the layer will see.
        """
        for name in self.layers:
            self.float_biases[name] = get_tensor(self.gm, ensure_bias(self.gm, self.layers[name])).detach().clone()
        with self.configured(config):
            for quantizer in self.input_quantizers.values():
                quantizer.record_mean, quantizer.input_sum, quantizer.count = True, None, 0
            with torch.no_grad():
                for inputs in batches:
                    self.gm(*inputs)
            for quantizer in self.input_quantizers.values():
                quantizer.record_mean = False
        self.mean_inputs = {name: (q.input_sum / q.count).float() for name, q in self.input_quantizers.items()}
        self.bias_correction = True

    def correction(self, name: str, fmt: WeightFormat) -> torch.Tensor:
        """Bias correction of layer `name` quantized to `fmt` (computed once per pair)."""
        if (name, fmt) not in self.corrections:
            self.corrections[(name, fmt)] = self._mean_output_shift(name, fmt)
        return self.corrections[(name, fmt)]

    def _mean_output_shift(self, name: str, fmt: WeightFormat) -> torch.Tensor:
        layer = self.layers[name]
        weight_error = self.float_weights[name] - self.quantized(name, fmt).dequantized
        shift = layer.node.target(self.mean_inputs[name][None], weight_error, None, *layer.node.args[3:])
        channel_dim = 1 if layer.kind == "conv" else shift.dim() - 1
        return shift.mean(dim=[d for d in range(shift.dim()) if d != channel_dim])
