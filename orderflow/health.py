"""Liveness, readiness and `/metrics` for the worker and the webhook service.

- `/healthz`: the process is alive. It calls nothing, so a slow database never gets a live
  process restarted.
- `/readyz`: the process can do its work: the database answers, its migrations are at the code's
  head, Temporal answers (and, for the worker, the worker is polling). 200 when all hold, else 503
  with a reason per check, so the load balancer stops sending and the operator reads why.
- `/metrics`: Prometheus text. The worker's is the Temporal runtime's (SDK, saga and step metrics;
  see `orderflow.metrics.worker_runtime`) followed by the process's own `prometheus_client`
  registry; the webhook service's is its `WebhookMetrics` registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import text
from temporalio.client import Client
from temporalio.worker import Worker

from orderflow.metrics import WebhookMetrics
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.webhooks.dispatch import TemporalGateway, TemporalUnavailableError

log = logging.getLogger(__name__)

# Well inside a probe's own timeout (Kubernetes' default is 1 s per probe, usually raised to a few):
# a check that has not answered by then is as good as down for routing purposes.
CHECK_TIMEOUT_SECONDS = 2.0
OK = "ok"

Readiness = tuple[bool, dict[str, str]]


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


async def check_database(database: Database, *, within: float = CHECK_TIMEOUT_SECONDS) -> dict[str, str]:
    """Whether the database answers, and whether it is migrated to the code's head (with what to run if not)."""
    try:
        async with asyncio.timeout(within):
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return {"database": f"no answer within {within:g} s", "migrations": "unknown: the database did not answer"}
    except Exception as exc:
        return {"database": f"unreachable: {_reason(exc)}", "migrations": "unknown: the database is unreachable"}
    try:
        async with asyncio.timeout(within):
            await database.require_migrated()
    except DatabaseNotMigratedError as exc:
        return {"database": OK, "migrations": str(exc)}
    except TimeoutError:
        return {"database": OK, "migrations": f"not read within {within:g} s"}
    except Exception as exc:
        return {"database": OK, "migrations": f"not read: {_reason(exc)}"}
    return {"database": OK, "migrations": OK}


async def check_temporal(client: Client, *, within: float = CHECK_TIMEOUT_SECONDS) -> str:
    """Whether Temporal's frontend answers a health check (the cheapest RPC) within the timeout."""
    try:
        async with asyncio.timeout(within):
            serving = await client.service_client.check_health(timeout=timedelta(seconds=within))
    except TimeoutError:
        return f"Temporal at {client.service_client.config.target_host} did not answer within {within:g} s"
    except Exception as exc:
        return f"Temporal at {client.service_client.config.target_host} unreachable: {_reason(exc)}"
    return OK if serving else f"Temporal at {client.service_client.config.target_host} is not serving"


async def _check_gateway(gateway: TemporalGateway, within: float) -> str:
    try:
        async with asyncio.timeout(within):
            client = await gateway.client()
    except TemporalUnavailableError as exc:
        return exc.reason
    except TimeoutError:
        return f"cannot connect to Temporal at {gateway.address} within {within:g} s"
    return await check_temporal(client, within=within)


def _summed(results: list[dict[str, str]]) -> Readiness:
    checks = {name: reason for result in results for name, reason in result.items()}
    return all(reason == OK for reason in checks.values()), checks


async def readiness(
    database: Database, gateway: TemporalGateway, *, within: float = CHECK_TIMEOUT_SECONDS
) -> Readiness:
    """The webhook service's readiness: database reachable and migrated, Temporal reachable; a reason per check.

    An unreachable Temporal makes the service not ready although webhooks are still stored (the
    relay dispatches them later): readiness says the service cannot do all of its work, which is
    what an operator should see; route on it only if another replica can do better.
    """
    database_checks, temporal = await asyncio.gather(
        check_database(database, within=within), _check_gateway(gateway, within)
    )
    return _summed([database_checks, {"temporal": temporal}])


def readiness_response(ready: bool, checks: dict[str, str]) -> JSONResponse:
    """The `/readyz` answer: 200 when ready, else 503, with every check's outcome."""
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def webhook_health_router(database: Database, gateway: TemporalGateway, metrics: WebhookMetrics) -> APIRouter:
    """`/readyz` and `/metrics` for the webhook service (its `/healthz` stays where it is)."""
    router = APIRouter(tags=["operations"])

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: the database, its migrations and Temporal, with a reason for each that fails."""
        return readiness_response(*await readiness(database, gateway))

    @router.get("/metrics")
    async def prometheus_text() -> Response:
        """Prometheus text: webhook requests by outcome, the inbox backlog, the process."""
        await metrics.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


class WorkerHealth:
    """What the worker's `/readyz` and `/metrics` read: its database, client, worker and runtime metrics."""

    def __init__(
        self,
        *,
        database: Database,
        client: Client,
        runtime_metrics_bind: str | None,
        registry: CollectorRegistry = REGISTRY,
        timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self.database = database
        self.client = client
        self.runtime_metrics_bind = runtime_metrics_bind
        self.registry = registry
        self.timeout = timeout
        # Set once the worker is built; until it runs, the worker is not ready.
        self.worker: Worker | None = None

    def polling(self) -> str:
        """Whether the worker is polling its task queue."""
        if self.worker is None or not self.worker.is_running:
            return "the worker is not polling yet"
        if self.worker.is_shutdown:
            return "the worker has shut down"
        return OK

    async def readiness(self) -> Readiness:
        """The worker's readiness: database reachable and migrated, Temporal reachable, worker polling."""
        database_checks, temporal = await asyncio.gather(
            check_database(self.database, within=self.timeout), check_temporal(self.client, within=self.timeout)
        )
        return _summed([database_checks, {"temporal": temporal, "worker": self.polling()}])

    async def metrics_text(self) -> bytes:
        """The runtime's Prometheus text (fetched from its bind address), then this process's registry."""
        own = generate_latest(self.registry)
        if self.runtime_metrics_bind is None:
            return own
        host, _, port = self.runtime_metrics_bind.rpartition(":")
        # The runtime listens on its own bind address; a wildcard one is reached on loopback.
        host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host  # noqa: S104
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                response = await http.get(f"http://{host}:{port}/metrics")
                response.raise_for_status()
        except httpx.HTTPError as exc:
            # The process's metrics are still worth a scrape; the gap shows as missing temporal_* series.
            log.warning("Temporal runtime metrics not read from %s: %s", self.runtime_metrics_bind, exc)
            return own
        runtime = response.content if response.content.endswith(b"\n") else response.content + b"\n"
        return runtime + own


def worker_http_app(health: WorkerHealth) -> FastAPI:
    """The worker process's small HTTP app: `/healthz`, `/readyz` and `/metrics`."""
    app = FastAPI(title="orderflow worker", summary="Liveness, readiness and metrics of an orderflow worker.")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers; nothing is called."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: the database, its migrations, Temporal and the worker's polling, with reasons."""
        return readiness_response(*await health.readiness())

    @app.get("/metrics")
    async def prometheus_text() -> Response:
        """Prometheus text: Temporal's SDK metrics, the sagas' and steps' business metrics, the process."""
        return Response(await health.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: the worker drains on SIGTERM, this must not take it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: Any, *, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve an ASGI app on this event loop while the block runs; requests under way finish on exit."""
    server = _EmbeddedServer(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(), name=f"http {host}:{port}")
    while not server.started:
        if task.done():
            await task  # raises why it could not start (the port in use)
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
