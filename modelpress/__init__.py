"""modelpress for its users: the Python SDK (`Client`, `Job`, the stage specs `PTQ`, `QAT`, ...) and the
`modelpress` command line (which also starts the service's processes). Importing it needs httpx and pydantic
only: never torch or the server's packages."""

from modelpress.client import Client, Upload
from modelpress.errors import ApiError, JobFailed
from modelpress.jobs import Job
from modelpress.specs import (
                              IPQ,
                              KD,
                              PTQ,
                              LLMPTQ,
                              QAT,
                              DifferentiableQuantization,
                              Evaluation,
                              FunctionMatching,
                              Prune,
                              QuantizedDistillation,
                              QuantNoise,
                              Training,
)

__all__ = ["Client", "Upload", "Job", "ApiError", "JobFailed", "PTQ", "QAT", "KD", "FunctionMatching",
           "QuantizedDistillation", "DifferentiableQuantization", "QuantNoise", "IPQ", "Prune", "LLMPTQ",
           "Evaluation", "Training"]
