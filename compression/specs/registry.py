"""Every stage method, declared once: its spec, where its implementation lives, and whether its output is final.

Torch-free, so the API can validate jobs from it: the implementation is a dotted path ("module:function") that
only the library imports, on first use (`compression.methods`). A new method is one `MethodDeclaration` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from compression.specs.common import Spec
from compression.specs.distill import (
    DifferentiableQuantizationSpec,
    FunctionMatchingSpec,
    KDSpec,
    QuantizedDistillationSpec,
)
from compression.specs.ipq import IPQSpec, QuantNoiseSpec
from compression.specs.llm import LLMPTQSpec
from compression.specs.prune import PruneSpec
from compression.specs.ptq import PTQSpec
from compression.specs.qat import QATSpec


@dataclass(frozen=True)
class MethodDeclaration:
    spec: type[Spec]
    # "module:function" with the signature apply(spec, model, task, ctx) -> StageResult
    implementation: str
    # Why nothing may follow this method (its output is in a final, deployable number format that training or
    # re-quantizing would undo); None when it hands the next stage an ordinary float model.
    final: str | None = None

    @property
    def name(self) -> str:
        return self.spec.model_fields["method"].default


DECLARATIONS = (
    MethodDeclaration(PTQSpec, "compression.ptq.apply:apply_ptq",
                      final="its output is a quantized deployable (int8 quantize/dequantize graph or packed low-bit "
                            "weights) that cannot be trained or quantized again"),
    MethodDeclaration(QATSpec, "compression.qat.apply:apply_qat"),
    MethodDeclaration(KDSpec, "compression.distill.kd:apply_kd"),
    MethodDeclaration(FunctionMatchingSpec, "compression.distill.function_matching:apply_function_matching"),
    MethodDeclaration(QuantizedDistillationSpec, "compression.distill.quantized:apply_quantized_distillation"),
    MethodDeclaration(DifferentiableQuantizationSpec,
                      "compression.distill.quantized:apply_differentiable_quantization",
                      final="its output is a codebook-quantized model that cannot be trained or quantized again"),
    MethodDeclaration(QuantNoiseSpec, "compression.pq.apply:apply_quant_noise"),
    MethodDeclaration(IPQSpec, "compression.pq.apply:apply_ipq",
                      final="its output is a product-quantized model (indices plus codebooks); further training or "
                            "quantization would undo the packing (use quant_noise before ipq, and put ipq last)"),
    MethodDeclaration(PruneSpec, "compression.prune.apply:apply_prune"),
    # Runs on a Hugging Face folder, not a program: `model` is the folder and `task` a `TextTask`.
    MethodDeclaration(LLMPTQSpec, "compression.llm.stage:apply_llm_stage",
                      final="its output is a compressed-tensors Hugging Face folder (packed low-bit weights) that "
                            "cannot be trained or quantized again"),
)
BY_NAME = {declaration.name: declaration for declaration in DECLARATIONS}


def declaration(method: str) -> MethodDeclaration:
    try:
        return BY_NAME[method]
    except KeyError:
        raise ValueError(f"unknown method '{method}'; known: {sorted(BY_NAME)}") from None
