"""The sandbox application: every simulator under its prefix, plus the `/sandbox` control API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from orderflow.sandbox.core import DemoConfig, SandboxConfig, SandboxContext, Simulator
from orderflow.sandbox.faults import FaultMiddleware, FaultRule
from orderflow.sandbox.outbox import OutboxChaos

log = logging.getLogger("orderflow.sandbox")


def default_simulators(ctx: SandboxContext) -> list[Simulator]:
    """The simulated systems of DESIGN.md: Shopify, NetSuite, the WMS, the carrier and Amazon SP-API."""
    from orderflow.sandbox.amazon import AmazonSimulator
    from orderflow.sandbox.carrier import CarrierSimulator
    from orderflow.sandbox.netsuite import NetSuiteSimulator
    from orderflow.sandbox.shopify import ShopifySimulator
    from orderflow.sandbox.wms import WmsSimulator

    return [
        ShopifySimulator(ctx),
        NetSuiteSimulator(ctx),
        WmsSimulator(ctx),
        CarrierSimulator(ctx),
        AmazonSimulator(ctx),
    ]


SimulatorFactory = Callable[[SandboxContext], list[Simulator]]


class Sandbox:
    """The running sandbox: its context and simulators, and the engine loop that drives them."""

    def __init__(self, config: SandboxConfig | None = None, *, simulators: SimulatorFactory | None = None) -> None:
        self.ctx = SandboxContext(config or SandboxConfig())
        # What `reset()` returns to: run-time changes (demo mode) are state, not configuration.
        self._initial_config = self.ctx.config
        build = simulators or default_simulators
        self.simulators: dict[str, Simulator] = {sim.name: sim for sim in build(self.ctx)}
        self._tick_lock = asyncio.Lock()
        self.reset()

    def reset(self) -> None:
        """Every system back to its seed state; faults cleared; start-up subscriptions and demo mode restored."""
        self.ctx.config = self._initial_config
        self.ctx.faults.clear()
        self.ctx.outbox.reset()
        self.ctx.clock.reset()
        self.ctx.reseed()
        for sim in self.simulators.values():
            sim.reset()
        for target in self.ctx.config.webhooks:
            self.subscribe_default(target.system, target.topics, target.url)

    def subscribe_default(self, system: str, topics: list[str], url: str) -> None:
        """Subscribe a URL to a system's topics with that system's configured signing secret."""
        secrets = {
            "shopify": self.ctx.config.shopify_client_secret,
            "wms": self.ctx.config.wms_webhook_secret,
            "carrier": self.ctx.config.carrier_webhook_secret,
        }
        self.ctx.outbox.subscribe(system, topics, url, secret=secrets.get(system))

    async def tick(self, http: httpx.AsyncClient) -> int:
        """One turn of the engines: advance each simulator, then deliver due webhooks."""
        async with self._tick_lock:
            now = self.ctx.clock.now()
            for sim in self.simulators.values():
                await sim.tick(now)
            return await self.ctx.outbox.pump(http)

    async def run_engines(self) -> None:
        """Tick forever; the sandbox's heartbeat while it serves."""
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    await self.tick(http)
                except Exception:  # an engine bug must not stop the sandbox from serving
                    log.exception("sandbox engine tick failed")
                await asyncio.sleep(self.ctx.config.tick_seconds)


class ClockAdvance(BaseModel):
    """How far to move the sandbox clock."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0)


class SubscriptionRequest(BaseModel):
    """A subscription made through the control API rather than the vendor's own API."""

    model_config = ConfigDict(extra="forbid")
    topics: list[str]
    url: str


