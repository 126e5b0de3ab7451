"""Domain errors carry their HTTP status; one set of handlers renders every error, ours or the framework's, as
{"error": code, "detail": message}."""

from __future__ import annotations

import logging
import re
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("modelpress.api")


class ErrorBody(BaseModel):
    error: str
    detail: str

    model_config = {"json_schema_extra": {"examples": [{"error": "invalid_input",
                                                        "detail": "stages.0.ptq.calibration_samples: Input should "
                                                                  "be less than or equal to 100000"}]}}


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(DomainError):
    """The request itself is malformed (e.g. a NUL byte in the URL, an unparseable body)."""
    status_code, code = 400, "bad_request"


class Unauthorized(DomainError):
    """Missing, malformed, unknown or revoked API key."""
    status_code, code = 401, "unauthorized"

    def __init__(self, detail: str):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(DomainError):
    """No such resource for this tenant."""
    status_code, code = 404, "not_found"


class Conflict(DomainError):
    """The resource is in a state that does not allow this (in use, already finished, request in progress)."""
    status_code, code = 409, "conflict"


class PayloadTooLarge(DomainError):
    """The request body or uploaded file is over its size limit."""
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(DomainError):
    """Uploads must be multipart/form-data."""
    status_code, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(DomainError):
    """The Range header is malformed or outside the file."""
    status_code, code = 416, "range_not_satisfiable"


class InvalidInput(DomainError):
    """The request is well-formed but its content is invalid; the detail says what to fix."""
    status_code, code = 422, "invalid_input"


class IdempotencyKeyReused(DomainError):
    """The Idempotency-Key was already used for a different request."""
    status_code, code = 422, "idempotency_key_reused"


class QuotaExceeded(DomainError):
    """A tenant quota (stored bytes, active jobs) would be exceeded; Retry-After is set when waiting helps."""
    status_code, code = 429, "quota_exceeded"


class InternalError(DomainError):
    """An unexpected error; it is logged with the incident id given in the detail."""
    status_code, code = 500, "internal_error"


# Framework errors (routing, body parsing) that are not raised as DomainErrors, by status.
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input"}


def responses(*errors: type[DomainError]) -> dict:
    """OpenAPI `responses` for the errors an endpoint can return (errors sharing a status share one entry)."""
    merged: dict[int, dict] = {}
    for error in errors:
        entry = merged.setdefault(error.status_code, {"model": ErrorBody, "description": ""})
        described = error.__doc__ or error.code
        entry["description"] = f"{entry['description']} / {described}" if entry["description"] else described
    return merged


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status, headers=headers)


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part not in ("body",))


def _problem(error: dict) -> str:
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'decode error')} at character " \
               f"{error['loc'][-1]}"
    if tuple(error["loc"]) == ("body",) and error["type"] in ("missing", "dict_type", "model_attributes_type"):
        return "the body must be a JSON object sent with 'Content-Type: application/json'"
    return f"{_location(error['loc'])}: {error['msg']}"


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods documented for `path` (routers nest, so the OpenAPI paths are the one flat list of them)."""
    for template, operations in app.openapi()["paths"].items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^/]+?\}", template))
        if re.fullmatch(pattern, path):
            return sorted(method.upper() for method in operations)
    return []


def _framework_detail(exc: StarletteHTTPException, request: Request) -> str:
    if exc.status_code == 404:
        return f"no such endpoint: {request.method} {request.url.path}; the endpoints are listed at /docs"
    if exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(request.app, request.url.path))
        return f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return "a number in the body has more than 4300 digits"
    if exc.status_code == 400 and cause is not None:
        return f"the request body could not be parsed: {cause}"
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_input", "; ".join(_problem(e) for e in exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, _framework_detail(exc, request), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # The traceback stays in the server log; the client gets an id to quote, never internals.
        incident = secrets.token_hex(6)
        logger.error("internal error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
        return error_response(500, InternalError.code, f"an unexpected error occurred (incident {incident}); it "
                                                       "has been logged. Retry later, or report the incident id")
