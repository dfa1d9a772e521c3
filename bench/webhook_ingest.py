"""Webhook ingest: ack latency of signed Shopify `orders/create` at fixed rates, inbox on SQLite and PostgreSQL.

    .venv/bin/python bench/webhook_ingest.py [--seconds 5] [--rates 50,200,500] [--temporal up,down]
                                             [--in-thread] [--client raw|httpx]

Prints JSON (no assertions): for each target (the webhook service with its inbox on SQLite, on
PostgreSQL, and a bare FastAPI endpoint that answers 200) and each rate, the achieved rate, the
p50/p99/max ack latency in ms and the errors by status; the core count; whether the issue's target
(p99 <= 50 ms at 200/s) is met. See bench/README.md.

The load is open-loop: request i is sent at start + i/rate whatever became of the earlier ones, each
an `orders/create` with its own order id and event id, signed with the configured client secret.
Each target is served by uvicorn in a subprocess of its own (as `orderflow dev` serves the webhook
service), so the load generator does not share the server's GIL; `--in-thread` serves it from a
thread of this process instead (`BackgroundServer`). The generator writes prepared HTTP/1.1 requests
on kept-alive connections; `--client httpx` sends them with `httpx.AsyncClient` instead, which costs
20 to 50 times the CPU per request and on 2 cores becomes what is measured. Temporal is a real
dev server with no worker on the benchmark's task queue, so every webhook starts a saga that never
runs ("up"; the service's relay starts them right after each answer, so the dev server's load is part
of the run), or a port nothing listens on, so every webhook is stored pending for the relay ("down").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI, Response
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.shopify import webhook_secrets
from orderflow.cli.demo import percentile
from orderflow.devstack import venv_binary
from orderflow.sandbox.server import BackgroundServer, bind_socket
from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database, upgrade
from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.shopify import verify

# The target: p99 ack latency at most this, at this rate.
TARGET_RATE = 200
TARGET_P99_MS = 50.0
POSTGRES_URL = os.environ.get("ORDERFLOW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Shopify gives up on an endpoint after 5 s; an ack later than that is a failed delivery ("timeout").
REQUEST_TIMEOUT_SECONDS = 5.0
# uvicorn's own listen backlog (what `uvicorn --port` gives the service), not BackgroundServer's 128.
LISTEN_BACKLOG = 2048
# Far more than the requests in flight at 500/s unless the server stalls, so the client never
# queues a request behind a busy connection (which would turn the load closed-loop).
MAX_CONNECTIONS = 1000
# Untimed requests before each target: the first Temporal connect, the database pool, lazy imports.
WARMUP_REQUESTS = 40
# The longest wait for a server to work off an overloaded rate's leftovers before the next rate.
SETTLE_SECONDS = 5.0
# uvicorn closes a connection idle for 5 s (`timeout_keep_alive`); the raw client reuses none idle this long,
# so no request is lost to a close racing it (Shopify's client would retry those).
KEEP_ALIVE_REUSE_SECONDS = 4.0
SPEC_ENV = "ORDERFLOW_BENCH_INGEST_SPEC"
ROUTE = "/webhooks/shopify"
BACKENDS = ("sqlite", "postgresql")
SHOP_DOMAIN = Settings().shopify.shop_domain
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


# --- What each target serves ---------------------------------------------------------------------


def bare_app() -> FastAPI:
    """The baseline: the same route answering 200 at once, without reading the body."""
    app = FastAPI()

    @app.post(ROUTE)
    async def receive() -> Response:
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_for(spec: dict[str, Any]) -> tuple[FastAPI, Database | None]:
    """The app a target serves, and the inbox's database (None for the bare endpoint)."""
    if spec["kind"] == "bare":
        return bare_app(), None
    database = Database(spec["database_url"], schema=spec["schema"])
    gateway = TemporalGateway(spec["temporal_address"], spec["namespace"], task_queue=spec["task_queue"])
    settings = Settings(database_url=spec["database_url"])
    # The relay runs, as in production. A row is its to retry 15 s after the request's own attempt:
    # Temporal down, each pass stops at the first refusal; up, it retries the starts that timed out.
    return create_app(settings, temporal=gateway, database=database), database


def serve_child() -> None:
    """`--serve`: serve one target with uvicorn on the listening socket the parent passed down."""
    spec = json.loads(os.environ[SPEC_ENV])
    app, _database = app_for(spec)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=spec["fd"])])