def control_router(sandbox: Sandbox) -> APIRouter:
    """`/sandbox/...`: inspect state, reset, switch faults, move the clock, read the webhook outbox."""
    router = APIRouter(prefix="/sandbox", tags=["sandbox control"])
    ctx = sandbox.ctx

    def simulator(system: str) -> Simulator:
        try:
            return sandbox.simulators[system]
        except KeyError:
            raise HTTPException(404, f"no simulated system {system!r}") from None

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "systems": sorted(sandbox.simulators)}

    @router.get("/state")
    async def state() -> dict[str, Any]:
        return {name: sim.snapshot() for name, sim in sandbox.simulators.items()}

    @router.get("/state/{system}")
    async def system_state(system: str) -> dict[str, Any]:
        return simulator(system).snapshot()

    @router.post("/reset")
    async def reset() -> dict[str, str]:
        sandbox.reset()
        return {"status": "reset"}

    @router.get("/faults")
    async def list_faults() -> list[FaultRule]:
        return ctx.faults.rules

    @router.post("/faults", status_code=201)
    async def add_fault(rule: FaultRule) -> FaultRule:
        if rule.system != "*":
            simulator(rule.system)
        return ctx.faults.add(rule)

    @router.delete("/faults")
    async def clear_faults(system: str | None = None) -> dict[str, int]:
        ctx.faults.clear(system)
        return {"remaining": len(ctx.faults.rules)}

    @router.delete("/faults/{rule_id}")
    async def remove_fault(rule_id: str) -> dict[str, str]:
        if not ctx.faults.remove(rule_id):
            raise HTTPException(404, f"no fault rule {rule_id!r}")
        return {"removed": rule_id}

    @router.get("/clock")
    async def clock() -> dict[str, object]:
        return ctx.clock.describe()

    @router.post("/clock/advance")
    async def advance(body: ClockAdvance) -> dict[str, object]:
        ctx.clock.advance(body.seconds)
        return ctx.clock.describe()

    @router.post("/tick")
    async def tick() -> dict[str, int]:
        async with httpx.AsyncClient() as http:
            return {"deliveries_attempted": await sandbox.tick(http)}

    @router.get("/demo")
    async def get_demo() -> DemoConfig:
        return ctx.config.demo

    @router.put("/demo")
    async def set_demo(demo: DemoConfig) -> DemoConfig:
        ctx.config = ctx.config.model_copy(update={"demo": demo})
        return ctx.config.demo

    @router.get("/webhooks/subscriptions")
    async def subscriptions(system: str | None = None) -> list[dict[str, Any]]:
        subs = ctx.outbox.subscriptions.values()
        return [s.model_dump(exclude={"secret"}) for s in subs if system is None or s.system == system]

    @router.post("/webhooks/subscriptions/{system}", status_code=201)
    async def subscribe(system: str, body: SubscriptionRequest) -> dict[str, Any]:
        simulator(system)
        if system not in ctx.outbox.policies:
            raise HTTPException(400, f"{system} sends no webhooks")
        sandbox.subscribe_default(system, body.topics, body.url)
        return {"subscribed": system, "topics": body.topics, "url": body.url}

    @router.get("/webhooks/deliveries")
    async def deliveries(system: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return ctx.outbox.describe(system, status)

    @router.post("/webhooks/deliveries/{delivery_id}/replay", status_code=201)
    async def replay(delivery_id: str) -> dict[str, Any]:
        if delivery_id not in ctx.outbox.deliveries:
            raise HTTPException(404, f"no delivery {delivery_id!r}")
        return ctx.outbox.replay(delivery_id).model_dump(mode="json")

    @router.put("/webhooks/chaos/{system}")
    async def chaos(system: str, body: OutboxChaos) -> OutboxChaos:
        simulator(system)
        ctx.outbox.chaos[system] = body
        return body

    return router


def create_app(
    config: SandboxConfig | None = None,
    *,
    run_engines: bool = True,
    simulators: SimulatorFactory | None = None,
) -> FastAPI:
    """The sandbox as an ASGI app. With `run_engines`, a background loop drives time and webhooks."""
    sandbox = Sandbox(config, simulators=simulators)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sandbox.run_engines()) if run_engines else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="orderflow sandbox", version="1", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.include_router(control_router(sandbox))
    for name, sim in sandbox.simulators.items():
        app.include_router(sim.router(), prefix=f"/{name}")
    app.add_middleware(
        FaultMiddleware,
        injector=sandbox.ctx.faults,
        responders={name: sim.fault_response for name, sim in sandbox.simulators.items()},
    )
    return app
