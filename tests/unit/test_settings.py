"""Settings: environment variables configure every system; sandbox credentials stay in the sandbox."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orderflow.settings import SANDBOX_SHOPIFY_ACCESS_TOKEN, Settings, is_local_url


def test_defaults_point_every_system_at_the_local_sandbox() -> None:
    settings = Settings()
    for system in (settings.shopify, settings.netsuite, settings.wms, settings.carrier):
        assert is_local_url(system.base_url)


def test_nested_environment_variables_configure_a_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_NETSUITE__AUTH_METHOD", "tba")
    monkeypatch.setenv("ORDERFLOW_NETSUITE__MAX_CONCURRENCY", "9")
    settings = Settings()
    assert settings.netsuite.auth_method == "tba"
    assert settings.netsuite.max_concurrency == 9


def test_a_real_vendor_url_with_the_sandbox_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_SHOPIFY__BASE_URL", "https://acme.myshopify.com")
    with pytest.raises(ValidationError, match="access_token still holds the sandbox"):
        Settings()


def test_a_real_vendor_url_with_real_secrets_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_SHOPIFY__BASE_URL", "https://acme.myshopify.com")
    monkeypatch.setenv("ORDERFLOW_SHOPIFY__ACCESS_TOKEN", "shpat_real")
    monkeypatch.setenv("ORDERFLOW_SHOPIFY__CLIENT_SECRET", "real-secret")
    assert Settings().shopify.base_url == "https://acme.myshopify.com"


def test_secrets_never_appear_in_a_repr() -> None:
    settings = Settings()
    assert SANDBOX_SHOPIFY_ACCESS_TOKEN not in repr(settings)
    assert SANDBOX_SHOPIFY_ACCESS_TOKEN not in str(settings.model_dump())
