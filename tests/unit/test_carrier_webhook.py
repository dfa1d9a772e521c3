"""EasyPost webhook signatures: HMAC-SHA256 hex over the raw body, keyed by the NFKD-normalised secret.

The expected digests were computed outside Python with `openssl dgst -sha256 -hmac`, so a bug shared
by the adapter and the simulator (both written here) cannot hide behind the same code.
"""

from __future__ import annotations

from orderflow.adapters.carrier import verify_webhook
from orderflow.sandbox.carrier import signature_header

BODY = b'{"id":"evt_1","description":"tracker.updated"}'
PLAIN_DIGEST = "2af6b076551124d1d9fda4d46ed9dcd13f06b150cabfb6fed300a7907065eb29"  # key "sandbox-secret"
FI_DIGEST = "2ab55c1c5cbb97e7bfddd468568ba07a26166c294bc6f462af25bf5c141bd59b"  # key "fi-secret"
E_DECOMPOSED_DIGEST = "9179bd2b42891a82d83aaceeee9761309c9c5ee02f19579dca91d3ed24d68f62"  # key "se\u0301cret"
E_COMPOSED_DIGEST = "d121bff65e97874ca83e4aaae7ad2fad6a840ec1f2e4621b4497d2df40ccbf23"  # key "s\u00e9cret" (raw)


def test_accepts_the_signature_of_an_ascii_secret() -> None:
    assert verify_webhook(BODY, f"hmac-sha256-hex={PLAIN_DIGEST}", "sandbox-secret")


def test_ligature_in_the_secret_is_normalised_before_keying() -> None:
    # NFKD turns the single character U+FB01 into the two letters "fi".
    assert verify_webhook(BODY, f"hmac-sha256-hex={FI_DIGEST}", "\ufb01-secret")


def test_composed_and_decomposed_accents_verify_the_same_signature() -> None:
    header = f"hmac-sha256-hex={E_DECOMPOSED_DIGEST}"
    assert verify_webhook(BODY, header, "s\u00e9cret")
    assert verify_webhook(BODY, header, "se\u0301cret")


def test_a_signature_keyed_by_the_unnormalised_secret_is_refused() -> None:
    assert not verify_webhook(BODY, f"hmac-sha256-hex={E_COMPOSED_DIGEST}", "s\u00e9cret")


def test_refuses_a_tampered_body_a_wrong_secret_and_a_missing_prefix() -> None:
    header = f"hmac-sha256-hex={PLAIN_DIGEST}"
    assert not verify_webhook(BODY + b" ", header, "sandbox-secret")
    assert not verify_webhook(BODY, header, "other-secret")
    assert not verify_webhook(BODY, PLAIN_DIGEST, "sandbox-secret")
    assert not verify_webhook(BODY, "", "sandbox-secret")
    assert not verify_webhook(BODY, None, "sandbox-secret")


def test_simulator_signs_with_the_same_scheme_as_the_openssl_vectors() -> None:
    assert signature_header("\ufb01-secret", BODY) == f"hmac-sha256-hex={FI_DIGEST}"
    assert signature_header("s\u00e9cret", BODY) == f"hmac-sha256-hex={E_DECOMPOSED_DIGEST}"