class Served:
    """A target served over real HTTP: in a uvicorn subprocess (the default) or a thread of this process."""

    def __init__(self, spec: dict[str, Any], *, in_thread: bool) -> None:
        self.spec = spec
        self.in_thread = in_thread
        self.process: subprocess.Popen[bytes] | None = None
        self.thread: BackgroundServer | None = None
        self.database: Database | None = None
        self.url = ""

    def start(self) -> None:
        """Start serving and wait until `/healthz` answers."""
        if self.in_thread:
            app, self.database = app_for(self.spec)
            self.thread = BackgroundServer(app).start()
            self.url = self.thread.url
        else:
            sock = bind_socket()
            sock.listen(LISTEN_BACKLOG)
            host, port = sock.getsockname()[:2]
            self.url = f"http://{host}:{port}"
            env = {**os.environ, SPEC_ENV: json.dumps({**self.spec, "fd": sock.fileno()})}
            # The child's stdout goes to our stderr: stdout stays pure JSON.
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
                [sys.executable, __file__, "--serve"], pass_fds=[sock.fileno()], env=env, stdout=sys.stderr
            )
            sock.close()
        deadline = time.monotonic() + 30
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the {self.spec['kind']} server exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.spec['kind']} server on {self.url} did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """CPU the serving process has used so far (None in-thread: it would include the load generator)."""
        return process_cpu_seconds(self.process.pid) if self.process is not None else None

    def stop(self) -> None:
        """Stop serving: uvicorn's graceful shutdown (SIGTERM), which runs the app's lifespan end."""
        if self.thread is not None:
            self.thread.stop()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2)  # a backlog an overloaded rate left is not worth waiting for
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.asynccontextmanager
async def serving(spec: dict[str, Any], *, in_thread: bool) -> AsyncIterator[Served]:
    """A target served for the duration of the block."""
    served = Served(spec, in_thread=in_thread)
    await asyncio.to_thread(served.start)
    try:
        yield served
    finally:
        await asyncio.to_thread(served.stop)
        if served.database is not None:
            await served.database.dispose()


@contextlib.asynccontextmanager
async def migrated(backend: str, tmp: Path) -> AsyncIterator[tuple[str, str | None]]:
    """A fresh inbox migrated to head: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'inbox-{uuid.uuid4().hex[:8]}.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url, None
        return
    schema = f"of_bench_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        await asyncio.to_thread(upgrade, POSTGRES_URL, schema=schema)
        yield POSTGRES_URL, schema
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- The load ------------------------------------------------------------------------------------

_order_ids = iter(range(time.time_ns() // 1000, 2**62))  # unique across runs against one dev server


def order_body(order_id: int) -> bytes:
    """A REST-shaped `orders/create` body as Shopify sends it (two lines, shipping, customer)."""
    address = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "address1": "1 Main St",
        "city": "Austin",
        "province_code": "TX",
        "zip": "78701",
        "country_code": "US",
    }
    lines = [("BOLT-M8-S", 2), ("NUT-M8", 4)]
    body = {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{order_id % 100000}",
        "email": "grace@example.com",
        "created_at": "2026-03-01T10:15:00-05:00",
        "currency": "USD",
        "total_price": f"{sum(q for _, q in lines) * 12.5 + 9.95:.2f}",
        "financial_status": "paid",
        "cancelled_at": None,
        "cancel_reason": None,
        "line_items": [
            {
                "id": 15518907892000 + i,
                "sku": sku,
                "name": f"Part {sku}",
                "quantity": qty,
                "price": "12.50",
                "requires_shipping": True,
                "tax_lines": [],
                "discount_allocations": [],
            }
            for i, (sku, qty) in enumerate(lines)
        ],
        "shipping_lines": [{"title": "Standard", "code": "standard", "price": "9.95", "tax_lines": []}],
        "shipping_address": address,
        "billing_address": address,
        "customer": {"id": 207119552, "first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"},
    }
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Webhook:
    """One signed delivery: its body and headers, and the whole HTTP/1.1 request as the raw client sends it."""

    body: bytes
    headers: dict[str, str]
    wire: bytes


def signed_webhooks(count: int, secret: str, host: str) -> list[Webhook]:
    """`count` signed `orders/create` deliveries, each its own order id and event id (made before the clock starts)."""
    webhooks = []
    for _ in range(count):
        body = order_body(next(_order_ids))
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": base64.b64encode(
                hmac.new(secret.encode(), body, hashlib.sha256).digest()
            ).decode(),
            "X-Shopify-Shop-Domain": SHOP_DOMAIN,
            "X-Shopify-Event-Id": str(uuid.uuid4()),
        }
        head = f"POST {ROUTE} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        webhooks.append(Webhook(body, headers, head.encode() + body))
    return webhooks


class LoadClient(Protocol):
    """What the load generator sends webhooks with: the answer's status and body."""

    async def post(self, webhook: Webhook) -> tuple[int, bytes]: ...


