"""Strict tokenizers for the code-like strings of an exported program.

torch parses a program's symbolic shapes with `sympy.sympify` (which `eval`s its input) and compiles its
`guards_code` into a Python function with `exec`. Both are checked here token by token before torch sees them:
only integers, names from an allowlist (sympy/torch shape functions, symbol names such as `s0` or `u3`),
operators, parentheses and commas pass. There is no attribute access (`.`) in an expression and no subscript,
string quotes only around an identifier or a number, so no name outside the allowlist can be reached.

Exponentiation is the one operation whose cost is unbounded with small literals (`Pow(Integer(10), Integer(10**9))`
is evaluated eagerly), so exponents must be literal integers of magnitude at most 8, a few times per expression;
torch writes them for products of a dimension with itself (`Pow(s1, Integer(2))`). Other literal-driven
computations are refused with their functions (`LShift`, `RShift`, `RoundDecimal`, `FloatPow`), and a Float's
`precision` is capped.
"""

from __future__ import annotations

import re

from compression.archive.errors import InvalidUpload

MAX_EXPRESSION_CHARS = 4096
MAX_INTEGER_DIGITS = 19  # int64
MAX_EXPONENT = 8
MAX_POWERS = 4
MAX_FLOAT_PRECISION = 1024

_SYMPY_FUNCTIONS = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "LessThan",
    "StrictGreaterThan", "GreaterThan", "And", "Or", "Not",
    # a data-dependent bool as an integer (draft_export's `.item()` of a bool): Piecewise((1, Eq(u0, 1)), (0, True))
    "Piecewise", "ExprCondPair",
}
# torch.utils._sympy.functions that the deserializer hands to sympify, less the literal-driven ones named above.
_TORCH_FUNCTIONS = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "PowByNatural", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
    "TruncToInt", "RoundToInt", "ToFloat", "Identity",
}
_CONSTANTS = {"true", "false", "True", "False", "oo", "zoo", "nan"}
# Keyword arguments srepr writes: a Symbol's assumptions, a Float's precision.
_KEYWORDS = {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "nonzero", "zero",
             "extended_real", "commutative", "evaluate", "precision"}
_EXPRESSION_NAMES = _SYMPY_FUNCTIONS | _TORCH_FUNCTIONS | _CONSTANTS | _KEYWORDS
_POWERS = {"Pow", "PowByNatural", "**"}

# Guards read input sizes (`L['x'].size()[0]`) and compare them with what Python's math and builtins compute.
_GUARD_NAMES = {"L", "and", "or", "not", "True", "False", "max", "min", "abs", "int", "float", "math", "inf"}
_GUARD_METHODS = {"size", "stride", "storage_offset", "floor", "ceil", "trunc", "sqrt", "isnan", "isinf"}

SYMBOL_NAME = re.compile(r"[a-z]{1,4}[0-9]+")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_TEXT = re.compile(r"-?[0-9]{1,40}\.?[0-9]{0,40}(e[+-]?[0-9]{1,4})?")
_TOKEN = re.compile(r"""
    (?P<space>\ +)
  | (?P<number>[0-9]+(\.[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^'\\\n]*')
  | (?P<op>\*\*|//|==|!=|<=|>=|[-+*/%<>(),=\[\].])
""", re.VERBOSE)


def check_sym_expr(text: str, where: str) -> None:
    """Refuse a symbolic expression (`expr_str`) that is anything but sympy shape arithmetic."""
    tokens = _tokens(text, where)
    for index, (kind, value) in enumerate(tokens):
        if kind == "name" and value not in _EXPRESSION_NAMES and not SYMBOL_NAME.fullmatch(value):
            raise InvalidUpload(f"{where}: symbolic expression uses '{value}', which is not an allowed function "
                                f"or symbol name: {_excerpt(text)}")
        if kind == "op" and value in "[].":
            raise InvalidUpload(f"{where}: symbolic expression may not contain '{value}': {_excerpt(text)}")
        if kind == "string" and not (IDENTIFIER.fullmatch(value[1:-1]) or _NUMBER_TEXT.fullmatch(value[1:-1])):
            raise InvalidUpload(f"{where}: symbolic expression quotes {value}, which is neither a symbol name nor a "
                                f"number: {_excerpt(text)}")
        if kind == "name" and value == "precision":
            _check_precision(tokens, index, text, where)
    _check_powers(tokens, text, where)


