"""Typed, torch-free job specs. The API validates requests with these; the library runs them.

A job is a list of stages; each stage spec is one of the method specs below, told apart by its `method` field.
"""

from typing import Annotated, Union

from pydantic import Field

from compression.specs.common import EvaluationSpec
from compression.specs.distill import (DifferentiableQuantizationSpec, FunctionMatchingSpec, KDSpec,
                                       QuantizedDistillationSpec)
from compression.specs.ipq import IPQSpec, QuantNoiseSpec
from compression.specs.llm import LLMPTQSpec
from compression.specs.prune import PruneSpec
from compression.specs.ptq import PTQSpec
from compression.specs.qat import QATSpec

STAGE_SPECS = (PTQSpec, QATSpec, KDSpec, FunctionMatchingSpec, QuantizedDistillationSpec,
               DifferentiableQuantizationSpec, QuantNoiseSpec, IPQSpec, PruneSpec, LLMPTQSpec)
StageSpec = Annotated[Union[STAGE_SPECS], Field(discriminator="method")]
METHODS = tuple(spec.model_fields["method"].default for spec in STAGE_SPECS)

__all__ = ["EvaluationSpec", "StageSpec", "METHODS", *(spec.__name__ for spec in STAGE_SPECS)]
