"""Every field of every method spec says in the OpenAPI schema what it means, its default and its range."""

from compression.specs import STAGE_SPECS


def _schema(api) -> dict:
    return api.get("/openapi.json").json()["components"]["schemas"]


def _referenced(schema: dict, components: dict, seen: set[str]) -> None:
    """Add to `seen` every component `schema` refers to, transitively."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                _referenced(components[name], components, seen)
        for value in schema.values():
            _referenced(value, components, seen)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, components, seen)


def _numeric(prop: dict) -> list[dict]:
    variants = prop.get("anyOf", [prop])
    # A fixed set of values (a literal or an enum) is its own range.
    return [v for v in variants if v.get("type") in ("integer", "number") and "const" not in v and "enum" not in v]


def _nullable(prop: dict) -> bool:
    return any(v.get("type") == "null" for v in prop.get("anyOf", []))


def _problems(name: str, component: dict) -> list[str]:
    problems = []
    required = set(component.get("required", []))
    for field, prop in component.get("properties", {}).items():
        where = f"{name}.{field}"
        if field == "method" or field == "kind" and "const" in prop:
            continue  # the discriminator: its one value says it all
        if not prop.get("description"):
            problems.append(f"{where}: no description")
        # FastAPI writes the schema without null values, so a default of null shows as no default on a nullable field.
        if field not in required and "default" not in prop and not _nullable(prop):
            problems.append(f"{where}: no default")
        for variant in _numeric(prop):
            if not ({"minimum", "exclusiveMinimum"} & set(variant) and {"maximum", "exclusiveMaximum"} & set(variant)):
                problems.append(f"{where}: no range")
    return problems


def test_every_field_of_every_method_spec_is_described_with_default_and_range(api):
    components = _schema(api)
    names: set[str] = {"EvaluationSpec"}
    for spec in STAGE_SPECS:
        names.add(spec.__name__)
        _referenced(components[spec.__name__], components, names)
    _referenced(components["EvaluationSpec"], components, names)
    problems = [problem for name in sorted(names) for problem in _problems(name, components[name])]
    assert not problems, f"{len(problems)} fields lack a description, default or range:\n" + "\n".join(problems)
