"""Domain errors carry their HTTP status; one handler renders them as {"error": code, "detail": message}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorBody(BaseModel):
    error: str
    detail: str


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class Unauthorized(DomainError):
    status_code, code = 401, "unauthorized"


class NotFound(DomainError):
    status_code, code = 404, "not_found"


class Conflict(DomainError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(DomainError):
    status_code, code = 413, "payload_too_large"


class InvalidInput(DomainError):
    status_code, code = 422, "invalid_input"


class RangeNotSatisfiable(DomainError):
    status_code, code = 416, "range_not_satisfiable"


def responses(*errors: type[DomainError]) -> dict:
    """OpenAPI `responses` for the errors an endpoint can return."""
    return {error.status_code: {"model": ErrorBody, "description": error.__doc__ or error.code}
            for error in errors}


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part not in ("body",))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid_input", "detail": "; ".join(problems)}, 422)
