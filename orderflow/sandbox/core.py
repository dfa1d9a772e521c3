"""What every simulator shares: its configuration, its context and the base class it extends."""

from __future__ import annotations

import abc
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from orderflow import settings as s
from orderflow.sandbox.clock import SimClock
from orderflow.sandbox.faults import FaultInjector, FaultKind, FaultRule
from orderflow.sandbox.outbox import WebhookOutbox


class DemoConfig(BaseModel):
    """Demo mode: Shopify invents orders, the WMS ships what it is released and receives returns by itself."""

    model_config = ConfigDict(extra="forbid")

    shopify_orders_per_minute: float = Field(default=0.0, ge=0)
    wms_ship_after_seconds: float | None = Field(default=None, ge=0)
    carrier_tracker_step_seconds: float | None = Field(default=None, ge=0)
    # Sandbox-clock seconds after a WMS return is created until the warehouse receives it (None: only
    # `simulate/return` receives returns), and the chance that each returned unit is found damaged.
    wms_return_receive_after_seconds: float | None = Field(default=None, ge=0)
    wms_return_damaged_share: float = Field(default=0.0, ge=0, le=1)
    # Amazon: MFN orders invented per minute of sandbox time, the share of them fulfilled by Amazon
    # (AFN), and the share whose buyer asks to cancel `amazon_buyer_cancel_after_seconds` later.
    amazon_orders_per_minute: float = Field(default=0.0, ge=0)
    amazon_afn_share: float = Field(default=0.0, ge=0, le=1)
    amazon_buyer_cancel_share: float = Field(default=0.0, ge=0, le=1)
    amazon_buyer_cancel_after_seconds: float = Field(default=30.0, ge=0)


class WebhookTarget(BaseModel):
    """A subscription the sandbox creates at start-up (and again after a reset)."""

    model_config = ConfigDict(extra="forbid")

    system: str
    topics: list[str]
    url: str


class SandboxConfig(BaseModel):
    """How the sandbox is set up: the credentials it accepts, its limits, its demo mode."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    # Vendor retry schedules are real seconds; they are multiplied by this so 4 hours of
    # Shopify retries take about half a minute.
    webhook_time_scale: float = Field(default=0.002, ge=0)
    tick_seconds: float = Field(default=0.1, gt=0)
    demo: DemoConfig = DemoConfig()
    webhooks: list[WebhookTarget] = []

    shopify_access_token: str = s.SANDBOX_SHOPIFY_ACCESS_TOKEN
    shopify_client_id: str = s.SANDBOX_SHOPIFY_CLIENT_ID
    shopify_client_secret: str = s.SANDBOX_SHOPIFY_CLIENT_SECRET
    shopify_bucket_size: float = 1000.0
    shopify_restore_rate: float = 50.0
    shopify_throttle_status: int = Field(default=200, description="200 or 429 for THROTTLED answers")

    netsuite_account_id: str = s.SANDBOX_NETSUITE_ACCOUNT
    netsuite_consumer_key: str = s.SANDBOX_NETSUITE_CONSUMER_KEY
    netsuite_consumer_secret: str = s.SANDBOX_NETSUITE_CONSUMER_SECRET
    netsuite_token_id: str = s.SANDBOX_NETSUITE_TOKEN_ID
    netsuite_token_secret: str = s.SANDBOX_NETSUITE_TOKEN_SECRET
    netsuite_client_id: str = s.SANDBOX_NETSUITE_CLIENT_ID
    netsuite_certificate_id: str = s.SANDBOX_NETSUITE_CERTIFICATE_ID
    # PEM file holding the public key (or a certificate) of the M2M mapping.
    netsuite_public_key_file: Path | None = None
    netsuite_max_concurrency: int = Field(default=5, ge=1)
    netsuite_token_ttl_seconds: int = 3600

    wms_token: str = s.SANDBOX_WMS_TOKEN
    wms_channel_id: int = s.SANDBOX_WMS_CHANNEL_ID
    wms_webhook_secret: str = s.SANDBOX_WMS_WEBHOOK_SECRET
    wms_requests_per_minute: int = Field(default=150, ge=1)

    carrier_api_key: str = s.SANDBOX_CARRIER_API_KEY
    carrier_webhook_secret: str = s.SANDBOX_CARRIER_WEBHOOK_SECRET

    # Literal values, not settings constants: they mirror SANDBOX_AMAZON_* in settings.py.
    amazon_lwa_client_id: str = "amzn1.application-oa2-client.sandbox0000000000"
    amazon_lwa_client_secret: str = "amzn1.oa2-cs.v1.sandbox-secret"
    amazon_refresh_token: str = "Atzr|sandbox-refresh-token"
    amazon_seller_id: str = "A2SANDBOXSELLER"
    amazon_marketplace_id: str = "ATVPDKIKX0DER"
    amazon_access_token_ttl_seconds: int = Field(default=3600, ge=1)
    # Multiplies every documented SP-API rate and burst (0.5 = "half of Amazon's rates").
    amazon_rate_scale: float = Field(default=1.0, gt=0)
    # Orders 2026-01-01 has role-based PII: with the role the LWA token alone reads names and
    # streets; without it (the default) only a restricted data token does.
    amazon_pii_role: bool = False
    # Sandbox-clock seconds a feed waits IN_QUEUE, then spends IN_PROGRESS before DONE.
    amazon_feed_queue_seconds: float = Field(default=1.0, ge=0)
    amazon_feed_processing_seconds: float = Field(default=2.0, ge=0)


class SandboxContext:
    """The parts every simulator shares: config, clock, faults, webhook outbox, seeded dice."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = SimClock()
        self.faults = FaultInjector(seed=config.seed)
        self.outbox = WebhookOutbox(self.clock, time_scale=config.webhook_time_scale, seed=config.seed)
        self.random = random.Random(config.seed)
        # Identifiers (event ids, object ids) come from their own dice, seeded once per process and
        # never reseeded: a vendor never reuses an event id, and orderflow's inbox deduplicates on
        # them, so a reset (or restarted) sandbox must not repeat one.
        self.ids = random.Random(f"{config.seed}:{time.time_ns()}")

    def reseed(self) -> None:
        """Reset the dice so a reset sandbox replays the same random choices."""
        self.random = random.Random(self.config.seed)


class Simulator(abc.ABC):
    """One simulated external system, mounted under `/{name}` of the sandbox."""

    name: ClassVar[str]
    # POST routes (globs below the prefix) that change nothing, such as queries and token grants;
    # "lost answers on writes" faults leave them alone.
    read_only_posts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        ctx.faults.read_only_posts[self.name] = self.read_only_posts

    @abc.abstractmethod
    def router(self) -> APIRouter:
        """The vendor's routes, relative to this system's prefix."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Back to the seed state: stock, records, tokens, subscriptions."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Everything a test or an operator may want to inspect, as JSON-able data."""

    @abc.abstractmethod
    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """An injected error or throttle, in this vendor's own shape: (status, headers, body)."""

    async def tick(self, now: datetime) -> None:  # noqa: B027 - optional hook, most systems have no engine
        """Advance time-driven engines (fulfilment, tracking, demo orders) to `now`."""
