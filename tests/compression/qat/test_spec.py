import pytest
from pydantic import ValidationError

from compression.specs.qat import QATSpec


def test_presets_and_overrides():
    assert QATSpec(quantizer="sawb").quantizers == ("sawb", "pact")
    assert QATSpec(quantizer="pact").quantizers == ("ste", "pact")
    assert QATSpec(quantizer="lsq", weight_quantizer="sawb").quantizers == ("sawb", "lsq")


@pytest.mark.parametrize("fields", [{"weight_bits": 1}, {"weight_bits": 9}, {"activation_bits": 16},
                                    {"activation_bits": None, "activation_quantizer": "pact"},
                                    {"quantizer": "dorefa"}, {"weight_quantizer": "pact"},
                                    {"distill_from_reference": True}])
def test_invalid_specs_are_refused(fields):
    with pytest.raises(ValidationError):
        QATSpec(**fields)


def test_round_trips_through_json():
    spec = QATSpec(weight_bits=2, activation_bits=None, freeze_bn_after=300, training={"steps": 50})
    assert QATSpec.model_validate_json(spec.model_dump_json()) == spec
