"""Webhooks: one signed POST to the job's `webhook.url` when the job reaches a final state, retried with backoff.

Signature (the scheme GitHub and Stripe users know): header `X-Modelpress-Signature: t=<unix time>,v1=<hex>`
where hex = HMAC-SHA256(secret, f"{t}.{body}"); the receiver recomputes it with the secret it chose at submission
and refuses old timestamps. A tenant must not be able to aim the service at its own network (SSRF): the URL's
host must resolve to public addresses only, checked again at every delivery (DNS may change), redirects are not
followed, and the response body is never read back into anything a tenant sees.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

EVENT = "job.finished"
TIMEOUT_S = 10.0
# Responses that mean "try again later"; any other 4xx means the receiver refuses this delivery for good.
RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookRefused(ValueError):
    """The URL may not be called (scheme, credentials, or an address that is not public)."""


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    retry: bool
    status: str  # what the job shows: "delivered (HTTP 200)", "failed: ...", "retrying: ..."


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def check_url_syntax(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("a webhook URL needs http:// or https:// and a host")
    if parts.username or parts.password:
        raise WebhookRefused("a webhook URL may not carry credentials; use the signing secret to authenticate")


def check_public_address(url: str, allow_private: bool) -> None:
    """Every address the host resolves to must be public unless `allow_private` (development, tests)."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefused(f"the webhook host {parts.hostname!r} does not resolve ({exc.strerror})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(f"the webhook host {parts.hostname!r} resolves to {address}, which is not a public "
                                 "address")


def payload(job) -> bytes:
    final = (job.metrics or {}).get("final") or {}
    body = {"event": EVENT, "job": {
        "id": job.id, "status": job.status, "model_id": job.model_id, "dataset_id": job.dataset_id,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "final": {key: value for key, value in final.items() if isinstance(value, (int, float, str, dict))},
        "finished_at": job.finished_at.isoformat() if job.finished_at else None}}
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def deliver(job, url: str, secret: str, attempt: int, allow_private: bool,
            transport: httpx.BaseTransport | None = None) -> Delivery:
    try:
        check_public_address(url, allow_private)
    except WebhookRefused as exc:
        return Delivery(False, False, f"failed: {exc}")
    body = payload(job)
    headers = {"Content-Type": "application/json", "User-Agent": "modelpress-webhook/1",
               "X-Modelpress-Event": EVENT, "X-Modelpress-Delivery": f"{job.id}-{attempt}",
               "X-Modelpress-Signature": sign(secret, int(time.time()), body)}
    try:
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, transport=transport) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Delivery(False, True, f"retrying: {type(exc).__name__}")
    if 200 <= response.status_code < 300:
        return Delivery(True, False, f"delivered (HTTP {response.status_code})")
    if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
        return Delivery(False, True, f"retrying: HTTP {response.status_code}")
    return Delivery(False, False, f"failed: the receiver answered HTTP {response.status_code}")


def backoff_s(attempt: int) -> float:
    return min(2.0 ** attempt, 600.0)