class RawClient:
    """A minimal HTTP/1.1 client: each request written as prepared bytes on a kept-alive connection.

    Connections are opened as the load needs them (at most `MAX_CONNECTIONS`; a request beyond that
    waits for one, and the wait counts in its latency). It costs about 0.07 ms of CPU a request
    where httpx costs 1.5-3 ms: on 2 cores, httpx at 500/s needs a core of its own and becomes what
    is measured.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.opened = 0

    async def post(self, webhook: Webhook) -> tuple[int, bytes]:
        """Send one request and read its answer (Content-Length or chunked)."""
        async with self.slots:
            reader, writer = await self._connection()
            try:
                status, body, keep_alive = await self._exchange(reader, writer, webhook.wire)
            except BaseException:
                writer.close()  # a timeout or error mid-answer leaves the connection unusable
                raise
            if keep_alive:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return status, body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The most recently used idle connection, unless the server may have closed it; else a new one."""
        while self.idle:
            reader, writer, last_used = self.idle.pop()
            if time.monotonic() - last_used < KEEP_ALIVE_REUSE_SECONDS:
                return reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes
    ) -> tuple[int, bytes, bool]:
        writer.write(wire)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, keep_alive = 0, False, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep_alive = value != b"close"
        if not chunked:
            return status, await reader.readexactly(length), keep_alive
        chunks = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        await reader.readline()  # the empty trailer
        return status, b"".join(chunks), keep_alive

    def close(self) -> None:
        """Close the idle connections."""
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class HttpxClient:
    """The load sent with `httpx.AsyncClient` (`--client httpx`), to show what the client itself costs."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, webhook: Webhook) -> tuple[int, bytes]:
        """Send one request through httpx's pool."""
        response = await self.http.post(ROUTE, content=webhook.body, headers=webhook.headers)
        return response.status_code, response.content


@dataclass
class Sample:
    """One request: how late the generator sent it, how long the ack took, and what came back."""

    lag_ms: float
    latency_ms: float
    outcome: str  # the HTTP status, or the client error's name
    receipt: str | None = None  # the service's receipt status (started, pending, ...), when it sent one
    done_at: float = 0.0


def process_cpu_seconds(pid: int) -> float | None:
    """User and system CPU a process has used so far (Linux /proc); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def neighbours_cpu_seconds() -> dict[str, float]:
    """CPU used so far by the other programs on the path: our Temporal dev server, and PostgreSQL's processes.

    PostgreSQL is the machine's shared server: its figure includes any other client's queries.
    """
    used = {"temporal": 0.0, "postgresql": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if comm == "temporal" and int(rest[1]) == os.getpid():
            used["temporal"] += (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
        elif comm.startswith("postgres"):
            used["postgresql"] += (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
    return used


def machine_jiffies() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in jiffies, over every core."""
    numbers = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = numbers[3] + numbers[4]  # idle, iowait
    return sum(numbers) - idle, sum(numbers)


async def machine_busy_percent(seconds: float = 1.0) -> float:
    """How busy the machine is before the benchmark starts (another program's load skews every figure)."""
    busy_before, total_before = machine_jiffies()
    await asyncio.sleep(seconds)
    busy, total = machine_jiffies()
    return round((busy - busy_before) * 100 / max(total - total_before, 1), 1)


@dataclass
class Machine:
    """CPU counters at one moment: wall clock, this process, the server, its neighbours and the machine."""

    wall: float
    own_cpu: float
    server_cpu: float | None
    neighbours: dict[str, float]
    busy_total: tuple[int, int]

    @classmethod
    def now(cls, served: Served) -> Machine:
        return cls(
            time.perf_counter(), time.process_time(), served.cpu_seconds(), neighbours_cpu_seconds(), machine_jiffies()
        )


def pct(values: list[float], p: float) -> float | None:
    return round(percentile(values, p), 1) if values else None


