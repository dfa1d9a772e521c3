"""The local stack as child processes: Temporal dev server, sandbox, webhook service and a worker.

`orderflow dev` runs it until Ctrl-C; `orderflow demo` reuses it. Each service is started only if
its port is free; a port that already answers as the expected service is reused (a Temporal server
already on :7233 is used, not started twice), and a port held by anything else is an error. Every
child runs in its own process group with its output in `.orderflow/logs/<name>.log`, so stopping
the stack (SIGTERM, then SIGKILL after a grace period) leaves nothing behind. With `encrypt=True`
(`orderflow dev --encrypt`) every payload is encrypted, and a codec server joins the stack so the
Temporal UI decodes them through it.

    async with DevStack(ports=StackPorts(temporal=7233)) as stack:
        print(stack.temporal_address, stack.sandbox_url, stack.webhook_url)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueKind, TaskQueueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from orderflow.canonical.channel_polling import poller_schedule_id
from orderflow.canonical.order import Channel
from orderflow.canonical.saga import TASK_QUEUE
from orderflow.codec import EncryptionCodec, codec_from_settings, new_key
from orderflow.settings import STATE_DIR, CodecSettings, get_settings
from orderflow.store.db import upgrade
from orderflow.temporal import DEFAULT_NAMESPACE, FROM_SETTINGS, SEARCH_ATTRIBUTES, connect

if TYPE_CHECKING:
    from fastapi import FastAPI

ServiceName = Literal["temporal", "sandbox", "webhooks", "worker", "codec"]
SERVICES: tuple[ServiceName, ...] = ("temporal", "sandbox", "webhooks", "worker")
# The codec server runs only when the stack encrypts payloads (`encrypt=True`).
ALL_SERVICES: tuple[ServiceName, ...] = (*SERVICES, "codec")
# The webhook service and the worker talk to Temporal, so they start after it; the sandbox and the
# codec server need nothing (the UI is only told the codec server's URL).
_FIRST_WAVE: tuple[ServiceName, ...] = ("temporal", "sandbox", "codec")
_SECOND_WAVE: tuple[ServiceName, ...] = ("webhooks", "worker")

# A worker finishes its in-flight activities before it exits (orderflow.temporal.GRACEFUL_SHUTDOWN, 10 s).
DEFAULT_STOP_GRACE_SECONDS = 15.0
# The Amazon poller's schedule in the local stack: Amazon's own pace (a poll every 2 minutes), with
# the look-back overlap the CLI's `amazon schedule create` uses.
DEFAULT_AMAZON_POLL_EVERY = timedelta(minutes=2)
AMAZON_POLL_OVERLAP = timedelta(minutes=10)
DEFAULT_START_TIMEOUT_SECONDS = 60.0
# A worker long-polls for up to ~70 s, so a live idle worker's last poll can be that old; a poller
# seen more recently than this counts as a running worker (one that died a moment ago does too).
_LIVE_POLLER_SECONDS = 90.0
_POLL_INTERVAL = 0.2
# The key `encrypt=True` generates when none is configured, under the state directory.
CODEC_KEY_FILE = "codec.key"


class DevStackError(Exception):
    """A local service could not be started; the message says which and why."""


class PortInUseError(DevStackError):
    """A port the stack needs is held by something that is not the service expected there."""


class ServiceExitedError(DevStackError):
    """A child process exited while it was starting, with the last lines of its log."""

    def __init__(self, name: str, returncode: int | None, log_tail: list[str]) -> None:
        tail = "\n".join(f"    {line}" for line in log_tail) or "    (empty log)"
        super().__init__(f"{name} exited with code {returncode} while starting; last log lines:\n{tail}")
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail


@dataclass(frozen=True, kw_only=True)
class StackPorts:
    """The loopback ports of the local stack."""

    temporal: int = 7233
    ui: int = 8233
    sandbox: int = 8700
    webhooks: int = 8000
    codec: int = 8888
    # The worker's /healthz, /readyz and /metrics.
    worker_http: int = 8001


@dataclass
class RunningService:
    """One service of the stack: where it answers, and the child process if this stack started it."""

    name: ServiceName
    url: str
    process: asyncio.subprocess.Process | None = None
    log_file: Path | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def reused(self) -> bool:
        """True when the service was already running and this stack only uses it."""
        return self.process is None

    @property
    def pid(self) -> int | None:
        """The child's process id (also its process group id), or None if reused."""
        return self.process.pid if self.process else None


