"""The stage specs a job is made of, under short names: the same torch-free pydantic models the API validates
with (`compression.specs`), so a spec built here is checked as the server will check it."""

from compression.specs import (
                               DifferentiableQuantizationSpec,
                               EvaluationSpec,
                               FunctionMatchingSpec,
                               IPQSpec,
                               KDSpec,
                               LLMPTQSpec,
                               PruneSpec,
                               PTQSpec,
                               QATSpec,
                               QuantizedDistillationSpec,
                               QuantNoiseSpec,
)
from compression.specs.training import TrainingSpec

PTQ = PTQSpec
QAT = QATSpec
KD = KDSpec
FunctionMatching = FunctionMatchingSpec
QuantizedDistillation = QuantizedDistillationSpec
DifferentiableQuantization = DifferentiableQuantizationSpec
QuantNoise = QuantNoiseSpec
IPQ = IPQSpec
Prune = PruneSpec
LLMPTQ = LLMPTQSpec
Evaluation = EvaluationSpec
Training = TrainingSpec

__all__ = ["PTQ", "QAT", "KD", "FunctionMatching", "QuantizedDistillation", "DifferentiableQuantization",
           "QuantNoise", "IPQ", "Prune", "LLMPTQ", "Evaluation", "Training"]
