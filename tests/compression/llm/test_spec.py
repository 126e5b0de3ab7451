import subprocess
import sys

import pytest
from pydantic import ValidationError

from compression.specs.llm import LLMEvaluationSpec, LLMPTQSpec


def test_defaults_are_gptq_int4_group_128_symmetric_with_lm_head_kept():
    spec = LLMPTQSpec()
    assert (spec.algorithm, spec.bits, spec.group_size, spec.is_symmetric, spec.lm_head) == (
        "gptq", 4, 128, True, "keep")
    assert spec.needs_calibration and not LLMPTQSpec(algorithm="hqq").needs_calibration
    assert LLMPTQSpec(algorithm="hqq").is_symmetric is False


def test_fp8_alone_takes_its_own_recipe_not_the_int_defaults():
    # {"weights": "fp8"} was refused because the int defaults (gptq, groups of 128) do not apply to FP8
    spec = LLMPTQSpec(weights="fp8")
    assert (spec.algorithm, spec.group_size) == ("rtn", None)
    assert LLMPTQSpec.model_validate(spec.model_dump()) == spec


@pytest.mark.parametrize("fields,message", [
    ({"weights": "fp8", "algorithm": "gptq", "group_size": None}, "fp8"),
    ({"weights": "fp8", "algorithm": "rtn", "group_size": 128}, "fp8"),
    ({"algorithm": "hqq", "symmetric": True}, "hqq"),
    ({"bits": 5}, "2, 3, 4 or 8"),
    ({"algorithm": "hqq", "embeddings": "int8"}, "embeddings 'int8'"),
    ({"algorithm": "rtn", "symmetric": False, "embeddings": "int8"}, "one format only"),
    ({"algorithm": "hqq", "bits": 8, "embeddings": "int8"}, "one format only"),  # 8-bit layers are packed too
    ({"group_size": 48}, "group_size"),
    ({"algorithm": "smoothquant"}, "algorithm"),
    ({"gptq": {"damp_percent": 0}}, "damp_percent"),
    ({"calibration": {"samples": 0}}, "samples"),
    ({"bitz": 4}, "bitz"),
])
def test_inconsistent_specs_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        LLMPTQSpec(**fields)


def test_evaluation_spec_bounds():
    assert LLMEvaluationSpec().context_length == 512
    with pytest.raises(ValidationError):
        LLMEvaluationSpec(context_length=8)


def test_the_spec_module_does_not_import_torch():
    code = "import sys, compression.specs.llm; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
