"""What the SDK raises. Every error the API answers becomes an `ApiError` subclass chosen by the server's `error`
code (or, failing that, the HTTP status), carrying that code, the server's `detail` and the status."""

from __future__ import annotations

import httpx


class ModelpressError(Exception):
    """Base of everything the SDK raises on purpose."""


class ApiError(ModelpressError):
    status_code: int = 0

    def __init__(self, status_code: int, error: str, detail: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status_code} {error}: {detail}")
        self.status_code, self.error, self.detail, self.retry_after = status_code, error, detail, retry_after


class BadRequest(ApiError):
    """The request is malformed (400)."""


class Unauthorized(ApiError):
    """Missing, unknown or revoked API key (401)."""


class NotFound(ApiError):
    """No such model, dataset, job or artifact for this key's tenant (404)."""


class Conflict(ApiError):
    """The resource's state forbids this (409): e.g. cancelling a finished job, deleting a model in use."""


class PayloadTooLarge(ApiError):
    """The upload or body is over the service's size limit (413)."""


class InvalidInput(ApiError):
    """The request is well-formed but cannot work (422); `detail` says what to fix."""


class QuotaExceeded(ApiError):
    """The tenant's storage or active-job quota is used up (429); `retry_after` when waiting helps."""


class Overloaded(ApiError):
    """The service refused the request before doing anything (503); retry after `retry_after` seconds."""


class ServerError(ApiError):
    """An unexpected failure of the service (5xx); `detail` holds the incident id to report."""


class JobFailed(ModelpressError):
    """`Job.wait(raise_on_failure=True)` on a job that failed or was cancelled."""

    def __init__(self, job):
        error = job.error or {}
        super().__init__(f"job {job.id} {job.status}: {error.get('code')}: {error.get('message')}")
        self.job = job


class ChecksumMismatch(ModelpressError):
    """A downloaded artifact's sha256 differs from the one the server sent: the file was not kept."""


_BY_CODE = {"bad_request": BadRequest, "unauthorized": Unauthorized, "not_found": NotFound, "conflict": Conflict,
            "payload_too_large": PayloadTooLarge, "invalid_input": InvalidInput,
            "idempotency_key_reused": InvalidInput, "quota_exceeded": QuotaExceeded, "overloaded": Overloaded,
            "internal_error": ServerError}
_BY_STATUS = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
              422: InvalidInput, 429: QuotaExceeded, 503: Overloaded}


def error_from_response(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        error, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):  # not our error body (a proxy's page, say)
        error, detail = f"http_{response.status_code}", response.text[:500] or response.reason_phrase
    kind = _BY_CODE.get(error) or _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    retry_after = response.headers.get("retry-after")
    return kind(response.status_code, error, detail,
                float(retry_after) if retry_after and retry_after.isdigit() else None)
