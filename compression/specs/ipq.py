"""Specs of iterative product quantization (iPQ, optionally + int8) and Quant-Noise training (Fan, Stock et al.)."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import Patterns, Spec
from compression.specs.training import TrainingSpec

# The price of one bit of index in units of a layer's mean k-means error (see IPQSpec.rate_weight).
RATE_WEIGHT = 0.0


class BlockSizes(Spec):
    """Length of the subvectors a weight is cut into, per layer kind (rows are split into consecutive blocks)."""

    linear: Annotated[int, Field(ge=1, le=64)] = Field(8, description="Linear layers: blocks along in_features.")
    attention: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="The q/k/v/output projections of attention in exported transformers: blocks along "
                       "in_features.")
    ffn: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="The other linear layers of exported transformers (feed-forward in/out, pooler): blocks "
                       "along in_features. 8 (one bit per weight) collapsed pretrained encoders (issue 10).")
    conv1x1: Annotated[int, Field(ge=1, le=64)] = Field(4, description="1x1 convolutions: blocks along in_channels.")
    conv: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="Larger kernels; null = one whole kernel per block up to 9 weights (3x3, the paper's "
                          "choice), and runs of about 4 taps of longer kernels (the divisor of the kernel's length in "
                          "2..8 nearest to 4: (512, 1) -> 4, 5x5 -> 5, 7x7 -> 7). Every block size "
                          "is lowered to the largest divisor of the layer's row length when it does not divide it.")
    embedding: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Embeddings: blocks along the embedding dimension. At 8, all-MiniLM-L6-v2's vocabulary alone "
                       "took its sentence vectors to cosine 0.90 of fp32; at 4, 0.975 (issue 10).")


class QuantNoiseConfig(Spec):
    """Noise applied on every training forward to a random subset of weight blocks, never to the stored weights."""

    rate: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.1, description="Probability p that a block is noised "
                                                                           "(the paper uses 0.05-0.2).")
    kind: Literal["proxy", "pq", "int8", "int4"] = Field(
        "proxy", description="proxy: zero the block and scale survivors by 1/(1-p); pq/int8/int4: replace the block "
                             "by its quantized value (gradient straight through).")
    block_sizes: BlockSizes = Field(BlockSizes(), description="Block lengths of the noised blocks.")
    pq_centroids: Annotated[int, Field(ge=2, le=256)] = Field(256, description="Codebook size for kind='pq'.")


class DistillationConfig(Spec):
    """Distillation from the uncompressed upload during finetuning: T^2 * KL(teacher/T || student/T)."""

    temperature: Annotated[float, Field(gt=0.0, le=20.0)] = Field(2.0, description="Softmax temperature T "
                                                                                  "(class logits).")
    weight: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.5, description="Weight of the distillation term; "
                                                                            "1 - weight goes to the label loss.")


class QuantNoiseSpec(Spec):
    """Finetune a trained model with Quant-Noise so that a later quantization stage (iPQ, int8, int4) hurts less.
    The result is an ordinary full-precision model."""

    method: Literal["quant_noise"] = "quant_noise"
    noise: QuantNoiseConfig = Field(QuantNoiseConfig(), description="The noise applied while finetuning.")
    training: TrainingSpec = Field(TrainingSpec(steps=500, lr=1e-4), description="Finetuning (500 steps at lr "
                                                                                 "1e-4 unless given).")
    distillation: DistillationConfig | None = Field(None, description="Distil from the uncompressed upload while "
                                                                      "finetuning; null trains on the labels.")
    include: Patterns = Field(["*"], description="fnmatch patterns of weight names (e.g. 'layer1.*') to noise "
                                                "(at most 256; each must match a weight).")
    exclude: Patterns = Field([], description="fnmatch patterns of weight names never noised (at most 256).")


def quant_noise_label_problem(spec: QuantNoiseSpec, train_split: str, labelled: bool) -> str | None:
    """Quant-Noise finetunes on the labels unless it distils: without either it cannot train (checked at
    submission from the dataset's manifest and by the job's dry run)."""
    if spec.distillation is not None or labelled:
        return None
    return (f"quant_noise trains on labels, but the training split '{train_split}' has none ('{train_split}.y'): "
            "set distillation: {} to finetune towards the uncompressed upload instead")


class IPQSpec(Spec):
    """Iterative product quantization: layer groups are quantized in turn (k-means on weight blocks); after each
    group the remaining full-precision weights and all centroids are finetuned. With centroid_dtype='int8' this is
    'iPQ + int8'. The artifact is a packed file (log2(K)-bit indices, centroids, manifest) that load_ipq runs."""

    method: Literal["ipq"] = "ipq"
    centroids: Annotated[int, Field(ge=2, le=256)] = Field(256, description="K, centroids per layer (at most 256 "
                                                                            "so an index fits a byte).")
    block_sizes: BlockSizes = Field(BlockSizes(), description="Subvector lengths per layer kind.")
    kmeans_iterations: Annotated[int, Field(ge=1, le=200)] = Field(15, description="k-means iterations per "
                                                                                   "layer.")
    min_blocks_per_centroid: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        4, description="A layer with fewer than K * this many blocks uses the largest power-of-two K that fits; a "
                       "layer too small for K >= 2 stays in full precision.")
    min_weights: Annotated[int, Field(ge=0, le=2**40)] = Field(
        1024, description="Layers with fewer weights stay in full precision (dense_dtype): a codebook would cost "
                          "about as much as the weight, and such layers (first conv, classifier) are sensitive.")
    min_embedding_rows: Annotated[int, Field(ge=0, le=2**40)] = Field(
        0, description="Embedding tables with fewer rows stay in full precision. 0: every table of at least "
                       "min_weights weights is product-quantized; on a pretrained BERT, position and token "
                       "embeddings at 8-value blocks cost 0.004 of [CLS] cosine, while their float16 copies "
                       "were over a quarter of the packed file.")
    rate_weight: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        RATE_WEIGHT, description="Entropy-constrained k-means: a block goes to the codeword minimising its error + "
                                 "rate_weight * the layer's mean error * the codeword's code length in bits, so "
                                 "frequent codewords grow more frequent and the entropy-coded indices smaller. 0: "
                                 "plain k-means (every codeword kept in use).")
    activation_weighted: bool = Field(
        True, description="k-means of linear layers weighs each input feature by its mean square input (from "
                          "calibration_batches training batches, measured before each group), so the codebook "
                          "minimises the error of the layer's output rather than of its weight.")
    centroid_dtype: Literal["float16", "int8"] = Field("float16", description="int8 = 'iPQ + int8' (symmetric, "
                                                                                "one scale per layer).")
    activation_bits: Literal[8] | None = Field(
        None, description="8: the inputs of the product-quantized layers are quantized to int8 in the packed model "
                          "(per tensor, min/max over calibration_batches training batches after finetuning).")
    calibration_batches: Annotated[int, Field(ge=1, le=1000)] = Field(8, description="Training batches that "
                                                                                     "calibrate int8 activations "
                                                                                     "and activation weighting.")
    dense_dtype: Literal["float16", "float32"] = Field("float16", description="Storage of the parameters that are "
                                                                              "not product-quantized (biases, norms).")
    groups: Annotated[list[Patterns], Field(max_length=64)] | None = Field(
        None, description="Layer groups in quantization order, as fnmatch patterns of weight names; null = "
                          "num_groups consecutive groups of the quantizable layers in `order`.")
    num_groups: Annotated[int, Field(ge=1, le=64)] = Field(3, description="Groups the layers are split into "
                                                                          "when groups is null.")
    order: Literal["input_first", "output_first", "largest_first"] = Field(
        "input_first", description="Order of the layers (and groups) when groups is null.")
    include: Patterns = Field(["*"], description="fnmatch patterns of weight names to quantize (at most 256; each "
                                                "must match a weight).")
    exclude: Patterns = Field([], description="fnmatch patterns of weight names kept in full precision (at most "
                                            "256).")
    training: TrainingSpec = Field(TrainingSpec(steps=300, lr=1e-4), description="Finetuning after each group.")
    finetune_last_group: bool = Field(True, description="Also finetune centroids after the last group.")
    distillation: DistillationConfig | None = Field(DistillationConfig(), description="Distil from the "
                                                    "uncompressed upload while finetuning; null trains on labels.")
    quant_noise: QuantNoiseConfig | None = Field(
        None, description="Quant-Noise on the weights not yet quantized during each finetuning.")

    @model_validator(mode="after")
    def _groups_not_empty(self):
        if self.groups is not None and (not self.groups or any(not group for group in self.groups)):
            raise ValueError("groups must be a non-empty list of non-empty pattern lists")
        return self

