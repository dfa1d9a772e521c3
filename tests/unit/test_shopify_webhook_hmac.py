"""Webhook verification: base64 HMAC-SHA256 over the raw body, keyed by the app's client secret."""

from __future__ import annotations

import base64
import hashlib
import hmac

from pydantic import SecretStr

from orderflow.adapters.shopify import verify_webhook, webhook_secrets
from orderflow.settings import ShopifySettings

BODY = b'{"id":6200407294252,"name":"#1042","total_price":"186.90"}'
SECRET = "shpss_current_secret"
OLD_SECRET = "shpss_previous_secret"


def _sign(body: bytes, secret: str) -> str:
    # Computed here independently of the adapter, the way Shopify documents it.
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_known_vector_matches_an_independent_computation() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    expected_hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    header = base64.b64encode(bytes.fromhex(expected_hex)).decode()

    assert verify_webhook(b"what do ya want for nothing?", header, ["Jefe"])


def test_accepts_a_body_signed_with_the_current_secret() -> None:
    assert verify_webhook(BODY, _sign(BODY, SECRET), [SECRET, OLD_SECRET])


def test_accepts_the_previous_secret_during_a_rotation() -> None:
    assert verify_webhook(BODY, _sign(BODY, OLD_SECRET), [SECRET, OLD_SECRET])


def test_refuses_the_previous_secret_once_it_is_dropped() -> None:
    assert not verify_webhook(BODY, _sign(BODY, OLD_SECRET), [SECRET])


def test_refuses_a_tampered_body() -> None:
    header = _sign(BODY, SECRET)
    tampered = BODY.replace(b"186.90", b"1.90")

    assert not verify_webhook(tampered, header, [SECRET])


def test_refuses_re_serialised_json_with_the_same_meaning() -> None:
    header = _sign(BODY, SECRET)
    spaced = b'{"id": 6200407294252, "name": "#1042", "total_price": "186.90"}'

    assert not verify_webhook(spaced, header, [SECRET])


def test_refuses_a_missing_or_garbled_header() -> None:
    assert not verify_webhook(BODY, None, [SECRET])
    assert not verify_webhook(BODY, "", [SECRET])
    assert not verify_webhook(BODY, "not-base64!", [SECRET])


def test_an_empty_secret_list_verifies_nothing() -> None:
    assert not verify_webhook(BODY, _sign(BODY, ""), [])


def test_settings_supply_the_current_and_previous_secret() -> None:
    settings = ShopifySettings(client_secret=SecretStr(SECRET), previous_client_secret=SecretStr(OLD_SECRET))

    assert webhook_secrets(settings) == [SECRET, OLD_SECRET]
    assert verify_webhook(BODY, _sign(BODY, OLD_SECRET), webhook_secrets(settings))
