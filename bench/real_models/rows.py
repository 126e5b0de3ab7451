"""The rows of the table: one list of stages (one job) per compression method, as a user would submit them."""

from __future__ import annotations

from compression.specs import IPQSpec, KDSpec, PruneSpec, PTQSpec
from compression.specs.distill import LowRankStudent, UploadedStudent
from compression.specs.prune import PruneDistillSpec
from compression.specs.ptq import EmbeddingQuantSpec, SmoothQuantSpec, WeightQuantSpec
from compression.specs.training import TrainingSpec

INT4_GROUPS = WeightQuantSpec(bits=4, granularity="per_group", group_size=32, range="mse")


def _training(steps: int, lr: float) -> TrainingSpec:
    return TrainingSpec(steps=steps, batch_size=32, lr=lr, checkpoint_every=10_000)


def transformer_rows(steps: dict) -> list[tuple[str, list]]:
    """Encoders uploaded as Hugging Face folders (no BatchNorm, embeddings, attention)."""
    return [
        ("int8 PTQ, embeddings fp32", [PTQSpec(embeddings=None)]),
        ("int8 PTQ (default: + int8 embeddings)", [PTQSpec()]),
        ("int8 PTQ + int4 embeddings", [PTQSpec(embeddings=EmbeddingQuantSpec(bits=4, group_size=32))]),
        ("SmoothQuant W8A8 (alpha 0.5)", [PTQSpec(smoothquant=SmoothQuantSpec(alpha=0.5))]),
        ("weight-only int8", [PTQSpec(activations=None)]),
        ("weight-only int4 (g32, mse)", [PTQSpec(activations=None, weights=INT4_GROUPS)]),
        ("KD -> low-rank student (rank 64)", [KDSpec(student=LowRankStudent(rank=64), alpha=0.0,
                                                     training=_training(steps["kd"], 1e-4))]),
        ("structured prune 25% + distill", [PruneSpec(kind="structured", sparsity=0.25, recalibrate_batches=0,
                                                      finetune=_training(steps["prune"], 5e-5),
                                                      distill=PruneDistillSpec())]),
        # rate_weight 0.3: entropy-constrained k-means, so the xz-coded indices shrink (rxnfp 13.90x -> 15.02x,
        # MiniLM 15.03x -> 16.72x, both within 2 % of fp32's task metric; `bench.real_models.ipq_row`)
        ("iPQ + int8", [IPQSpec(centroid_dtype="int8", num_groups=2, kmeans_iterations=8, rate_weight=0.3,
                                training=_training(steps["ipq"], 1e-4))]),
    ]


def cnn_rows(steps: dict) -> list[tuple[str, list]]:
    """Pretrained pitch CNNs uploaded as `.pt2`, with a narrower student uploaded for distillation."""
    return [
        ("int8 PTQ (default)", [PTQSpec()]),
        ("weight-only int8", [PTQSpec(activations=None)]),
        ("weight-only int4 (g32, mse)", [PTQSpec(activations=None, weights=INT4_GROUPS)]),
        ("KD -> 1/2-width student", [KDSpec(student=UploadedStudent(model_id="student"),
                                            # from a random start, CREPE's half-width student leaves the
                                            # all-bins-dark plateau after 200-400 steps (bench.real_models.kd_plateau)
                                            training=_training(steps["kd_cnn"], 1e-3))]),
        ("structured prune 20%", [PruneSpec(kind="structured", sparsity=0.2, recalibrate_batches=16)]),
        ("structured prune 20% + distill", [PruneSpec(kind="structured", sparsity=0.2, recalibrate_batches=16,
                                                      finetune=_training(steps["prune"], 1e-4),
                                                      distill=PruneDistillSpec())]),
        # min_weights 0: PESTO's four convs under 1,024 weights were 3.7 kB of its 16 kB file in float16; CREPE has
        # no layer that small
        ("iPQ + int8", [IPQSpec(centroid_dtype="int8", num_groups=2, min_weights=0,
                                training=_training(steps["ipq"], 1e-4))]),
    ]
