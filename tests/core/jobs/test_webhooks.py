"""Webhook signing, the public-address rule that keeps tenants out of our network, and how answers are judged."""

import hashlib
import hmac
from types import SimpleNamespace

import httpx
import pytest

from core.jobs.webhooks import WebhookRefused, check_public_address, deliver, sign


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    body = b'{"event":"job.finished"}'
    expected = hmac.new(b"a-long-enough-secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("a-long-enough-secret", 1700000000, body) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/",
                                 "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://192.168.0.5/",
                                 "http://0.0.0.0/", "http://100.64.0.1/"])
def test_addresses_that_are_not_public_are_refused(url):
    with pytest.raises(WebhookRefused, match="not a public address"):
        check_public_address(url, allow_private=False)
    check_public_address(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://user:pw@example.com/", "file:///etc/passwd"])
def test_urls_without_http_or_with_credentials_are_refused(url):
    with pytest.raises(WebhookRefused):
        check_public_address(url, allow_private=True)


JOB = SimpleNamespace(id="job_1", status="succeeded", model_id="mdl_1", dataset_id="ds_1", error_code=None,
                      error_message=None, metrics={"final": {"accuracy": 0.9, "layers": [1, 2]}}, finished_at=None)


@pytest.mark.parametrize(("status", "delivered", "retry"), [(200, True, False), (204, True, False),
                                                           (500, False, True), (429, False, True),
                                                           (404, False, False), (301, False, False)])
def test_answers_decide_between_done_retry_and_give_up(status, delivered, retry):
    seen = {}

    def receiver(request: httpx.Request) -> httpx.Response:
        seen["signature"], seen["body"] = request.headers["x-modelpress-signature"], request.content
        return httpx.Response(status, headers={"location": "http://127.0.0.1/"} if status == 301 else {})

    result = deliver(JOB, "http://receiver.test/hook", "a-long-enough-secret", 1, allow_private=True,
                     transport=httpx.MockTransport(receiver))
    assert (result.delivered, result.retry) == (delivered, retry)
    timestamp = seen["signature"].split(",")[0].removeprefix("t=")
    assert seen["signature"] == sign("a-long-enough-secret", int(timestamp), seen["body"])
    assert b'"layers"' not in seen["body"], "lists of diagnostics stay out of the payload"


def test_a_receiver_that_cannot_be_reached_is_retried():
    def unreachable(request):
        raise httpx.ConnectError("refused", request=request)

    result = deliver(JOB, "http://receiver.test/hook", "a-long-enough-secret", 3, allow_private=True,
                     transport=httpx.MockTransport(unreachable))
    assert result.retry and result.status == "retrying: ConnectError"


def test_a_private_target_fails_without_a_request():
    result = deliver(JOB, "http://127.0.0.1:9/hook", "a-long-enough-secret", 1, allow_private=False)
    assert not result.retry and result.status.startswith("failed:") and "not a public address" in result.status