def check_guard(text: str, where: str) -> None:
    """Refuse a guard (a line of `guards_code`, compiled by torch into Python) that is anything but arithmetic
    and comparisons on input sizes."""
    tokens = _tokens(text, where)
    for index, (kind, value) in enumerate(tokens):
        if kind == "name":
            after_dot = index > 0 and tokens[index - 1] == ("op", ".")
            allowed = _GUARD_METHODS if after_dot else _GUARD_NAMES | _SYMPY_FUNCTIONS | _TORCH_FUNCTIONS
            if value not in allowed:
                raise InvalidUpload(f"{where}: guard uses '{value}', which guards may not use: {_excerpt(text)}")
        if kind == "op" and value == "." and (index + 1 == len(tokens) or tokens[index + 1][0] != "name"):
            raise InvalidUpload(f"{where}: guard has a '.' that is not a size method call: {_excerpt(text)}")
        if kind == "string" and not IDENTIFIER.fullmatch(value[1:-1]):
            raise InvalidUpload(f"{where}: guard quotes {value}, which is not an input name: {_excerpt(text)}")
    _check_powers(tokens, text, where)


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    if not isinstance(text, str):
        raise InvalidUpload(f"{where}: expected an expression string, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise InvalidUpload(f"{where}: expression is {len(text)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidUpload(f"{where}: expression has a character that is not allowed at position {position} "
                                f"({text[position]!r}): {_excerpt(text)}")
        kind = match.lastgroup
        value = match.group()
        if kind == "number" and len(value.partition(".")[0]) > MAX_INTEGER_DIGITS:
            raise InvalidUpload(f"{where}: expression has a number longer than {MAX_INTEGER_DIGITS} digits")
        if kind != "space":
            tokens.append((kind, value))
        position = match.end()
    return tokens


def _check_precision(tokens: list[tuple[str, str]], index: int, text: str, where: str) -> None:
    following = tokens[index + 1:index + 3]
    if (len(following) != 2 or following[0] != ("op", "=") or following[1][0] != "number"
            or int(float(following[1][1])) > MAX_FLOAT_PRECISION):
        raise InvalidUpload(f"{where}: a Float's precision must be a literal of at most {MAX_FLOAT_PRECISION} bits: "
                            f"{_excerpt(text)}")


def _check_powers(tokens: list[tuple[str, str]], text: str, where: str) -> None:
    powers = [i for i, (kind, value) in enumerate(tokens) if value in _POWERS and kind in ("name", "op")]
    if len(powers) > MAX_POWERS:
        raise InvalidUpload(f"{where}: expression raises to a power more than {MAX_POWERS} times: {_excerpt(text)}")
    for index in powers:
        exponent = tokens[index + 1:] if tokens[index][1] == "**" else _second_argument(tokens, index)
        if not _is_small_integer(exponent):
            raise InvalidUpload(f"{where}: an exponent must be a literal integer of magnitude at most {MAX_EXPONENT}: "
                                f"{_excerpt(text)}")


def _second_argument(tokens: list[tuple[str, str]], index: int) -> list[tuple[str, str]]:
    """The tokens of the second argument of the call starting at `tokens[index]` (a function name)."""
    if index + 1 >= len(tokens) or tokens[index + 1] != ("op", "("):
        return []
    depth, start = 0, None
    for position in range(index + 1, len(tokens)):
        value = tokens[position][1] if tokens[position][0] == "op" else None
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
            if depth == 0:
                return tokens[start:position] if start is not None else []
        elif value == "," and depth == 1:
            if start is not None:
                return []  # a third argument: not a power
            start = position + 1
    return []


def _is_small_integer(tokens: list[tuple[str, str]]) -> bool:
    """Whether `tokens` start with an integer literal of magnitude <= MAX_EXPONENT: `2`, `-2`, `(2)` or
    `Integer(2)`. After a bare `**` the rest of the expression follows, but never another `**` (powers of powers
    associate to the right: `2**8**8**8`)."""
    values = [value for _, value in tokens]
    for prefix, suffix in ((["Integer", "("], [")"]), (["("], [")"]), ([], [])):
        if values[:len(prefix)] != prefix:
            continue
        body = values[len(prefix):]
        sign_length = 1 if body[:1] == ["-"] else 0
        number = body[sign_length:sign_length + 1]
        end = sign_length + 1 + len(suffix)
        if number and number[0].isdigit() and body[sign_length + 1:end] == suffix and body[end:end + 1] != ["**"]:
            return int(number[0]) <= MAX_EXPONENT
    return False


def _excerpt(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