def venv_binary(name: str) -> str:
    """A console script installed beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DevStackError(f"`{name}` is not installed; run `pip install -e '.[dev]'`")
    return found


def webhook_app() -> FastAPI:
    """The webhook service built from settings; uvicorn's `--factory` target for the dev stack."""
    from orderflow.webhooks.app import create_app
    from orderflow.webhooks.dispatch import TemporalGateway

    # The stack's task queue, which `orderflow dev --task-queue` (and tests) may change.
    gateway = TemporalGateway.from_env(task_queue=os.environ.get("ORDERFLOW_TASK_QUEUE", TASK_QUEUE))
    return create_app(get_settings(), temporal=gateway)


def log_tail(path: Path | None, lines: int = 20) -> list[str]:
    """The last lines of a log file (empty if there is none yet)."""
    if path is None or not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        # Enough for the last lines of any sane log without reading a long one whole.
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


class DevStack:
    """The Temporal dev server, the sandbox, the webhook service and a worker, started as needed."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ports: StackPorts | None = None,
        state_dir: Path = STATE_DIR,
        namespace: str = DEFAULT_NAMESPACE,
        task_queue: str = TASK_QUEUE,
        ship_after_seconds: float | None = 2.0,
        orders_per_minute: float = 0.0,
        services: Iterable[ServiceName] = SERVICES,
        start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS,
        stop_grace: float = DEFAULT_STOP_GRACE_SECONDS,
        env: Mapping[str, str] | None = None,
        amazon_poll_every: timedelta | None = DEFAULT_AMAZON_POLL_EVERY,
        encrypt: bool = False,
    ) -> None:
        self.host = host
        self.ports = ports or StackPorts()
        self.state_dir = state_dir.resolve()
        self.namespace = namespace
        self.task_queue = task_queue
        self.ship_after_seconds = ship_after_seconds
        self.orders_per_minute = orders_per_minute
        self.encrypt = encrypt
        wanted = tuple(services)
        self.wanted: tuple[ServiceName, ...] = (*wanted, "codec") if encrypt and "codec" not in wanted else wanted
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._extra_env = dict(env or {})
        self.amazon_poll_every = amazon_poll_every
        self.services: dict[ServiceName, RunningService] = {}
        # The Amazon poller's schedules, by id: True if this stack created it, False if it was there.
        self.schedules: dict[str, bool] = {}
        self._client: Client | None = None
        # Set by `start` when encrypting: the codec the stack's own client uses and the children's key settings.
        self.codec: EncryptionCodec | None = None
        self.codec_key_file: Path | None = None
        self._codec_env: dict[str, str] = {}

    # ---- where everything is -----------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The database the webhook service and the worker of this stack use."""
        configured = self._extra_env.get("ORDERFLOW_DATABASE_URL") or os.environ.get("ORDERFLOW_DATABASE_URL")
        return configured or f"sqlite:///{self.state_dir / 'orderflow.db'}"

    @property
    def temporal_address(self) -> str:
        """The Temporal frontend, host:port, for clients and workers."""
        return f"{self.host}:{self.ports.temporal}"

    @property
    def ui_url(self) -> str:
        """The Temporal Web UI."""
        return f"http://{self.host}:{self.ports.ui}"

    @property
    def sandbox_url(self) -> str:
        """The sandbox's base URL (simulators under /shopify, /netsuite, /wms, /carrier; control under /sandbox)."""
        return f"http://{self.host}:{self.ports.sandbox}"

    @property
    def webhook_url(self) -> str:
        """The webhook service's base URL."""
        return f"http://{self.host}:{self.ports.webhooks}"

    @property
    def codec_url(self) -> str:
        """The codec server the Temporal UI (and `temporal --codec-endpoint`) decode payloads through."""
        return f"http://{self.host}:{self.ports.codec}"

    @property
    def log_dir(self) -> Path:
        """Where each child's output goes, one `<name>.log` per service."""
        return self.state_dir / "logs"

    def url_of(self, name: ServiceName) -> str:
        """Where a service answers (the worker's is the Temporal task queue it polls)."""
        return {
            "temporal": self.temporal_address,
            "sandbox": self.sandbox_url,
            "webhooks": self.webhook_url,
            "worker": f"task queue {self.task_queue} on {self.temporal_address}",
            "codec": self.codec_url,
        }[name]

    def child_pids(self) -> dict[ServiceName, int]:
        """The process id of every child this stack started (each also leads its own process group)."""
        return {name: svc.pid for name, svc in self.services.items() if svc.pid is not None}

    def log_tail(self, name: ServiceName, lines: int = 20) -> list[str]:
        """The last lines a started service wrote to its log."""
        svc = self.services.get(name)
        return log_tail(svc.log_file if svc else None, lines)

    # ---- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> DevStack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, services: Iterable[ServiceName] | None = None) -> None:
        """Start what is not running yet (all the stack's services by default) and wait until each is healthy.

        On any failure, or if cancelled, the children started so far are stopped before the error propagates.
        """
        wanted = set(self.wanted if services is None else services)
        unknown = wanted - set(ALL_SERVICES)
        if unknown:
            raise DevStackError(f"unknown services {sorted(unknown)}; the stack has {', '.join(ALL_SERVICES)}")
        if "codec" in wanted and not self.encrypt:
            raise DevStackError("the codec server is part of the stack only when it encrypts payloads (encrypt=True)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.encrypt and self.codec is None:
            self._prepare_codec()
        try:
            for wave in (_FIRST_WAVE, _SECOND_WAVE):
                todo = [name for name in wave if name in wanted and name not in self.services]
                if wave is _SECOND_WAVE and todo:
                    # The webhook service and the worker refuse an unmigrated database; migrating is
                    # idempotent, so the stack does it rather than asking for a separate step.
                    await asyncio.to_thread(upgrade, self.database_url)
                await asyncio.gather(*(self._start_one(name) for name in todo))
            if {"temporal", "worker"} <= set(self.services) and self.amazon_poll_every is not None:
                await self._ensure_amazon_schedules()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every child this stack started, callers of Temporal first, Temporal last."""
        order: tuple[tuple[ServiceName, ...], ...] = (("worker", "webhooks", "sandbox", "codec"), ("temporal",))
        for wave in order:
            await asyncio.gather(*(self._stop_one(name) for name in wave if name in self.services))
        # A client of a server this stack stopped is useless; the next start connects afresh.
        self._client = None

    async def wait_for_exit(self) -> ServiceName:
        """Wait until one of the started children exits, and say which (never returns if all are reused)."""
        waiters = {
            asyncio.ensure_future(svc.process.wait()): name
            for name, svc in self.services.items()
            if svc.process is not None
        }
        if not waiters:
            await asyncio.Event().wait()
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return waiters[next(iter(done))]

    # ---- one service ----------------------------------------------------------------------------

    async def _start_one(self, name: ServiceName) -> None:
        port = self._port_of(name)
        if port is not None and await _listening(self.host, port):
            if not await self._answers_as(name):
                raise PortInUseError(
                    f"port {port} on {self.host} is in use, but not by {_DESCRIPTION[name]}; "
                    f"stop what holds it or choose another with --{_PORT_OPTION[name]}"
                )
            self.services[name] = RunningService(name=name, url=self.url_of(name))
            if name == "temporal":
                await self._ensure_search_attributes()
            return
        if name == "temporal" and await _listening(self.host, self.ports.ui):
            raise PortInUseError(
                f"port {self.ports.ui} on {self.host} (the Temporal UI) is in use; choose another with --ui-port"
            )
        if name == "worker" and await self._worker_is_polling(since=time.time() - _LIVE_POLLER_SECONDS):
            self.services[name] = RunningService(name=name, url=self.url_of(name))
            return
        svc = await self._spawn(name)
        await self._wait_healthy(svc)

    def _port_of(self, name: ServiceName) -> int | None:
        return {
            "temporal": self.ports.temporal,
            "sandbox": self.ports.sandbox,
            "webhooks": self.ports.webhooks,
            "worker": None,
            "codec": self.ports.codec,
        }[name]

    async def _answers_as(self, name: ServiceName) -> bool:
        if name == "temporal":
            return await self._temporal_client(wait_seconds=3.0) is not None
        if name == "sandbox":
            return await _sandbox_is_healthy(self.sandbox_url)
        if name == "webhooks":
            return await _webhooks_are_healthy(self.webhook_url)
        if name == "codec":
            return await self._codec_is_healthy()
        return False

    def _argv(self, name: ServiceName) -> list[str]:
        python = [sys.executable, "-m"]
        if name == "temporal":
            argv = [
                venv_binary("temporal"),
                "server",
                "start-dev",
                "--ip",
                self.host,
                "--port",
                str(self.ports.temporal),
                "--ui-port",
                str(self.ports.ui),
                "--db-filename",
                str(self.state_dir / "temporal.db"),
                "--log-level",
                "warn",
            ]
            if self.namespace != DEFAULT_NAMESPACE:
                argv += ["--namespace", self.namespace]
            if self.encrypt:
                argv += ["--ui-codec-endpoint", self.codec_url]
            for attribute, kind in SEARCH_ATTRIBUTES.items():
                argv += ["--search-attribute", f"{attribute}={kind}"]
            return argv
        if name == "sandbox":
            argv = [*python, "orderflow.cli", "sandbox", "--host", self.host, "--port", str(self.ports.sandbox)]
            for system in ("shopify", "wms", "carrier"):
                argv += ["--subscribe", f"{system}={self.webhook_url}/webhooks/{system}"]
            if self.ship_after_seconds is not None:
                argv += ["--ship-after", str(self.ship_after_seconds)]
            if self.orders_per_minute:
                argv += ["--orders-per-minute", str(self.orders_per_minute)]
            return argv
        if name == "webhooks":
            return [
                *python,
                "uvicorn",
                "orderflow.devstack:webhook_app",
                "--factory",
                "--host",
                self.host,
                "--port",
                str(self.ports.webhooks),
                "--log-level",
                "info",
            ]
        if name == "codec":
            argv = [*python, "orderflow.cli", "codec-server", "--host", self.host, "--port", str(self.ports.codec)]
            for origin in dict.fromkeys(
                f"http://{ui_host}:{self.ports.ui}" for ui_host in (self.host, "localhost", "127.0.0.1")
            ):
                argv += ["--ui-origin", origin]
            return argv
        return [*python, "orderflow.cli", "worker", "--task-queue", self.task_queue]

    def _child_env(self) -> dict[str, str]:
        """The environment of the Python children: this stack's Temporal, task queue and sandbox."""
        sandbox = self.sandbox_url
        return {
            **os.environ,
            **self._extra_env,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "ORDERFLOW_TASK_QUEUE": self.task_queue,
            # Every adapter in the worker (and the webhook service) points at this stack's sandbox.
            "ORDERFLOW_SANDBOX_HOST": self.host,
            "ORDERFLOW_SANDBOX_PORT": str(self.ports.sandbox),
            "ORDERFLOW_SHOPIFY__BASE_URL": f"{sandbox}/shopify",
            "ORDERFLOW_NETSUITE__BASE_URL": f"{sandbox}/netsuite",
            "ORDERFLOW_WMS__BASE_URL": f"{sandbox}/wms",
            "ORDERFLOW_CARRIER__BASE_URL": f"{sandbox}/carrier",
            "ORDERFLOW_AMAZON__BASE_URL": f"{sandbox}/amazon",
            "ORDERFLOW_AMAZON__LWA_URL": f"{sandbox}/amazon/auth/o2/token",
            # The sandbox generates the NetSuite M2M key pair here and the worker signs with it.
            "ORDERFLOW_NETSUITE__PRIVATE_KEY_FILE": str(self.state_dir / "sandbox" / "netsuite-m2m-key.pem"),
            "ORDERFLOW_STATE_DIR": str(self.state_dir),
            "ORDERFLOW_WORKER_HTTP_PORT": str(self.ports.worker_http),
            "PYTHONUNBUFFERED": "1",
            # Only when the stack generated its own key; a configured key reaches the children as it is.
            **self._codec_env,
        }

    async def _spawn(self, name: ServiceName) -> RunningService:
        log_file = self.log_dir / f"{name}.log"
        env = self._child_env()
        if name == "temporal":
            # The Go server reads OTEL_* too and refuses `console`; its tracing is not orderflow's.
            env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
        with log_file.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *self._argv(name),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own session and process group: Ctrl-C at the terminal reaches only `orderflow dev`,
                # which then stops each child's whole group, grandchildren included.
                start_new_session=True,
            )
        svc = RunningService(name=name, url=self.url_of(name), process=process, log_file=log_file)
        self.services[name] = svc
        return svc

    async def _wait_healthy(self, svc: RunningService) -> None:
        checks: dict[ServiceName, Callable[[], Awaitable[bool]]] = {
            "temporal": self._temporal_is_ready,
            "sandbox": lambda: _sandbox_is_healthy(self.sandbox_url),
            "webhooks": lambda: _webhooks_are_healthy(self.webhook_url),
            "worker": lambda: self._worker_is_polling(since=svc.started_at - 1.0),
            "codec": self._codec_is_healthy,
        }
        assert svc.process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if svc.process.returncode is not None:
                raise ServiceExitedError(svc.name, svc.process.returncode, log_tail(svc.log_file))
            if await checks[svc.name]():
                return
            if time.monotonic() > deadline:
                tail = "\n".join(f"    {line}" for line in log_tail(svc.log_file))
                raise DevStackError(
                    f"{svc.name} did not become healthy within {self.start_timeout:.0f} s; last log lines:\n{tail}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def _stop_one(self, name: ServiceName) -> None:
        svc = self.services.pop(name, None)
        if svc is None or svc.process is None:
            return
        await terminate_group(svc.process, grace=self.stop_grace)

    # ---- payload encryption -----------------------------------------------------------------------

    def _prepare_codec(self) -> None:
        """The stack's payload key: the configured one, else one generated once into the state directory."""
        settings = get_settings().codec
        if not settings.enabled:
            self.codec_key_file = self.state_dir / CODEC_KEY_FILE
            ensure_key_file(self.codec_key_file)
            settings = CodecSettings(key_file=self.codec_key_file)
            self._codec_env = {"ORDERFLOW_CODEC__KEY_FILE": str(self.codec_key_file)}
        try:
            self.codec = codec_from_settings(settings)
        except ValueError as exc:
            raise DevStackError(f"the payload encryption key is not usable: {exc}") from exc

    async def _codec_is_healthy(self) -> bool:
        """An orderflow codec server answers on the codec port, encrypting with this stack's key."""
        from orderflow.cli.codec import SERVICE_NAME

        try:
            body = await _get_json(f"{self.codec_url}/healthz")
        except (httpx.HTTPError, ValueError):
            return False
        # One with another key would show the UI garbage (or errors), so it is not this stack's.
        return (
            isinstance(body, dict)
            and body.get("service") == SERVICE_NAME
            and self.codec is not None
            and body.get("key_id") == self.codec.key_id
        )

    # ---- Temporal -------------------------------------------------------------------------------

    async def _temporal_client(self, wait_seconds: float) -> Client | None:
        if self._client is not None:
            return self._client
        try:
            async with asyncio.timeout(wait_seconds):
                # Encrypting, the stack's own client (it creates the Amazon schedules) shares the children's key.
                codec = self.codec if self.encrypt else FROM_SETTINGS
                self._client = await connect(self.temporal_address, self.namespace, codec=codec)
        except (RuntimeError, TimeoutError):
            return None
        return self._client

    async def _temporal_is_ready(self) -> bool:
        client = await self._temporal_client(wait_seconds=2.0)
        if client is None:
            return False
        try:
            registered = await self._registered_search_attributes(client)
            ui = await _http_ok(self.ui_url)
        except Exception:  # still booting: the next poll asks again
            return False
        return set(SEARCH_ATTRIBUTES) <= registered and ui

    async def _registered_search_attributes(self, client: Client) -> set[str]:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace)
        )
        return set(response.custom_attributes)

    async def _ensure_amazon_schedules(self) -> None:
        """The Amazon order poller's schedule per marketplace, on this stack's task queue, unless it exists.

        Amazon has no order webhooks, so without its schedule the stack would never see an Amazon
        order. The sandbox needs no 2-minute search lag, so its orders show up at the next poll.
        """
        from orderflow.cli.amazon import SANDBOX_SEARCH_LAG, ensure_schedule, poller_schedule

        client = await self._temporal_client(wait_seconds=5.0)
        if client is None:
            raise DevStackError(f"Temporal at {self.temporal_address} stopped answering")
        assert self.amazon_poll_every is not None
        for marketplace in get_settings().amazon.marketplace_ids:
            schedule_id = poller_schedule_id(Channel.AMAZON, marketplace)
            schedule = poller_schedule(
                marketplace,
                every=self.amazon_poll_every,
                overlap=AMAZON_POLL_OVERLAP,
                task_queue=self.task_queue,
                paused=False,
                search_lag=SANDBOX_SEARCH_LAG,
            )
            self.schedules[schedule_id] = await ensure_schedule(client, schedule_id, schedule)

    async def _ensure_search_attributes(self) -> None:
        """A reused server may predate an attribute; register what is missing so sagas can upsert it."""
        client = await self._temporal_client(wait_seconds=5.0)
        if client is None:
            raise DevStackError(f"Temporal at {self.temporal_address} stopped answering")
        missing = set(SEARCH_ATTRIBUTES) - await self._registered_search_attributes(client)
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=self.namespace,
                    search_attributes={attribute: _indexed_type(SEARCH_ATTRIBUTES[attribute]) for attribute in missing},
                )
            )

    async def _worker_is_polling(self, *, since: float) -> bool:
        """Whether a worker polled the stack's task queue for workflow tasks after `since` (epoch seconds)."""
        client = await self._temporal_client(wait_seconds=3.0)
        if client is None:
            return False
        try:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.namespace,
                    task_queue=TaskQueue(name=self.task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except Exception:  # unanswered means "not seen yet"; the next poll asks again
            return False
        return any(p.last_access_time.ToDatetime().timestamp() >= since for p in response.pollers)


_DESCRIPTION: dict[ServiceName, str] = {
    "temporal": "a Temporal server",
    "sandbox": "the orderflow sandbox",
    "webhooks": "the orderflow webhook service",
    "worker": "a worker",
    "codec": "the orderflow codec server (with this stack's key)",
}
_PORT_OPTION: dict[ServiceName, str] = {
    "temporal": "temporal-port",
    "sandbox": "sandbox-port",
    "webhooks": "webhook-port",
    "worker": "task-queue",
    "codec": "codec-port",
}


def _indexed_type(kind: str) -> IndexedValueType.ValueType:
    """`KeywordList` -> `INDEXED_VALUE_TYPE_KEYWORD_LIST`, the API's spelling of a search attribute type."""
    snake = "".join(f"_{ch}" if ch.isupper() and i else ch for i, ch in enumerate(kind)).upper()
    return IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{snake}")


def ensure_key_file(path: Path) -> bool:
    """Create a payload key file (mode 600) unless it exists; True if it was created now.

    An existing file is kept, never replaced: it may be the only key that reads earlier histories.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(new_key() + "\n")
    return True


async def terminate_group(process: asyncio.subprocess.Process, *, grace: float) -> None:
    """Stop a child and its whole process group: SIGTERM, then SIGKILL if it outlives `grace` seconds."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
    # The leader is gone; anything it started in its group goes with it.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=2.0) as http:
        response = await http.get(url)
    return response.json() if response.status_code == 200 else None


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _sandbox_is_healthy(base_url: str) -> bool:
    """The sandbox answers its health check."""
    try:
        body = await _get_json(f"{base_url}/sandbox/health")
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


async def _webhooks_are_healthy(base_url: str) -> bool:
    """The webhook service answers, and its API is orderflow's (it serves `/webhooks/...` routes)."""
    try:
        body = await _get_json(f"{base_url}/openapi.json")
    except (httpx.HTTPError, ValueError):
        return False
    paths = body.get("paths", {}) if isinstance(body, dict) else {}
    return any(str(path).startswith("/webhooks/") for path in paths)
