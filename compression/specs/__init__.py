"""Typed, torch-free job specs. The API validates requests with these; the library runs them.

A job is a list of stages; each stage spec is one of the method specs below, told apart by its `method` field.
"""

from typing import Annotated, Union

from pydantic import Field

from compression.specs.common import EvaluationSpec
from compression.specs.ptq import PTQSpec

StageSpec = Annotated[Union[PTQSpec], Field(discriminator="method")]

METHODS = ("ptq",)

__all__ = ["EvaluationSpec", "PTQSpec", "StageSpec", "METHODS"]
