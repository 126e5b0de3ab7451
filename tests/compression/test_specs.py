"""Spec bounds: every number that means work is capped, every float is finite, lists are bounded."""

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from compression.specs import STAGE_SPECS, EvaluationSpec, StageSpec

STAGE = TypeAdapter(StageSpec)


@pytest.mark.parametrize("stage, error", [
    ({"method": "ptq", "max_metric_drop": math.inf}, "finite number"),
    ({"method": "ptq", "max_metric_drop": math.nan}, "finite number"),
    ({"method": "ptq", "max_metric_drop": 101}, "less than or equal to 100"),
    ({"method": "ptq", "include": ["layer*"] * 257}, "at most 256 items"),
    ({"method": "ptq", "exclude": ["x" * 201]}, "at most 200 characters"),
    ({"method": "ptq", "layer_bits": {f"l{i}": 4 for i in range(257)}}, "at most 256 items"),
    ({"method": "ptq", "calibration_samples": 100_001}, "less than or equal to 100000"),
    ({"method": "ptq", "calibration_split": ""}, "at least 1 character"),
    ({"method": "qat", "training": {"steps": 10_000_001}}, "less than or equal to 10000000"),
    ({"method": "qat", "training": {"batch_size": 65_537}}, "less than or equal to 65536"),
    ({"method": "qat", "training": {"lr": math.inf}}, "finite number"),
    ({"method": "qat", "training": {"checkpoint_every": 10**12}}, "less than or equal to 10000000"),
    ({"method": "qat", "freeze_bn_after": 10**12}, "less than or equal to 10000000"),
    ({"method": "qat", "pact_alpha_decay": math.inf}, "finite number"),
    ({"method": "kd", "student": {"kind": "input"}, "features": [{"student": "a", "teacher": "b"}] * 17},
     "at most 16 items"),
    ({"method": "kd", "student": {"kind": "low_rank", "rank": 10**9}}, "less than or equal to 65536"),
    ({"method": "kd", "student": {"kind": "upload", "model_id": "m" * 65}}, "at most 64 characters"),
    ({"method": "quantized_distillation", "skip": ["fc.weight"] * 257}, "at most 256 items"),
    ({"method": "ipq", "groups": [["*"]] * 65}, "at most 64 items"),
    ({"method": "ipq", "min_blocks_per_centroid": 10**9}, "less than or equal to 1000000"),
    ({"method": "quant_noise", "include": ["*"] * 257}, "at most 256 items"),
    ({"method": "prune", "exclude": ["*"] * 257}, "at most 256 items"),
    ({"method": "prune", "schedule": "gradual", "finetune": {"steps": 100},
      "gradual": {"prune_every": 10**12}}, "less than or equal to 10000000"),
])
def test_out_of_bounds_stage_specs_are_refused(stage, error):
    with pytest.raises(ValidationError, match=error):
        STAGE.validate_python(stage)


@pytest.mark.parametrize("evaluation, error", [
    ({"latency_batch_sizes": [1] * 9}, "at most 8 items"),
    ({"max_samples": 10_000_001}, "less than or equal to 10000000"),
    ({"split": "s" * 101}, "at most 100 characters"),
])
def test_out_of_bounds_evaluation_specs_are_refused(evaluation, error):
    with pytest.raises(ValidationError, match=error):
        EvaluationSpec.model_validate(evaluation)


def test_real_jobs_fit_in_the_bounds():
    STAGE.validate_python({"method": "qat", "training": {"steps": 1_000_000, "batch_size": 4096},
                           "calibration_samples": 100_000})
    STAGE.validate_python({"method": "ptq", "include": [f"layer{i}.*" for i in range(256)],
                           "layer_bits": {"layer1.*": 4, "fc": 8}, "max_metric_drop": 0.5})
    EvaluationSpec(latency_batch_sizes=[1, 8, 32, 64, 128, 256, 512, 1024], max_samples=1_000_000)


def test_every_float_field_of_every_stage_is_finite():
    """New fields inherit the rule: the base Spec refuses Infinity and NaN."""
    for spec in STAGE_SPECS:
        assert spec.model_config["allow_inf_nan"] is False, spec.__name__