async def drive(client: LoadClient, served: Served, rate: int, webhooks: list[Webhook]) -> dict[str, Any]:
    """Send the webhooks open-loop at `rate` per second; latency, achieved rate, errors and CPU."""
    samples: list[Sample] = []

    async def one(webhook: Webhook, scheduled: float) -> None:
        started = time.perf_counter()
        receipt = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                status, body = await client.post(webhook)
            outcome = str(status)
            if status == 200 and body:
                receipt = str(json.loads(body).get("status"))
        except TimeoutError:
            outcome = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError) as exc:
            outcome = exc.__class__.__name__
        done = time.perf_counter()
        samples.append(Sample((started - scheduled) * 1000, (done - started) * 1000, outcome, receipt, done))

    before = Machine.now(served)
    start = time.perf_counter() + 0.01
    tasks = []
    for i, webhook in enumerate(webhooks):
        scheduled = start + i / rate
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(webhook, scheduled)))
    last_sent = time.perf_counter()
    await asyncio.gather(*tasks)
    after = Machine.now(served)

    acked = [s for s in samples if s.outcome == "200"]
    latencies = [s.latency_ms for s in acked]
    lags = [s.lag_ms for s in samples]
    wall = after.wall - before.wall
    busy, total = (a - b for a, b in zip(after.busy_total, before.busy_total, strict=True))
    server_cpu = (
        after.server_cpu - before.server_cpu if after.server_cpu is not None and before.server_cpu is not None else None
    )
    return {
        "sent": len(samples),
        "offered_per_second": round(len(samples) / (last_sent - start + 1 / rate), 1),
        # Acks (200) per second, over the time from the first send to the last answer.
        "achieved_per_second": round(len(acked) / (max(s.done_at for s in samples) - start), 1),
        # From the moment the request's task ran (connection wait included) to the whole answer read.
        "ack_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": pct(latencies, 100)},
        "errors": dict(Counter(s.outcome for s in samples if s.outcome != "200")),
        "receipts": dict(Counter(s.receipt for s in acked if s.receipt is not None)),
        # How late the generator started requests against their schedule: large values mean the
        # generator, not the server, set the pace.
        "send_lag_ms": {"p99": pct(lags, 99), "max": pct(lags, 100)},
        "server_cpu_ms_per_request": round(server_cpu * 1000 / len(samples), 2) if server_cpu is not None else None,
        "server_cpu_percent_of_one_core": round(server_cpu * 100 / wall, 1) if server_cpu is not None else None,
        "generator_cpu_percent_of_one_core": round((after.own_cpu - before.own_cpu) * 100 / wall, 1),
        # PostgreSQL's figure misses the CPU of backends that exited in between (hence at least 0).
        **{
            f"{name}_cpu_percent_of_one_core": max(0.0, round((after.neighbours[name] - used) * 100 / wall, 1))
            for name, used in before.neighbours.items()
        },
        "machine_cpu_busy_percent": round(busy * 100 / total, 1) if total else None,
        # What the machine did beyond the server, the generator, Temporal and PostgreSQL: another
        # program's load (or the kernel). Far above a few percent, the row is skewed.
        "other_cpu_percent_of_one_core": max(
            0.0,
            round(
                busy * 100 / total * CORES
                - (server_cpu or 0.0) * 100 / wall
                - (after.own_cpu - before.own_cpu) * 100 / wall
                - sum(after.neighbours[name] - used for name, used in before.neighbours.items()) * 100 / wall,
                1,
            ),
        )
        if total
        else None,
    }


async def settled(url: str, *, within: float = SETTLE_SECONDS) -> None:
    """Wait (at most `within`) until the server has worked off what an overloaded rate left behind.

    Requests the client gave up on are still handled (uvicorn does not cancel them), so the next
    rate would start against a backlog. The server is idle again when `/healthz` answers at once.
    """
    deadline = time.perf_counter() + within
    async with httpx.AsyncClient(base_url=url, timeout=within) as http:
        while time.perf_counter() < deadline:
            asked = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await http.get("/healthz")
            if time.perf_counter() - asked < 0.02:
                return
            await asyncio.sleep(0.2)


async def run_target(
    spec: dict[str, Any], rates: list[int], seconds: float, secret: str, *, in_thread: bool, client: str
) -> dict[str, Any]:
    """Serve one target, warm it up, drive each rate in turn; for an inbox, count its rows afterwards."""
    async with serving(spec, in_thread=in_thread) as served:
        host = served.url.removeprefix("http://")
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=REQUEST_TIMEOUT_SECONDS) as http:
            raw = RawClient(served.url)
            load: LoadClient = HttpxClient(http) if client == "httpx" else raw
            try:
                await drive(load, served, 50, signed_webhooks(WARMUP_REQUESTS, secret, host))
                by_rate = {}
                for i, rate in enumerate(rates):
                    webhooks = signed_webhooks(int(rate * seconds), secret, host)
                    by_rate[str(rate)] = await drive(load, served, rate, webhooks)
                    if i < len(rates) - 1:
                        await settled(served.url)
            finally:
                raw.close()
    result: dict[str, Any] = {"rates": by_rate}
    if spec["kind"] == "inbox":
        database = Database(spec["database_url"], schema=spec["schema"])
        try:
            # Rows stored by the end, including requests the client gave up on (stored all the same).
            result["inbox_rows_by_status"] = await store.count_by_status(database)
        finally:
            await database.dispose()
    return result


