"""The webhook service: one FastAPI app with a router per source, and the Temporal gateway behind them."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orderflow.settings import Settings, get_settings
from orderflow.webhooks import carrier, shopify, wms
from orderflow.webhooks.dispatch import TemporalGateway, TemporalUnavailableError, log

# Long enough for a restarting dev server, short against the vendors' own retry schedules.
RETRY_AFTER_SECONDS = 30


async def temporal_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """Answer 503 when Temporal is away, so the vendor keeps the webhook and sends it again."""
    reason = exc.reason if isinstance(exc, TemporalUnavailableError) else str(exc)
    log.warning("webhook not dispatched, answered 503: %s", reason)
    return JSONResponse(
        {"detail": f"{reason}; retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def create_app(settings: Settings, *, temporal: TemporalGateway | None = None) -> FastAPI:
    """The webhook service for these settings; Temporal from the environment unless a gateway is given."""
    app = FastAPI(title="orderflow webhooks", summary="Verified vendor webhooks, dispatched to order sagas.")
    app.state.settings = settings
    app.state.temporal = temporal if temporal is not None else TemporalGateway.from_env()
    app.include_router(shopify.router)
    app.include_router(wms.router)
    app.include_router(carrier.router)
    app.add_exception_handler(TemporalUnavailableError, temporal_unavailable)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the service answers; says whether it has reached Temporal yet, without calling it."""
        gateway: TemporalGateway = app.state.temporal
        return {"status": "ok", "temporal": "connected" if gateway.connected else "not connected yet"}

    return app


def app_from_environment() -> FastAPI:
    """The webhook service as the environment configures it (for `uvicorn --factory`)."""
    return create_app(get_settings())
