"""ShipBob webhook verification (Standard Webhooks): published vector, stale timestamps, tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

from pydantic import SecretStr

from orderflow.adapters.wms import verify_webhook

# The Standard Webhooks / Svix published example, computed by them, not by orderflow.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str = VECTOR_SIGNATURE, *, timestamp: int = VECTOR_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": VECTOR_ID, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_the_published_vector_verifies() -> None:
    assert verify_webhook(VECTOR_BODY, headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + 10)


def test_a_signature_computed_here_from_the_scheme_verifies_with_mixed_case_headers() -> None:
    key = b"orderflow-test-key-32-bytes-long"
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b'{"id":100000001,"status":"Fulfilled"}'
    mac = hmac.new(key, b"msg_abc.1700000000." + body, hashlib.sha256).digest()
    sent = {
        "Webhook-Id": "msg_abc",
        "Webhook-Timestamp": "1700000000",
        "Webhook-Signature": "v1,bm90LXRoaXMtb25l v1," + base64.b64encode(mac).decode(),
    }

    assert verify_webhook(body, sent, SecretStr(secret), now=datetime.fromtimestamp(1700000100, UTC))


def test_a_stale_timestamp_is_rejected_even_with_a_valid_signature() -> None:
    assert not verify_webhook(VECTOR_BODY, headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + 301)
    assert not verify_webhook(VECTOR_BODY, headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP - 301)


def test_a_tampered_body_is_rejected() -> None:
    assert not verify_webhook(b'{"test": 2432232315}', headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_another_secret_an_unknown_version_or_missing_headers_are_rejected() -> None:
    other = "whsec_" + base64.b64encode(b"another-key").decode()
    assert not verify_webhook(VECTOR_BODY, headers(), other, now=VECTOR_TIMESTAMP)
    assert not verify_webhook(
        VECTOR_BODY, headers(VECTOR_SIGNATURE.replace("v1,", "v2,")), VECTOR_SECRET, now=VECTOR_TIMESTAMP
    )
    assert not verify_webhook(VECTOR_BODY, {"webhook-id": VECTOR_ID}, VECTOR_SECRET, now=VECTOR_TIMESTAMP)
    assert not verify_webhook(VECTOR_BODY, headers(timestamp=0) | {"webhook-timestamp": "soon"}, VECTOR_SECRET, now=0)