@contextlib.contextmanager
def child_output_to_stderr() -> Iterator[None]:
    """Send what a child process prints (the dev server's banner) to stderr, so stdout stays pure JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def closed_port() -> int:
    """A loopback port nothing listens on (just freed), so every connect is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def main(
    rates: list[int], seconds: float, modes: list[str], *, in_thread: bool = False, client: str = "raw"
) -> dict[str, Any]:
    """Start a dev server; drive the bare endpoint, then the inbox on each database with Temporal up and/or down."""
    settings = Settings()
    secret = webhook_secrets(settings.shopify)[0]
    probe = signed_webhooks(1, secret, "probe")[0]
    if verify(probe.body, {k.lower(): v for k, v in probe.headers.items()}, settings) is not None:
        raise RuntimeError("the benchmark's signature does not verify against the service's settings")
    busy_at_start = await machine_busy_percent()
    started = time.perf_counter()
    with child_output_to_stderr():
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=venv_binary("temporal"),
            search_attributes=SEARCH_ATTRIBUTE_KEYS,
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        )
    report: dict[str, Any] = {
        "cores": CORES,
        # Over the second before the run: far above 0, another program is sharing the cores.
        "machine_cpu_busy_percent_at_start": busy_at_start,
        "server": "thread of the generator's process" if in_thread else "uvicorn subprocess per target",
        "client": client,
        "seconds_per_rate": seconds,
        "target": f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE}/s",
    }
    try:
        temporal = {
            # A real dev server with no worker on this queue: each webhook starts a saga that never runs.
            "temporal_up": env.client.service_client.config.target_host,
            # Nothing listening: each webhook is stored pending, for the relay.
            "temporal_down": f"127.0.0.1:{closed_port()}",
        }
        report["bare"] = await run_target({"kind": "bare"}, rates, seconds, secret, in_thread=in_thread, client=client)
        with tempfile.TemporaryDirectory() as tmp:
            for backend in BACKENDS:
                report[backend] = {}
                for mode in modes:
                    async with migrated(backend, Path(tmp)) as (url, schema):
                        spec = {
                            "kind": "inbox",
                            "database_url": url,
                            "schema": schema,
                            "temporal_address": temporal[mode],
                            "namespace": env.client.namespace,
                            "task_queue": f"bench-ingest-{uuid.uuid4()}",
                        }
                        report[backend][mode] = await run_target(
                            spec, rates, seconds, secret, in_thread=in_thread, client=client
                        )
    finally:
        await env.shutdown()

    met: dict[str, bool] = {}
    if TARGET_RATE in rates:
        for backend in BACKENDS:
            for mode in modes:
                figures = report[backend][mode]["rates"][str(TARGET_RATE)]
                p99 = figures["ack_ms"]["p99"]
                met[f"{backend}/{mode}"] = p99 is not None and p99 <= TARGET_P99_MS and not figures["errors"]
    report["target_met"] = met
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    return report


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve_child()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each rate is held")
    parser.add_argument("--rates", default="50,200,500", help="webhooks per second, comma-separated")
    parser.add_argument(
        "--temporal",
        default="up,down",
        help="up (dev server, no worker: sagas started, never run), down (closed port: stored pending), or both",
    )
    parser.add_argument("--in-thread", action="store_true", help="serve from a thread of this process")
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="the load generator's HTTP client (see README)"
    )
    args = parser.parse_args()
    chosen_modes = [f"temporal_{m.strip()}" for m in args.temporal.split(",")]
    if unknown := [m for m in chosen_modes if m not in ("temporal_up", "temporal_down")]:
        parser.error(f"--temporal takes up and/or down, not {unknown}")
    report = asyncio.run(
        main(
            [int(r) for r in args.rates.split(",")],
            args.seconds,
            chosen_modes,
            in_thread=args.in_thread,
            client=args.client,
        )
    )
    print(json.dumps(report, indent=2), flush=True)
    # The Temporal SDK's runtime thread can abort the interpreter's finalization ("PyGILState_Release"),
    # turning a finished run's exit status into 134; the report is out, so leave without finalizing.
    os._exit(0)
