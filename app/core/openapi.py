"""The OpenAPI document describes the bodies actually sent: every error, 422 included, is an ErrorBody."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_BODY_REF = "#/components/schemas/ErrorBody"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = _with_error_body_for_validation(schema)
        return app.openapi_schema

    app.openapi = openapi


def _with_error_body_for_validation(schema: dict) -> dict:
    """FastAPI documents its own 422 body (HTTPValidationError) for any route with parameters; our handler sends
    ErrorBody instead, so say so."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            response = operation.get("responses", {}).get("422")
            if response is None:
                continue
            media = response.setdefault("content", {}).setdefault("application/json", {})
            if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError") or not media.get("schema"):
                media["schema"] = {"$ref": ERROR_BODY_REF}
                response["description"] = "The request is invalid; the detail says what to fix."
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)
    return schema
