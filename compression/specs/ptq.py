from typing import Annotated, Literal

from pydantic import Field

from compression.specs.common import Spec


class PTQSpec(Spec):
    """Post-training quantization: int8 per-channel symmetric weights, int8 activations calibrated on data,
    lowered for x86 CPUs through torchao's pt2e path so the result really runs faster than fp32."""

    method: Literal["ptq"] = "ptq"
    calibration_split: str = Field("train", description="Split whose inputs calibrate activation ranges.")
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(256, description="Examples used for "
                                                                                          "calibration.")
