"""Configuration of orderflow: one `Settings`, read from `ORDERFLOW_*` variables or a `.env` file.

Every credential is a `SecretStr`, so it never shows up in a repr, a log line or a traceback. The
defaults point every adapter at the local sandbox with the sandbox's well-known credentials;
pointing at a real vendor is configuration only. To stop a sandbox credential from reaching a
real vendor by accident, a system whose base URL is not on this machine refuses them.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from orderflow.codec import CodecKey

SANDBOX_URL = "http://127.0.0.1:8700"

# The sandbox's own credentials. They are published on purpose (every developer's sandbox
# accepts them) and must therefore never be sent to a real vendor: see `_refuse_sandbox_secrets`.
SANDBOX_SHOPIFY_ACCESS_TOKEN = "shpat_sandbox_0000000000000000"
SANDBOX_SHOPIFY_CLIENT_ID = "sandbox-shopify-client"
SANDBOX_SHOPIFY_CLIENT_SECRET = "shpss_sandbox_webhook_secret"
SANDBOX_NETSUITE_ACCOUNT = "1234567_SB1"
SANDBOX_NETSUITE_CONSUMER_KEY = "sandbox-consumer-key"
SANDBOX_NETSUITE_CONSUMER_SECRET = "sandbox-consumer-secret"
SANDBOX_NETSUITE_TOKEN_ID = "sandbox-token-id"
SANDBOX_NETSUITE_TOKEN_SECRET = "sandbox-token-secret"
SANDBOX_NETSUITE_CLIENT_ID = "sandbox-m2m-client"
SANDBOX_NETSUITE_CERTIFICATE_ID = "sandbox-certificate"
SANDBOX_WMS_TOKEN = "sandbox-shipbob-pat"
SANDBOX_WMS_CHANNEL_ID = 100001
SANDBOX_WMS_WEBHOOK_SECRET = "whsec_c2FuZGJveC13bXMtd2ViaG9vay1zZWNyZXQ="
SANDBOX_CARRIER_API_KEY = "EZTKsandbox0000000000"
SANDBOX_CARRIER_WEBHOOK_SECRET = "sandbox-easypost-webhook-secret"
SANDBOX_AMAZON_LWA_CLIENT_ID = "amzn1.application-oa2-client.sandbox0000000000"
SANDBOX_AMAZON_LWA_CLIENT_SECRET = "amzn1.oa2-cs.v1.sandbox-secret"
SANDBOX_AMAZON_REFRESH_TOKEN = "Atzr|sandbox-refresh-token"
SANDBOX_AMAZON_SELLER_ID = "A2SANDBOXSELLER"
SANDBOX_AMAZON_MARKETPLACE_ID = "ATVPDKIKX0DER"

SANDBOX_SECRETS = frozenset(
    {
        SANDBOX_SHOPIFY_ACCESS_TOKEN,
        SANDBOX_SHOPIFY_CLIENT_SECRET,
        SANDBOX_NETSUITE_CONSUMER_SECRET,
        SANDBOX_NETSUITE_TOKEN_SECRET,
        SANDBOX_WMS_TOKEN,
        SANDBOX_WMS_WEBHOOK_SECRET,
        SANDBOX_CARRIER_API_KEY,
        SANDBOX_CARRIER_WEBHOOK_SECRET,
        SANDBOX_AMAZON_LWA_CLIENT_SECRET,
        SANDBOX_AMAZON_REFRESH_TOKEN,
    }
)

# Where local state lives: the SQLite database, the sandbox's generated keys.
STATE_DIR = Path(".orderflow")


def is_local_url(url: str) -> bool:
    """True when a base URL names this machine or the sandbox's host, not a vendor on the internet.

    The sandbox's host is trusted when the operator names it (ORDERFLOW_SANDBOX_HOST, e.g. `sandbox`
    in a staging compose): a deliberate statement that this host is the sandbox, not a vendor.
    """
    host = urlsplit(url).hostname or ""
    if host in {"localhost", "testserver"}:
        return True
    sandbox_host = os.environ.get("ORDERFLOW_SANDBOX_HOST", "").strip().lower()
    if sandbox_host and host.lower() == sandbox_host:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SystemSettings(BaseModel):
    """Common shape of one external system's connection settings."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    timeout_seconds: float = Field(default=15.0, gt=0)
    # A throttle shorter than this is waited out inside the call; a longer one goes back to
    # Temporal as a retryable error carrying the delay, so the activity slot is not held asleep.
    max_throttle_wait_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _refuse_sandbox_secrets(self) -> _SystemSettings:
        if is_local_url(self.base_url):
            return self
        for name, value in self:
            if isinstance(value, SecretStr) and value.get_secret_value() in SANDBOX_SECRETS:
                raise ValueError(
                    f"{name} still holds the sandbox's published credential, but base_url "
                    f"{self.base_url!r} is not the sandbox; set the real secret"
                )
        return self


