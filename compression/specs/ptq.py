from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import MAX_PATTERNS, Name, Patterns, Spec, SplitName

Bits = Annotated[int, Field(ge=2, le=8)]


class WeightQuantSpec(Spec):
    """How conv/linear weights are stored. Integer formats use uniform affine quantization; the float formats
    (FP8 with a per-output-channel scale, FP16, BF16) are plain casts."""

    dtype: Literal["int", "fp8_e4m3", "fp8_e5m2", "fp16", "bf16"] = Field("int", description="Number format.")
    bits: Bits = Field(8, description="Integer width (dtype 'int' only).")
    symmetric: bool = Field(True, description="Zero point 0 (else a zero point per scale).")
    granularity: Literal["per_tensor", "per_channel", "per_group"] = Field(
        "per_channel", description="One scale per tensor, per output channel, or per group_size inputs.")
    group_size: Annotated[int, Field(ge=2, le=4096)] = Field(
        64, description="Consecutive input weights of one output channel sharing a scale (per_group only).")
    range: Literal["minmax", "mse"] = Field(
        "minmax", description="Weight clip: the full range, or the clip minimising the squared error (helps at "
                              "4 bits and below, where one outlier would waste most of the grid).")


class ActivationQuantSpec(Spec):
    """Per-tensor quantization of every quantized layer's input, calibrated on data."""

    bits: Bits = Field(8, description="Bits of every quantized layer input.")
    symmetric: bool = Field(False, description="Zero point 0 (else asymmetric, which suits ReLU outputs).")
    observer: Literal["minmax", "moving_average_minmax", "percentile", "mse", "kl"] = Field(
        "minmax", description="How the range is estimated from calibration data.")
    percentile: Annotated[float, Field(gt=90.0, le=100.0)] = Field(
        99.99, description="Clip at this percentile of |x| (observer 'percentile').")
    averaging_constant: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.01, description="Weight of each new batch's min/max (observer 'moving_average_minmax').")


class EmbeddingQuantSpec(Spec):
    """How embedding tables (`aten.embedding` lookups) are stored, on the default int8 path and the general one."""

    bits: Literal[4, 8] = Field(8, description="8: int8 per row; 4: int4 per group of `group_size` (two codes per "
                                               "byte).")
    group_size: Annotated[int, Field(ge=8, le=1024)] = Field(32, description="Row elements sharing a scale (4 bits "
                                                                             "only); must divide the table width.")


class SmoothQuantSpec(Spec):
    """SmoothQuant: per input channel, divide activations by s and multiply weights by s before W8A8 quantizing,
    s = max|x|^alpha / max|w|^(1 - alpha) (calibrated). Helps transformers whose activations have outlier
    channels."""

    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.5, description="Migration strength: 0 leaves the "
                                                                            "activations alone, 1 moves all of "
                                                                            "their range into the weights.")


