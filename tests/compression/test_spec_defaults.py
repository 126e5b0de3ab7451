"""A partial nested section overrides only the fields it names; the method's own defaults stay (per method)."""

import pytest
from pydantic import BaseModel, TypeAdapter

from compression.specs import STAGE_SPECS, StageSpec

STAGE = TypeAdapter(StageSpec)
# The least each method needs besides its name.
REQUIRED = {"kd": {"student": {"kind": "input"}}, "function_matching": {"student": {"kind": "input"}}}


def _nested_defaults():
    for spec in STAGE_SPECS:
        method = spec.model_fields["method"].default
        for name, field in spec.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                yield pytest.param(method, name, default, id=f"{method}.{name}")


@pytest.mark.parametrize("method, section, default", list(_nested_defaults()))
def test_a_partial_section_keeps_the_methods_defaults(method, section, default):
    changed_field, new_value = _a_change(default)
    stage = STAGE.validate_python({"method": method, **REQUIRED.get(method, {}), section: {changed_field: new_value}})
    got = getattr(stage, section)
    assert getattr(got, changed_field) == new_value
    for name in type(default).model_fields:
        if name != changed_field:
            assert getattr(got, name) == getattr(default, name), f"{method}.{section}.{name} lost its default"


def _a_change(default: BaseModel) -> tuple[str, object]:
    """A field of `default` and a valid value other than its default (booleans flip, numbers grow a little)."""
    for name in ("steps", "batch_size", "rate", "temperature", "linear", "prune_every", "bits", "iterations",
                 "generation_tokens"):
        if name in type(default).model_fields:
            value = getattr(default, name)
            return name, (value + 1 if isinstance(value, int) else value * 0.9) if name != "bits" else 4
    name = next(n for n, v in default if isinstance(v, bool))
    return name, not getattr(default, name)


def test_the_issue_example_keeps_ipq_learning_rate():
    stage = STAGE.validate_python({"method": "ipq", "training": {"steps": 10, "batch_size": 16}})
    assert (stage.training.steps, stage.training.batch_size, stage.training.lr) == (10, 16, 1e-4)
    assert stage.training.model_fields_set >= {"steps", "batch_size", "lr"}


def test_a_method_default_warmup_keeps_its_share_of_the_steps_the_user_asks_for():
    assert STAGE.validate_python({"method": "qat"}).training.warmup_steps == 50  # of 1000
    assert STAGE.validate_python({"method": "qat", "training": {"steps": 10}}).training.warmup_steps == 0
    qat = STAGE.validate_python({"method": "qat", "training": {"steps": 400, "batch_size": 16}}).training
    assert (qat.steps, qat.warmup_steps, qat.lr) == (400, 20, 5e-4)
    named = STAGE.validate_python({"method": "qat", "training": {"steps": 10, "warmup_steps": 3}})
    assert named.training.warmup_steps == 3
    with pytest.raises(ValueError, match=r"warmup_steps \(50\) exceeds steps \(10\); lower warmup_steps"):
        STAGE.validate_python({"method": "qat", "training": {"steps": 10, "warmup_steps": 50}})


def test_nested_sections_merge_at_every_depth():
    stage = STAGE.validate_python({"method": "quant_noise", "noise": {"block_sizes": {"linear": 4}}})
    assert stage.noise.block_sizes.linear == 4 and stage.noise.block_sizes.conv1x1 == 4
    assert stage.training.lr == 1e-4 and stage.training.steps == 500