class ShopifySettings(_SystemSettings):
    """The Shopify store: Admin GraphQL endpoint, access token and webhook secret."""

    base_url: str = f"{SANDBOX_URL}/shopify"
    api_version: str = "2025-10"
    shop_domain: str = "orderflow-sandbox.myshopify.com"
    # "access_token": a static Admin API token (legacy custom apps); "client_credentials": the
    # adapter exchanges client id and secret for a ~24 h token and refreshes it before expiry.
    auth_method: Literal["access_token", "client_credentials"] = "access_token"
    access_token: SecretStr = SecretStr(SANDBOX_SHOPIFY_ACCESS_TOKEN)
    client_id: str = SANDBOX_SHOPIFY_CLIENT_ID
    # Signs webhooks. During a rotation Shopify may sign with the old secret for up to an hour.
    client_secret: SecretStr = SecretStr(SANDBOX_SHOPIFY_CLIENT_SECRET)
    previous_client_secret: SecretStr | None = None


class NetSuiteSettings(_SystemSettings):
    """The NetSuite account: REST endpoint, realm and either TBA or OAuth 2.0 M2M credentials."""

    base_url: str = f"{SANDBOX_URL}/netsuite"
    account_id: str = SANDBOX_NETSUITE_ACCOUNT
    auth_method: Literal["oauth2", "tba"] = "oauth2"
    # Token-based authentication (OAuth 1.0a, HMAC-SHA256), for existing integrations.
    consumer_key: str = SANDBOX_NETSUITE_CONSUMER_KEY
    consumer_secret: SecretStr = SecretStr(SANDBOX_NETSUITE_CONSUMER_SECRET)
    token_id: str = SANDBOX_NETSUITE_TOKEN_ID
    token_secret: SecretStr = SecretStr(SANDBOX_NETSUITE_TOKEN_SECRET)
    # OAuth 2.0 client credentials: a JWT signed with the certificate's private key.
    client_id: str = SANDBOX_NETSUITE_CLIENT_ID
    certificate_id: str = SANDBOX_NETSUITE_CERTIFICATE_ID
    private_key_file: Path = STATE_DIR / "sandbox" / "netsuite-m2m-key.pem"
    jwt_algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"] = "PS256"
    # NetSuite limits concurrent requests per account, shared with every other integration.
    max_concurrency: int = Field(default=4, ge=1)
    subsidiary_id: str = "1"
    # The discount item a credit memo's restocking fee is posted on ("951" in the sandbox account).
    restocking_fee_item_id: str = "951"


class WmsSettings(_SystemSettings):
    """The warehouse system (ShipBob-shaped REST): token, channel and webhook secret."""

    base_url: str = f"{SANDBOX_URL}/wms"
    api_version: str = "2026-01"
    token: SecretStr = SecretStr(SANDBOX_WMS_TOKEN)
    channel_id: int = SANDBOX_WMS_CHANNEL_ID
    webhook_secret: SecretStr = SecretStr(SANDBOX_WMS_WEBHOOK_SECRET)


