from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import Spec, Steps
from compression.specs.ptq import EmbeddingQuantSpec
from compression.specs.training import TrainingSpec

Bits = Annotated[int, Field(ge=2, le=8)]

# The weight and activation quantizer each preset means; either can be overridden on its own.
QAT_PRESETS = {
    "ste": ("ste", "ste"),  # min-max ranges, straight-through rounding: the baseline
    "lsq": ("lsq", "lsq"),  # learned step sizes for weights and activations (Esser et al.)
    "pact": ("ste", "pact"),  # learned activation clip (Choi et al.), min-max weights
    "sawb": ("sawb", "pact"),  # statistics-aware weight clip with PACT activations (the paper's pairing)
}


class QATSpec(Spec):
    """Quantization-aware training: finetune with fake-quantized conv/linear weights (and layer inputs), then bake
    the quantized weights into the model. The result is a .pt2 carrying quantized weight values and activation
    fake-quant, plus a bit-packed safetensors file (the real size: codes of `weight_bits` bits and their scales)."""

    method: Literal["qat"] = "qat"
    weight_bits: Bits = Field(4, description="Bits of every quantized weight (first and last layers: "
                                             "first_last_bits).")
    activation_bits: Bits | None = Field(8, description="Bits of every quantized layer's input; null quantizes "
                                                        "weights only.")
    quantizer: Literal["ste", "lsq", "pact", "sawb"] = Field(
        "lsq", description="Preset: ste = min-max weights and activations; lsq = learned step sizes for both; "
                           "pact = min-max weights with learned activation clip; sawb = SAWB weight clip with "
                           "PACT activations.")
    weight_quantizer: Literal["ste", "lsq", "sawb"] | None = Field(None, description="Overrides the preset's.")
    activation_quantizer: Literal["ste", "lsq", "pact"] | None = Field(
        None, description="Overrides the preset's. PACT needs non-negative inputs (after ReLU); layers whose input "
                          "is signed use LSQ instead, listed in the metrics.")
    per_channel: bool = Field(True, description="One weight scale per output channel (else per tensor). Per "
                                                "channel also keeps the grid exact when BatchNorm is folded later.")
    first_last_bits: Bits | None = Field(8, description="Bits (weights and input) of the first and last "
                                                        "conv/linear, which are the most sensitive (the LSQ and "
                                                        "PACT papers keep them at 8); null quantizes them like the "
                                                        "rest.")
    embeddings: EmbeddingQuantSpec | None = Field(
        EmbeddingQuantSpec(), description="Embedding tables (`aten.embedding` lookups, which QAT does not train "
                                          "quantized) are quantized after training as PTQ stores them: int8 per "
                                          "row by default, or 4-bit per group; the metrics are measured with them. "
                                          "null keeps them fp32 in the packed file.")
    freeze_bn_after: Steps | None = Field(
        None, description="Step after which BatchNorm uses and stops updating its running statistics.")
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(
        256, description="Training examples that initialise activation ranges before training.")
    pact_alpha_decay: Annotated[float, Field(ge=0, le=1)] = Field(
        2e-4, description="L2 decay of the PACT clips (their own optimizer group).")
    training: TrainingSpec = Field(TrainingSpec(steps=1000, lr=5e-4, warmup_steps=50),
                                   description="Finetuning (1000 steps at lr 5e-4 with 50 warmup steps unless "
                                               "given).")

    @model_validator(mode="after")
    def _activation_quantizer_needs_activations(self):
        if self.activation_bits is None and self.activation_quantizer is not None:
            raise ValueError("activation_quantizer is set but activation_bits is null (weights only)")
        return self

    @property
    def quantizers(self) -> tuple[str, str]:
        """(weight quantizer, activation quantizer) after applying the overrides to the preset."""
        weight, activation = QAT_PRESETS[self.quantizer]
        return self.weight_quantizer or weight, self.activation_quantizer or activation
