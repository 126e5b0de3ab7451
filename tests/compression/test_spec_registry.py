"""Every method is declared once (compression.specs.registry) and everything else is derived from it."""

import inspect

import pytest

from compression.methods import implementation
from compression.specs import METHODS, STAGE_SPECS
from compression.specs.order import FINAL_STAGES, order_problems
from compression.specs.registry import BY_NAME, DECLARATIONS, declaration


@pytest.mark.parametrize("method", [d.name for d in DECLARATIONS])
def test_every_declared_method_resolves_to_its_implementation(method):
    apply = implementation(method)
    assert callable(apply)
    assert list(inspect.signature(apply).parameters)[:4] == ["spec", "model", "task", "ctx"]


def test_the_lists_derived_from_the_declarations_agree():
    assert len(BY_NAME) == len(DECLARATIONS), "two declarations share a method name"
    assert METHODS == tuple(BY_NAME) and STAGE_SPECS == tuple(d.spec for d in DECLARATIONS)
    assert FINAL_STAGES == {d.name: d.final for d in DECLARATIONS if d.final}
    assert set(FINAL_STAGES) == {"ptq", "ipq", "differentiable_quantization", "llm_ptq"}
    assert order_problems(["ipq", "ptq"]) and not order_problems(["prune", "kd", "ptq"])


def test_an_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'; known: .*'ptq'"):
        declaration("nope")