class CarrierSettings(_SystemSettings):
    """The shipping carrier API (EasyPost-shaped): API key, webhook secret, ship-from address."""

    base_url: str = f"{SANDBOX_URL}/carrier"
    api_key: SecretStr = SecretStr(SANDBOX_CARRIER_API_KEY)
    webhook_secret: SecretStr = SecretStr(SANDBOX_CARRIER_WEBHOOK_SECRET)


class AmazonSettings(_SystemSettings):
    """The Amazon seller account: SP-API endpoint, Login with Amazon credentials, seller and marketplaces."""

    base_url: str = f"{SANDBOX_URL}/amazon"
    # Login with Amazon lives on its own host (api.amazon.com), not on the SP-API regional host.
    lwa_url: str = f"{SANDBOX_URL}/amazon/auth/o2/token"
    client_id: str = SANDBOX_AMAZON_LWA_CLIENT_ID
    client_secret: SecretStr = SecretStr(SANDBOX_AMAZON_LWA_CLIENT_SECRET)
    refresh_token: SecretStr = SecretStr(SANDBOX_AMAZON_REFRESH_TOKEN)
    seller_id: str = SANDBOX_AMAZON_SELLER_ID
    marketplace_ids: list[str] = Field(default_factory=lambda: [SANDBOX_AMAZON_MARKETPLACE_ID], min_length=1)

    @model_validator(mode="after")
    def _refuse_sandbox_secrets_for_lwa(self) -> AmazonSettings:
        # The token exchange is a second host: a sandbox refresh token must not reach the real LWA either.
        if is_local_url(self.lwa_url):
            return self
        for name in ("client_secret", "refresh_token"):
            if getattr(self, name).get_secret_value() in SANDBOX_SECRETS:
                raise ValueError(
                    f"{name} still holds the sandbox's published credential, but lwa_url "
                    f"{self.lwa_url!r} is not the sandbox; set the real secret"
                )
        return self


class ReturnSettings(BaseModel):
    """The return policy: window, restocking fee, where damaged units go, how the ERP records the refund."""

    model_config = ConfigDict(extra="forbid")

    # Days after the order shipped in which a customer may ask to return it.
    window_days: int = Field(default=30, ge=0)
    # Kept from the refund of received merchandise (before tax); 0 refunds everything received.
    restocking_fee_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    # The ERP location damaged units are received into, so they never count as sellable stock
    # ("9" is the sandbox's write-off location); unset, they go where the return authorization says.
    write_off_location_id: str | None = "9"
    # "credit_memo" credits the customer's account; "cash_refund" records money paid back.
    refund_method: Literal["credit_memo", "cash_refund"] = "credit_memo"
    # How long the saga waits for the goods before the return expires (label voided, RA closed).
    receipt_deadline: timedelta = timedelta(days=30)
    # Once a first receipt arrives, how long to wait for more before refunding what came. ShipBob reports
    # a return once, complete (what is missing never arrived), so none; a WMS reporting box by box wants days.
    partial_receipt_grace: timedelta = timedelta(0)


class WorkerSettings(BaseModel):
    """How much one worker process takes on at once, and how long it may take to stop."""

    model_config = ConfigDict(extra="forbid")

    # Activities mostly wait on HTTP, so this is about vendor limits (NetSuite's semaphore, ShipBob's
    # 150/min), not CPU; the shared HTTP client's connection pool is sized from it.
    max_concurrent_activities: int = Field(default=64, ge=1)
    # Workflow tasks are CPU work on this process's one core; the SDK's own default.
    max_concurrent_workflow_tasks: int = Field(default=100, ge=2)
    # Sagas kept in memory between their tasks (the sticky cache): a cached saga's next task skips
    # replaying its history. 0 turns caching off and replays every task. The SDK's own default.
    max_cached_workflows: int = Field(default=1000, ge=0)
    # On SIGTERM, how long in-flight activities may run before they are cancelled.
    graceful_shutdown_seconds: float = Field(default=10.0, ge=0)

    @property
    def graceful_shutdown(self) -> timedelta:
        """The grace period as the SDK takes it."""
        return timedelta(seconds=self.graceful_shutdown_seconds)


