"""Weight-only post-training quantization of a causal language model (a Hugging Face folder), written back as a
Hugging Face folder in compressed-tensors format that vLLM serves and transformers loads."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import Spec

# Checked at submission (app.jobs.validation) and again by the worker (compression.llm.pipeline).
# transformers 5 decompresses each expert's packed weight and scales when it loads a folder, without zero points.
ASYMMETRIC_EXPERTS = ("a mixture of experts' folder holds each expert as a quantized linear layer, which transformers "
                      "loads without zero points: use symmetric weights (gptq or rtn, with symmetric true or null; "
                      "hqq is asymmetric)")

# compression.llm.zero_points: transformers 5 loads packed zero points only by decompressing all layers in one format
ZERO_POINTS_WITH_INT8_EMBEDDINGS = (
    "embeddings 'int8' stores the embedding table in a format of its own, and transformers loads a folder with "
    "zero points (asymmetric weights: hqq, or symmetric false) in one format only: keep the "
    "embeddings float ('keep'), or use symmetric weights (gptq or rtn with symmetric true or null)")

LLM_PTQ_ALONE = ("llm_ptq writes a compressed-tensors folder from the uploaded checkpoint, so it runs alone: a job "
                 "is llm_ptq stages only, or the other methods (ptq, qat, kd, prune, ipq, ...) on the exported "
                 "model")


class GPTQOptions(Spec):
    act_order: bool = Field(True, description="Quantize columns in order of decreasing activation energy "
                                              "(diag of the Hessian), with group grids fixed beforehand so the "
                                              "stored layout and kernels are unchanged ('actorder: weight').")
    damp_percent: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.01, description="Added to the Hessian diagonal, as a fraction of its mean, before inverting.")
    block_size: Annotated[int, Field(ge=8, le=4096)] = Field(128, description="Columns per lazy batch update.")


class AWQOptions(Spec):
    grid: Annotated[int, Field(ge=2, le=100)] = Field(20, description="Scale exponents tried, r = 0, 1/grid, ...")
    duo_scaling: bool = Field(True, description="Scales mean|x|^r / mean|w|^(1-r) instead of mean|x|^r.")
    clip_search: bool = Field(True, description="Then search a clipping ratio per row and group (not q/k).")


class HQQOptions(Spec):
    iterations: Annotated[int, Field(ge=1, le=1000)] = Field(20, description="Half-quadratic solver rounds per "
                                                                            "weight group.")
    lp_norm: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.7, description="p of the lp error HQQ minimises.")
    beta: Annotated[float, Field(gt=0.0, le=1e6)] = Field(10.0, description="Initial penalty weight of the "
                                                                           "solver's split variable.")
    kappa: Annotated[float, Field(ge=1.0, le=100.0)] = Field(1.01, description="Factor the penalty weight grows by "
                                                                               "each round.")


class LLMCalibrationSpec(Spec):
    samples: Annotated[int, Field(ge=1, le=4096)] = Field(128, description="Token windows of calibration text.")
    sequence_length: Annotated[int, Field(ge=16, le=32768)] = Field(512, description="Tokens per calibration "
                                                                                     "window.")
    batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="Windows run through a block at once "
                                                                          "(memory: one block's activations for "
                                                                          "this many windows).")


class LLMEvaluationSpec(Spec):
    context_length: Annotated[int, Field(ge=16, le=32768)] = Field(
        512, description="Tokens the model sees per perplexity window.")
    stride: Annotated[int, Field(ge=1, le=32768)] | None = Field(
        None, description="Tokens between window starts; each window scores only its tokens not scored before "
                          "(null: context_length / 2).")
    max_tokens: Annotated[int, Field(ge=2, le=10**9)] | None = Field(None, description="Evaluate at most this many "
                                                                                      "tokens.")
    generation_tokens: Annotated[int, Field(ge=0, le=4096)] = Field(
        64, description="New tokens generated greedily to time decoding (0 skips the timing).")


class LLMPTQSpec(Spec):
    """One algorithm quantizes every linear layer of every decoder block, block by block (each block's
    calibration inputs are the outputs of the blocks already quantized).

    - `rtn`: round to nearest (no data needed); `gptq`: error-compensating rounding with the layer Hessian;
      `awq`: activation-aware scaling search plus clipping search, then rounding (scaling groups found in each
      block's forward: every linear reading one tensor, scaled where a norm or linear before it can take the
      scales without changing the model; the others are clipped and rounded, and a warning says so);
      `hqq`: calibration-free half-quadratic zero-point optimisation (asymmetric).
    - `weights`: `int` with `bits` and `group_size` (null: one scale per output channel), or `fp8` (E4M3, one
      scale per output channel, round to nearest).
    """

    method: Literal["llm_ptq"] = "llm_ptq"
    algorithm: Literal["rtn", "gptq", "awq", "hqq"] = Field("gptq", description="Rounding algorithm (see above).")
    weights: Literal["int", "fp8"] = Field("int", description="Integer weights with `bits`, or FP8 E4M3.")
    bits: Annotated[int, Field(ge=2, le=8)] = Field(4, description="Integer weight width (weights 'int').")
    group_size: Literal[32, 64, 128] | None = Field(128, description="Input columns sharing a scale; null: per "
                                                                     "output channel.")
    symmetric: bool | None = Field(None, description="Zero point at 0; null: symmetric except for hqq, which "
                                                     "optimises the zero point.")
    lm_head: Literal["keep", "quantize"] = Field(
        "keep", description="'quantize' puts the output projection on the same grid (calibrated on the final "
                            "norm's outputs; with tied embeddings the output gets its own copy); 'keep' stores "
                            "it unquantized, as most serving recipes do.")
    embeddings: Literal["keep", "int8"] = Field(
        "keep", description="'int8' stores the input embedding table as int8 with one scale per token row.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of unquantized tensors and scales in the output; auto keeps the source's.")
    calibration: LLMCalibrationSpec = Field(LLMCalibrationSpec(), description="Calibration text windows (gptq, "
                                                                              "awq) from the train split.")
    gptq: GPTQOptions = Field(GPTQOptions(), description="Options of algorithm 'gptq'.")
    awq: AWQOptions = Field(AWQOptions(), description="Options of algorithm 'awq'.")
    hqq: HQQOptions = Field(HQQOptions(), description="Options of algorithm 'hqq'.")
    evaluation: LLMEvaluationSpec = Field(
        LLMEvaluationSpec(), description="Perplexity and generation timing of the model before and after, on the "
                                         "job's evaluation split (the job's `evaluation.split`).")

    @model_validator(mode="after")
    def _consistent(self):
        if self.weights == "fp8":
            # {"weights": "fp8"} alone means FP8's only recipe, not the int defaults (gptq, groups of 128)
            if "algorithm" not in self.model_fields_set:
                self.algorithm = "rtn"
            if "group_size" not in self.model_fields_set:
                self.group_size = None
        if self.weights == "fp8" and (self.algorithm != "rtn" or self.group_size is not None):
            raise ValueError("fp8 weights use algorithm 'rtn' with one scale per output channel (group_size null)")
        if self.algorithm == "hqq" and self.symmetric:
            raise ValueError("hqq optimises the zero point: it needs symmetric false (or null)")
        if self.weights == "int" and self.bits not in (2, 3, 4, 8):
            raise ValueError("integer weights take 2, 3, 4 or 8 bits")
        if self.weights == "int" and not self.is_symmetric and self.embeddings == "int8":
            raise ValueError(ZERO_POINTS_WITH_INT8_EMBEDDINGS)
        return self

    @property
    def is_symmetric(self) -> bool:
        return self.symmetric if self.symmetric is not None else self.algorithm != "hqq"

    @property
    def longest_sequence(self) -> int:
        """Tokens the model sees at once: a calibration window or an evaluation window."""
        return max(self.calibration.sequence_length, self.evaluation.context_length)

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm in ("gptq", "awq")
