import pytest

from compression.archive import InvalidUpload
from compression.archive.symbolic import check_guard, check_sym_expr

# What torch 2.13 writes (srepr) for our zoo, int8 and tiny transformers models, and the plain form.
EXPRESSIONS = [
    "Symbol('s31', positive=True, integer=True)",
    "Mul(Integer(32), Symbol('s53', positive=True, integer=True))",
    "Pow(Symbol('s53', positive=True, integer=True), Integer(2))",
    "Min(Integer(32), Mul(Integer(32), Symbol('s53', positive=True, integer=True)))",
    "FloorDiv(Symbol('s0', positive=True, integer=True), Integer(2))",
    "Float('1.5', precision=53)", "Rational(-1, 2)", "-oo", "s0 + 1", "2*s0", "s0**2", "u3 // 4",
    # a draft-exported Longformer's data-dependent global-attention switch
    "Unequality(Piecewise(ExprCondPair(Integer(1), Equality(Symbol('u0', integer=True), Integer(1))), "
    "ExprCondPair(Integer(0), true)), Integer(1))",
]
REFUSED = {
    "exec(chr(112)+chr(114))": "'exec'",
    "__import__('os')": "'__import__'",
    "Symbol('x').__class__": "'.'",
    "s0[0]": "'['",
    "lambda: 1": "':'",
    "1; import os": "';'",
    "5!": "'!'",
    "Symbol('a\\'b')": "not allowed",
    "Symbol('os.system')": "neither a symbol name",
    "Pow(Integer(10), Integer(1000000000))": "exponent",
    "2**8**8**8": "exponent",
    "10**100": "exponent",
    "Pow(s0, s1)": "exponent",
    "Float('1.5', precision=100000000)": "precision",
    "LShift(1, 1000000000000)": "'LShift'",
    "RoundDecimal(5, -1000000000000)": "'RoundDecimal'",
    "Integer(99999999999999999999999)": "19 digits",
    "Pow(s0,2)*Pow(s0,2)*Pow(s0,2)*Pow(s0,2)*Pow(s0,2)": "more than 4",
    "s0 " * 2000: "characters",
}


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_shape_arithmetic_passes(expression):
    check_sym_expr(expression, "e")


@pytest.mark.parametrize("expression, reason", REFUSED.items(), ids=[e[:40] for e in REFUSED])
def test_anything_else_is_refused_with_the_reason(expression, reason):
    with pytest.raises(InvalidUpload, match="^e: ") as refused:
        check_sym_expr(expression, "e")
    assert reason in str(refused.value)


@pytest.mark.parametrize("guard", [
    "L['input_ids'].size()[0] == L['attention_mask'].size()[0]",
    "L['input_ids'].size()[1] + ((-1)*L['attention_mask'].size()[1]) <= 0",
    "((8*L['attention_mask'].size()[0]) % L['input_ids'].size()[0]) == 0",
    "2 <= L['x'].size()[0] and L['x'].stride()[0] == 64",
])
def test_size_guards_pass(guard):
    check_guard(guard, "g")


@pytest.mark.parametrize("guard", [
    "L['x'].__class__", "__import__('os').system('id')", "L['x\"'].size()", "L['x'].size()[0] == 1\nimport os",
    "L['x'].size(); 1", "open('/tmp/x', 'w')", "L['x'].size()[0] == 2**100",
])
def test_code_in_guards_is_refused(guard):
    with pytest.raises(InvalidUpload, match="^g: "):
        check_guard(guard, "g")
