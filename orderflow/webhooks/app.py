"""The webhook service: one FastAPI app with a router per source, the inbox and its relay behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from orderflow import telemetry
from orderflow.health import webhook_health_router
from orderflow.metrics import WebhookMetrics
from orderflow.settings import Settings, database_url, get_settings
from orderflow.store.db import Database
from orderflow.webhooks import carrier, shopify, wms
from orderflow.webhooks.dispatch import Source, TemporalGateway
from orderflow.webhooks.inbox import WebhookInbox
from orderflow.webhooks.orders import orders_router
from orderflow.webhooks.relay import Relay

SERVICE_NAME = "orderflow-webhooks"
SOURCES: dict[str, Source] = {source.name: source for source in (shopify.SOURCE, wms.SOURCE, carrier.SOURCE)}


def create_app(
    settings: Settings,
    *,
    temporal: TemporalGateway | None = None,
    database: Database | None = None,
    relay: bool = True,
) -> FastAPI:
    """The webhook service for these settings; Temporal and the database from the environment unless given.

    On startup it refuses an unmigrated database and starts the relay (unless `relay=False`).
    Tracing is on when the `OTEL_*` variables configure it (or this process already traces).
    """
    # Before the gateway exists, so its Temporal client is built with the tracing interceptor.
    telemetry.configure_tracing(SERVICE_NAME)
    owned = database is None
    db = database if database is not None else Database(database_url(settings))
    gateway = temporal if temporal is not None else TemporalGateway.from_env()
    metrics = WebhookMetrics(db)
    inbox = WebhookInbox(database=db, settings=settings, temporal=gateway, sources=SOURCES, metrics=metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await db.require_migrated()
        # The relay dispatches every stored webhook; without it (tests), rows stay pending until a
        # test runs a relay pass itself.
        task = asyncio.create_task(Relay(inbox).run(), name="inbox relay") if relay else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned:
                await db.dispose()

    app = FastAPI(
        title="orderflow webhooks",
        summary="Verified vendor webhooks, stored in the inbox and dispatched to order sagas.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.temporal = gateway
    app.state.inbox = inbox
    app.include_router(shopify.router)
    app.include_router(wms.router)
    app.include_router(carrier.router)
    # The read API of the order view: status reads that never touch Temporal or the ERP.
    app.include_router(orders_router(db))
    # /readyz (database, migrations, Temporal) and /metrics (requests by outcome, the inbox backlog).
    app.include_router(webhook_health_router(db, gateway, metrics))
    # Each webhook request is the root span of its order's trace (no-op while tracing is off).
    telemetry.instrument_app(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness, without calling Temporal or the database: whether Temporal was reached, and refusals so far."""
        return {
            "status": "ok",
            "temporal": "connected" if gateway.connected else "not connected yet",
            "refused": dict(inbox.refusals),
        }

    return app


def app_from_environment() -> FastAPI:
    """The webhook service as the environment configures it (for `uvicorn --factory`)."""
    return create_app(get_settings())
