"""NetSuite sign-in: the TBA signature against RFC 5849's worked example, and the M2M client assertion."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orderflow.adapters.netsuite import (
    ASSERTION_LIFETIME_SECONDS,
    client_assertion,
    percent_encode,
    tba_authorization_header,
    tba_base_string,
    tba_signature,
)
from orderflow.sandbox import netsuite as simulator
from orderflow.settings import NetSuiteSettings

# RFC 5849 §3.4.1.1: the request's form body (c2, a3=2 q) is put in the query here, because
# NetSuite signs no body; both are the same parameter source for the normalisation.
RFC_URL = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b&c2=&a3=2%20q"
RFC_OAUTH = {
    "oauth_consumer_key": "9djdj82h48djs9d2",
    "oauth_token": "kkk9d7dh3k39sjv7",
    "oauth_signature_method": "HMAC-SHA1",
    "oauth_timestamp": "137131201",
    "oauth_nonce": "7d8f3e4a",
}
RFC_BASE_STRING = (
    "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D"
    "%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a"
    "%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
)


def test_base_string_matches_rfc_5849_worked_example() -> None:
    assert tba_base_string("post", RFC_URL, {**RFC_OAUTH, "realm": "Example"}) == RFC_BASE_STRING


def test_base_string_drops_default_port_and_lowercases_host() -> None:
    assert tba_base_string("POST", "HTTP://EXAMPLE.COM:80/request" + RFC_URL[26:], RFC_OAUTH) == RFC_BASE_STRING


def test_base_string_keeps_a_non_default_port_and_the_path_case() -> None:
    base = tba_base_string("GET", "http://127.0.0.1:8700/netsuite/services/rest/record/v1/salesOrder/eid:SO-1", {})
    assert (
        base
        == "GET&http%3A%2F%2F127.0.0.1%3A8700%2Fnetsuite%2Fservices%2Frest%2Frecord%2Fv1%2FsalesOrder%2Feid%3ASO-1&"
    )


def test_percent_encoding_follows_rfc_3986_unreserved_set() -> None:
    assert percent_encode("a b+c~d*e/f=g") == "a%20b%2Bc~d%2Ae%2Ff%3Dg"


def test_signature_is_hmac_sha256_of_base_string_with_both_secrets() -> None:
    # Computed here from first principles: key is enc(consumer secret) & enc(token secret).
    expected = base64.b64encode(
        hmac.new(b"kd94hf93k423kf44&pfkkdhi9sl3r4s00", RFC_BASE_STRING.encode(), hashlib.sha256).digest()
    ).decode()
    assert tba_signature(RFC_BASE_STRING, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00") == expected


def test_signature_percent_encodes_secrets_in_the_key() -> None:
    expected = base64.b64encode(hmac.new(b"a%26b&c%20d", b"x", hashlib.sha256).digest()).decode()
    assert tba_signature("x", "a&b", "c d") == expected


def test_header_carries_realm_and_signature_the_simulator_accepts() -> None:
    url = "http://127.0.0.1:9/netsuite/services/rest/query/v1/suiteql?limit=10&offset=0"
    header = tba_authorization_header(
        "POST", url, realm="1234567_SB1", consumer_key="ck", consumer_secret="cs", token_id="tk",
        token_secret="ts", timestamp=1722500000, nonce="abc123",
    )  # fmt: skip
    assert header.startswith('OAuth realm="1234567_SB1", oauth_consumer_key="ck", oauth_token="tk"')
    fields = dict(part.split("=", 1) for part in header[len("OAuth ") :].split(", "))
    sent = {k: v.strip('"') for k, v in fields.items()}
    oauth = {k: v for k, v in sent.items() if k.startswith("oauth_") and k != "oauth_signature"}
    # The simulator's own implementation (written separately) must agree on the signature.
    expected = simulator.tba_signature("POST", url, "limit=10&offset=0", oauth, "cs", "ts")
    assert sent["oauth_signature"] == percent_encode(expected)


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_client_assertion_names_certificate_client_and_token_endpoint(key_pair: tuple[bytes, bytes]) -> None:
    private, public = key_pair
    settings = NetSuiteSettings(client_id="client-1", certificate_id="cert-9", jwt_algorithm="PS256")
    token_url = "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"
    assertion = client_assertion(settings, token_url=token_url, now=1_700_000_000, private_key=private)
    header = jwt.get_unverified_header(assertion)
    assert header == {"alg": "PS256", "typ": "JWT", "kid": "cert-9"}
    claims = jwt.decode(assertion, public, algorithms=["PS256"], audience=token_url, options={"verify_exp": False})
    assert claims["iss"] == "client-1"
    assert claims["scope"] == "rest_webservices"
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_SECONDS <= 3600
