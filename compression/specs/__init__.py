"""Typed, torch-free job specs. The API validates requests with these; the library runs them.

A job is a list of stages; each stage spec is one of the method specs declared in `compression.specs.registry`,
told apart by its `method` field.
"""

from typing import Annotated, Union

from pydantic import Field

from compression.specs.common import EvaluationSpec
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
from compression.specs.registry import DECLARATIONS

STAGE_SPECS = tuple(declaration.spec for declaration in DECLARATIONS)
StageSpec = Annotated[Union[STAGE_SPECS], Field(discriminator="method")]
METHODS = tuple(declaration.name for declaration in DECLARATIONS)

__all__ = ["EvaluationSpec", "StageSpec", "METHODS", "STAGE_SPECS", "DifferentiableQuantizationSpec",
           "FunctionMatchingSpec", "KDSpec", "QuantizedDistillationSpec", "IPQSpec", "QuantNoiseSpec", "PruneSpec",
           "PTQSpec", "QATSpec", "LLMPTQSpec"]