class CodecSettings(BaseModel):
    """Payload encryption: the current key encrypts, old keys only decrypt; off while no key is configured.

    A key is 32 random bytes, base64 (`orderflow codec-key` prints one). Give it inline (`key`, from the
    environment: ORDERFLOW_CODEC__KEY) or as a file holding it (`key_file`, e.g. a mounted secret). To
    rotate, make the new key current and move the old one to `old_keys` (`id=base64key`, comma-separated)
    or to `old_keys_file` (one `id=base64key` a line), so histories it encrypted still read.
    """

    # A validation error (a wrong type, an unknown field) must not echo a key back into a log.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # Written next to every payload so decoding knows which key to use; unset, the key's fingerprint.
    key_id: str | None = None
    key: SecretStr | None = None
    key_file: Path | None = None
    old_keys: SecretStr | None = None
    old_keys_file: Path | None = None

    @property
    def enabled(self) -> bool:
        """True when a key is configured, so every client encrypts its payloads."""
        return self.key is not None or self.key_file is not None

    def current_key(self) -> CodecKey | None:
        """The key new payloads are encrypted with, read from the environment or its file; None when off."""
        from orderflow.codec import CodecKey

        # Checked here, when a client is built at process start, not by a validator: pydantic's error
        # for a model echoes its whole input, and that would put the key in a log.
        if self.key is not None and self.key_file is not None:
            raise ValueError("set either codec key or codec key_file, not both")
        if self.key is not None:
            return CodecKey.from_base64(self.key.get_secret_value(), self.key_id)
        if self.key_file is not None:
            return CodecKey.from_base64(_read_secret_file(self.key_file, "key_file"), self.key_id)
        return None

    def decryption_keys(self) -> list[CodecKey]:
        """The old keys, kept to decrypt payloads written before the last rotation."""
        from orderflow.codec import parse_key_list

        keys = []
        if self.old_keys is not None:
            keys.extend(parse_key_list(self.old_keys.get_secret_value()))
        if self.old_keys_file is not None:
            keys.extend(parse_key_list(_read_secret_file(self.old_keys_file, "old_keys_file")))
        return keys


def _read_secret_file(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        # The message names the file, never its content.
        raise ValueError(f"codec {name} {str(path)!r} cannot be read: {type(exc).__name__}") from exc


class Settings(BaseSettings):
    """Everything orderflow reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="ORDERFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    shopify: ShopifySettings = ShopifySettings()
    netsuite: NetSuiteSettings = NetSuiteSettings()
    wms: WmsSettings = WmsSettings()
    carrier: CarrierSettings = CarrierSettings()
    amazon: AmazonSettings = AmazonSettings()
    returns: ReturnSettings = ReturnSettings()
    codec: CodecSettings = CodecSettings()
    # Worker tuning, ORDERFLOW_WORKER__MAX_CONCURRENT_ACTIVITIES and so on (the HTTP port is below).
    worker: WorkerSettings = WorkerSettings()

    # SQLite under the state directory by default; PostgreSQL in production, e.g.
    # postgresql://orderflow@db:5432/orderflow (the async driver is chosen for you).
    database_url: str | None = None

    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8700
    state_dir: Path = STATE_DIR

    # The worker's own HTTP port: /healthz, /readyz and /metrics (Temporal's SDK metrics and the
    # sagas' business metrics). 0 turns it off. The webhook service serves the same paths on its port.
    worker_http_host: str = "127.0.0.1"
    worker_http_port: int = Field(default=8001, ge=0, le=65535)


def database_url(settings: Settings) -> str:
    """The database orderflow stores its inbox, order view and cross-references in."""
    return settings.database_url or f"sqlite:///{settings.state_dir / 'orderflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
