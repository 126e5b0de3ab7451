"""The linear layers whose float weight an architecture's weight initialisation reads.

transformers runs the model's `_init_weights` over every module of a model it loads, the weights it loads
included (its init functions then skip the loaded tensors, but the code still looks the attribute up). In a
compressed-tensors folder a quantized linear layer has no `weight` (`weight_packed`, `weight_scale`, ...), so an
architecture whose `_init_weights` reads, say, `out_proj.weight` (Mamba's mixer, GPT-BigCode's `c_proj`) fails to
load with "'Linear' object has no attribute 'weight'". Those layers stay float (in the folder's `ignore` list),
the rest of the block is quantized.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# Of the quantized linear weights, the most that may stay float because the weight initialisation reads them
# (Mamba's out_proj and dt_proj hold a third, GPT-BigCode's c_proj 42 %, or 49.8 % at StarCoder's shapes with its
# multi-query attention; RWKV's and Falcon's are all of them):
# beyond it the folder would be barely smaller than the float one.
MAX_INIT_READ_SHARE = 0.5


def init_read_layers(build: Callable[[], nn.Module]) -> list[str]:
    """Names of the linear layers whose `weight` the weight initialisation of the model `build()` returns (a
    transformers model) reads without tolerating its absence; found on that model built on the meta device, so no
    weight is touched."""
    with torch.device("meta"):
        model = build()
    probe = _WeightProbe()
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            probe.watch(layer, name)
    for module in model.modules():
        probe.initialise(model, module)
    return sorted(probe.read)


def causal_lm_init_reads(config) -> list[str]:
    """`init_read_layers` of the causal LM transformers builds from `config`."""
    from compression.causal_lm_class import AutoCausalLM

    return init_read_layers(lambda: AutoCausalLM.from_config(config))


class _WeightProbe:
    """Linear layers without `weight`, as compressed-tensors leaves them. A lookup of the missing weight fails as
    it would there; when the failure escapes `_init_weights` (code such as `getattr(layer, "weight", None)`
    tolerates it), the layer is noted as read and answers from then on, and the initialisation is run again."""

    def __init__(self):
        self.read: set[str] = set()
        self.failed: list[str] = []

    def watch(self, layer: nn.Linear, name: str) -> None:
        weight, base, probe = layer._parameters.pop("weight"), type(layer), self

        def __getattr__(self, attribute):
            if attribute != "weight":
                return base.__getattr__(self, attribute)
            if name in probe.read:
                return weight
            probe.failed.append(name)
            raise AttributeError(f"'{base.__name__}' object has no attribute 'weight'")

        layer.__class__ = type(f"Probed{base.__name__}", (base,), {"__getattr__": __getattr__})

    def initialise(self, model: nn.Module, module: nn.Module) -> None:
        while True:
            self.failed.clear()
            try:
                model._init_weights(module)
                return
            except Exception as exc:  # noqa: BLE001 - whatever else fails on meta tensors: not probed further
                if not isinstance(exc, AttributeError) or not self.failed or self.failed[-1] in self.read:
                    return
                self.read.add(self.failed[-1])