class PTQSpec(Spec):
    """Post-training quantization.

    The defaults mean int8 per-channel symmetric weights and int8 activations calibrated on data, lowered for x86
    CPUs through torchao's pt2e path so the result really runs faster than fp32. Layer selection (`include` /
    `exclude`) keeps that path: the layers not selected stay float in the int8 program. Any other choice (bit
    widths 2-8, groups, FP8/FP16/BF16, observers, per-layer bits, bias correction, an accuracy budget, per-layer
    sensitivity) runs the general path, which simulates the quantization in the graph and delivers a bit-packed
    safetensors file and, for integer formats, an ONNX QDQ model.
    """

    method: Literal["ptq"] = "ptq"
    calibration_split: SplitName = Field("train", description="Split whose inputs calibrate activation ranges.")
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(256, description="Examples used for "
                                                                                          "calibration.")
    weights: WeightQuantSpec = Field(WeightQuantSpec(), description="How weights are quantized.")
    activations: ActivationQuantSpec | None = Field(
        ActivationQuantSpec(), description="null quantizes weights only (activations stay float).")
    fold_batchnorm: bool = Field(True, description="Fold BatchNorm into the preceding conv before quantizing.")
    bias_correction: bool = Field(False, description="Add to each quantized layer's bias the mean output shift "
                                                     "its weight quantization causes on calibration data.")
    include: Patterns = Field([], description="fnmatch patterns of conv/linear layer names to quantize (all when "
                                             "empty), e.g. 'layer2.*'. Names are the weight owners in the model, "
                                             "e.g. 'conv1', 'layer1.0.conv2', 'fc'. At most 256; each must "
                                             "match a layer of the model. Keeps the default int8 path (the other "
                                             "layers stay float in model_int8.pt2, listed in the metrics' "
                                             "float_layers).")
    exclude: Patterns = Field([], description="fnmatch patterns of layer names kept in float, e.g. "
                                             "'*[0-9].output.dense' (at most 256; each must match a layer). Keeps the "
                                             "default int8 path, as `include` does; not with extra_formats "
                                             "'onnx_int8'.")
    layer_bits: dict[Name, Bits] = Field({}, max_length=MAX_PATTERNS, description="{pattern: bits} weight widths "
                                         "overriding `weights.bits` (the last matching pattern wins; at most 256 "
                                         "patterns, each matching a layer).")
    sensitivity: bool = Field(False, description="Measure each layer's metric drop when it alone is quantized "
                                                 "(one evaluation per layer), and each block's (a transformer "
                                                 "block's attention or MLP, else a layer's parent module).")
    max_metric_drop: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="Accuracy budget in points (fidelity points without labels): the most sensitive layers "
                          "are kept at 8 bits, then float, until the drop is within budget.")
    budget_allows_float: bool = Field(True, description="The budget search may keep layers in float.")
    selection_samples: Annotated[int, Field(ge=16, le=100_000)] = Field(
        1000, description="Evaluation examples used for sensitivity and the budget search.")
    export_onnx: bool = Field(True, description="Also write an ONNX QDQ model (integer weights only).")
    embeddings: EmbeddingQuantSpec | None = Field(
        EmbeddingQuantSpec(), description="Embedding tables (weights only aten.embedding reads) quantized, int8 "
                                          "per row by default, on both paths (on the general path they run "
                                          "quantized whenever a layer is); null keeps them in fp32.")
    smoothquant: SmoothQuantSpec | None = Field(
        None, description="SmoothQuant activation smoothing before W8A8 quantization (default int8 path), e.g. "
                          "{\"alpha\": 0.5}.")
    reduce_range: bool = Field(
        False, description="Default int8 path: calibrate activations to 0..127 instead of 0..255 (and ONNX "
                           "Runtime's onnx_int8 weights to 7 bits), so the int8 kernels of x86 CPUs without VNNI "
                           "(AVX2; AMD before Zen 4, Intel before Cascade Lake), which saturate full-range "
                           "products, compute the quantized graph without saturating. Costs accuracy elsewhere "
                           "(MiniLM: cosine to fp32 0.994 -> 0.979); the job warns when its own worker's kernels "
                           "saturate.")
    extra_formats: list[Literal["onnx_int8", "aoti"]] = Field(
        [], max_length=2, description="Other int8 deployables written beside model_int8.pt2 (default int8 path), "
                                      "each timed next to it at the job's latency batch sizes, the metrics saying "
                                      "which file is fastest at each: 'onnx_int8' (model_int8.onnx, ONNX Runtime's "
                                      "static int8: u8s8 QDQ, per-channel weights, calibrated on the same "
                                      "samples; usually the fastest at batch 1 for small models), 'aoti' "
                                      "(model_int8.aoti.pt2, an AOTInductor package of the int8 program: no "
                                      "torch.compile at load, less cost per call; same torch version and CPU "
                                      "family only; adds 15-60 s to the job).")

    @model_validator(mode="after")
    def _integer_only_options(self):
        if self.weights.dtype != "int" and self.layer_bits:
            raise ValueError("layer_bits applies to integer weights (weights.dtype 'int') only")
        if not self.is_x86_int8_default and (self.smoothquant is not None or self.extra_formats):
            raise ValueError("smoothquant and extra_formats options apply to the default int8 recipe only; remove "
                             "them or the options that select the general path (weights, activations, layer_bits, "
                             "budget, sensitivity, ...)")
        if not self.is_x86_int8_default and self.reduce_range:
            raise ValueError("reduce_range applies to the default int8 recipe only; on the general path choose the "
                             "bits themselves (activations.bits, weights.bits)")
        if "onnx_int8" in self.extra_formats and (self.include or self.exclude):
            # ONNX Runtime quantizes its own export, whose node names are not our layer names: it would quantize
            # the layers the .pt2 keeps float
            raise ValueError("extra_formats 'onnx_int8' quantizes every layer and cannot keep the layers include/"
                             "exclude leave float; remove 'onnx_int8' (or use 'aoti', the same int8 program) or the "
                             "layer patterns")
        if len(set(self.extra_formats)) != len(self.extra_formats):
            raise ValueError(f"extra_formats lists a format twice: {self.extra_formats}")
        return self

    @property
    def int8_options(self) -> dict:
        """The keyword options of `compression.ptq.quantize_int8` / `prepare_int8` this spec sets (the job's stage
        and its dry run prepare the same graph)."""
        return {"smoothquant_alpha": self.smoothquant.alpha if self.smoothquant else None,
                "include": self.include, "exclude": self.exclude, "reduce_range": self.reduce_range}

    @property
    def is_x86_int8_default(self) -> bool:
        """True when nothing beyond the default int8 x86 recipe is asked for (torchao pt2e path)."""
        general_only = set(PTQSpec.model_fields) - {"method", "calibration_split", "calibration_samples", "embeddings",
                                                    "smoothquant", "extra_formats", "include", "exclude",
                                                    "reduce_range"}
        return all(getattr(self, name) == PTQSpec.model_fields[name].get_default(call_default_factory=True)
                   for name in general_only)
