"""`orderflow doctor`: is this deployment able to run? Temporal, the database and every vendor, checked at once.

Each check makes one harmless call with a short timeout, all of them concurrently, and the table
says what is fine, what is not, and the fix. Secrets are never printed: a check names the setting
to correct, not its value. Exit codes: 0 all green, 1 something is wrong, 2 bad arguments or
settings that cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConnectConfig
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.errors import AdapterError, AuthenticationError, NotFoundError
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.cli.connection import ProfileAddressOption, ProfileNamespaceOption
from orderflow.codec import codec_from_settings
from orderflow.settings import Settings, database_url, get_settings, is_local_url
from orderflow.store.db import Database
from orderflow.temporal import SEARCH_ATTRIBUTES, client_connect_config, connect

app = typer.Typer(help="Check Temporal, the database and every vendor's credentials; print what to fix.")

# Long enough for a cross-continent TLS handshake and a token exchange, short enough to answer quickly.
DEFAULT_TIMEOUT_SECONDS = 10.0
# A probe id no vendor has: the lookup is authenticated first, so "not found" proves the credentials.
PROBE_ID = "orderflow-doctor-probe"
# The Temporal API's enum (IndexedValueType) as the names SEARCH_ATTRIBUTES uses.
_SA_TYPES = {2: "Keyword", 4: "Double", 5: "Bool", 7: "KeywordList", 1: "Text", 3: "Int", 6: "Datetime"}


class Status(enum.Enum):
    """How one check came out."""

    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table: what was checked, how it went, and the fix when it did not."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """True unless the check failed (a skipped check is explained by the failure it follows)."""
        return self.status is not Status.FAIL


class CheckFailed(Exception):
    """A check found something wrong: what (the message) and how to fix it."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


# -- Temporal -------------------------------------------------------------------------------------


def _temporal_fix(address: str, how: str) -> str:
    if how != "plaintext":
        # The SDK turns TLS on for an API key; the dev server and a bare self-hosted frontend speak plaintext.
        return (
            f"check that {address} is the Temporal frontend and speaks TLS ({how} is configured); "
            "for a plaintext server unset TEMPORAL_API_KEY or set TEMPORAL_TLS=false"
        )
    return (
        f"start Temporal at {address} (`orderflow dev` locally), or point TEMPORAL_ADDRESS / --address at it; "
        "for Temporal Cloud set TEMPORAL_API_KEY, or TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
    )


async def _temporal_checks(address: str | None, namespace: str | None, limit: float) -> list[Check]:
    try:
        config = client_connect_config(address, namespace)
    except Exception as exc:  # a bad profile in any form: TOML, an unreadable certificate
        return [
            Check(
                "Temporal client configuration",
                Status.FAIL,
                f"cannot be loaded: {type(exc).__name__}: {exc}",
                "check TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE and the TEMPORAL_TLS_*_PATH files",
            )
        ]
    target, ns = config["target_host"], config["namespace"]
    how = _how(config)
    connection = f"Temporal at {target}"
    try:
        async with asyncio.timeout(limit):
            # No codec: the doctor reads no payloads, and the codec settings have a check of their own.
            client = await connect(target, ns, codec=None)
    except (RuntimeError, TimeoutError, RPCError) as exc:
        reason = _connect_failure(exc, limit)
        return [
            Check(connection, Status.FAIL, f"not reachable at {target} ({how}): {reason}", _temporal_fix(target, how)),
            Check(f"namespace {ns}", Status.SKIPPED, "Temporal not reachable"),
            Check("search attributes", Status.SKIPPED, "Temporal not reachable"),
        ]
    checks = [Check(connection, Status.OK, f"connected ({how})")]
    namespace_check, attributes_check = await asyncio.gather(
        _run(f"namespace {ns}", _namespace(client, ns), limit),
        _run("search attributes", _search_attributes(client, ns), limit),
    )
    return [*checks, namespace_check, attributes_check]


def _how(config: ClientConnectConfig) -> str:
    """How the client authenticates, in words that name no secret."""
    tls = config.get("tls")
    if config.get("api_key"):
        return "API key"
    if isinstance(tls, TLSConfig) and tls.client_cert:
        return "mTLS"
    return "TLS" if tls else "plaintext"


def _connect_failure(exc: Exception, limit: float) -> str:
    text = str(exc)
    if not text:
        return f"no answer in {limit:g}s"
    if "Connection refused" in text:
        return "connection refused, nothing listens there"
    # The SDK's message nests the transport's debug form; the head of it is what an operator reads.
    return text.removeprefix("Failed client connect: ")[:300]


async def _namespace(client: Client, namespace: str) -> str:
    try:
        answer = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise CheckFailed(
                f"namespace {namespace} does not exist",
                f"create it (`temporal operator namespace create --namespace {namespace}`, or in Temporal Cloud), "
                "or set TEMPORAL_NAMESPACE / --namespace to the one orderflow uses",
            ) from None
        raise
    retention = answer.config.workflow_execution_retention_ttl.ToTimedelta()
    return f"exists, retention {retention.days} days"


async def _search_attributes(client: Client, namespace: str) -> str:
    answer = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    registered = {name: _SA_TYPES.get(int(kind), str(kind)) for name, kind in answer.custom_attributes.items()}
    missing = [name for name in SEARCH_ATTRIBUTES if name not in registered]
    wrong = [f"{name} is {registered[name]}, needs {kind}" for name, kind in SEARCH_ATTRIBUTES.items() if
             name in registered and registered[name] != kind]  # fmt: skip
    if wrong:
        raise CheckFailed(
            "; ".join(wrong),
            "a search attribute's type cannot change: use a namespace without these names, or remove them",
        )
    if missing:
        raise CheckFailed(f"missing: {', '.join(missing)}", "run `orderflow setup`")
    return f"all {len(SEARCH_ATTRIBUTES)} registered"


# -- orderflow's own state ------------------------------------------------------------------------


async def _database(settings: Settings) -> str:
    url = database_url(settings)
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if sqlite_file and not await asyncio.to_thread(os.path.exists, sqlite_file):
        # Opening it would create an empty file: a check must leave the deployment as it found it.
        raise CheckFailed(f"{shown} does not exist yet", "run `orderflow db upgrade` (it creates and migrates it)")
    database = Database(url)
    try:
        try:
            current = await database.current_revision()
        except Exception as exc:  # any driver error means the same to the operator
            raise CheckFailed(
                f"{shown} not reachable: {type(exc).__name__}",
                "check ORDERFLOW_DATABASE_URL and that the database server is up",
            ) from None
        head = database.head_revision()
    finally:
        await database.dispose()
    if current != head:
        raise CheckFailed(
            f"{shown} is at migration {current or 'none'}, the code needs {head}", "run `orderflow db upgrade`"
        )
    return f"{shown} at the latest migration ({head})"


async def _codec(settings: Settings) -> str:
    if not settings.codec.enabled:
        return "off (payloads are stored in plaintext)"
    try:
        codec = codec_from_settings(settings.codec)
    except ValueError as exc:
        # The message names the setting or file, never the key.
        raise CheckFailed(
            str(exc), "set ORDERFLOW_CODEC__KEY (or __KEY_FILE) to a key from `orderflow codec-key`"
        ) from None
    assert codec is not None  # enabled means a key is configured
    return f"on, encrypting with key {codec.key_id}, {len(codec.key_ids) - 1} older key(s) to decrypt"


# -- vendors --------------------------------------------------------------------------------------


async def _shopify(http: httpx.AsyncClient, settings: Settings) -> str:
    data = await ShopifyClient(http, settings.shopify).execute("{ shop { name } }")
    return f"store {data['shop']['name']!r} answered"


async def _netsuite(http: httpx.AsyncClient, settings: Settings) -> str:
    # One SuiteQL read (and, for OAuth 2.0, the token exchange before it).
    await NetSuiteClient(http, settings.netsuite).find_customer(PROBE_ID)
    return f"account {settings.netsuite.account_id} answered ({settings.netsuite.auth_method})"


async def _wms(http: httpx.AsyncClient, settings: Settings) -> str:
    await WmsClient(http, settings.wms).find_order_by_reference(PROBE_ID)
    return "token accepted"


async def _carrier(http: httpx.AsyncClient, settings: Settings) -> str:
    # Not found means the key was accepted and the made-up tracker is not there.
    with contextlib.suppress(NotFoundError):
        await CarrierClient(http, settings.carrier).get_tracker(f"trk_{PROBE_ID.replace('-', '')}")
    return "API key accepted"


async def _amazon(http: httpx.AsyncClient, settings: Settings) -> str:
    amazon = settings.amazon
    now = datetime.now(UTC)
    # The LWA token exchange, then the poller's own search over a window with (almost) nothing in it.
    await AmazonClient(http, amazon).search_orders(
        updated_after=now - timedelta(minutes=10),
        updated_before=now - timedelta(minutes=3),
        marketplace_id=amazon.marketplace_ids[0],
        page_size=1,
    )
    return f"seller {amazon.seller_id} answered for {amazon.marketplace_ids[0]}"


def _credential_fix(settings: Settings) -> dict[str, str]:
    netsuite = (
        "ORDERFLOW_NETSUITE__CLIENT_ID, __CERTIFICATE_ID and __PRIVATE_KEY_FILE (the certificate mapped to the "
        "integration for OAuth 2.0 M2M)"
        if settings.netsuite.auth_method == "oauth2"
        else "ORDERFLOW_NETSUITE__CONSUMER_KEY, __CONSUMER_SECRET, __TOKEN_ID and __TOKEN_SECRET"
    )
    shopify = (
        "ORDERFLOW_SHOPIFY__ACCESS_TOKEN"
        if settings.shopify.auth_method == "access_token"
        else "ORDERFLOW_SHOPIFY__CLIENT_ID and __CLIENT_SECRET"
    )
    return {
        "Shopify": f"check {shopify} (and the app's scopes on {settings.shopify.shop_domain})",
        "NetSuite": f"check {netsuite} and ORDERFLOW_NETSUITE__ACCOUNT_ID",
        "WMS": "check ORDERFLOW_WMS__TOKEN",
        "carrier": "check ORDERFLOW_CARRIER__API_KEY",
        "Amazon": "check ORDERFLOW_AMAZON__CLIENT_ID, __CLIENT_SECRET and __REFRESH_TOKEN (the seller's authorisation)",
    }


_VENDORS: dict[str, tuple[str, Callable[[httpx.AsyncClient, Settings], Awaitable[str]]]] = {
    "Shopify": ("shopify", _shopify),
    "NetSuite": ("netsuite", _netsuite),
    "WMS": ("wms", _wms),
    "carrier": ("carrier", _carrier),
    "Amazon": ("amazon", _amazon),
}


async def _vendor(name: str, http: httpx.AsyncClient, settings: Settings) -> str:
    group, probe = _VENDORS[name]
    base_url = getattr(settings, group).base_url
    try:
        return await probe(http, settings)
    except AuthenticationError as exc:
        raise CheckFailed(f"credentials refused: {exc}", _credential_fix(settings)[name]) from None
    except AdapterError as exc:
        setting = f"ORDERFLOW_{group.upper()}__BASE_URL"
        if exc.status_code is None:
            # No HTTP answer at all: refused, timed out, a name that does not resolve.
            where = "start the sandbox (`orderflow dev`)" if is_local_url(base_url) else "check the network path to it"
            raise CheckFailed(f"{base_url} not reachable: {exc}", f"check {setting}, or {where}") from None
        raise CheckFailed(
            f"{base_url} answered with an error: {exc}", f"check {setting} and the vendor's status page"
        ) from None


# -- running the checks ---------------------------------------------------------------------------


async def _run(name: str, check: Awaitable[str], limit: float) -> Check:
    try:
        async with asyncio.timeout(limit):
            return Check(name, Status.OK, await check)
    except CheckFailed as failed:
        return Check(name, Status.FAIL, failed.detail, failed.fix)
    except TimeoutError:
        return Check(name, Status.FAIL, f"no answer in {limit:g}s", "check the address and the network path to it")
    except RPCError as exc:
        return Check(name, Status.FAIL, f"Temporal refused ({exc.status.name}): {exc.message}", _rpc_fix(exc))
    except Exception as exc:  # a doctor reports every failure rather than crash on one
        return Check(name, Status.FAIL, f"{type(exc).__name__}: {exc}", "see the error; run again with the fix")


def _rpc_fix(exc: RPCError) -> str:
    if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
        return "the API key or client certificate lacks access to this namespace"
    return "check the Temporal server's logs"


async def run_checks(
    settings: Settings,
    *,
    address: str | None = None,
    namespace: str | None = None,
    limit: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[Check]:
    """Every check, run concurrently: Temporal, the database, payload encryption, then each vendor."""
    async with httpx.AsyncClient() as http:
        temporal = asyncio.create_task(_temporal_checks(address, namespace, limit))
        rest = await asyncio.gather(
            _run("database", _database(settings), limit),
            _run("payload encryption", _codec(settings), limit),
            *(_run(name, _vendor(name, http, settings), limit) for name in _VENDORS),
        )
        return [*await temporal, *rest]


def print_report(checks: list[Check], console: Console | None = None) -> None:
    """The doctor's table: one row per check, the fix beside each failure."""
    console = console or Console()
    table = Table(title="orderflow doctor")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail")
    table.add_column("fix")
    styles = {Status.OK: "green", Status.FAIL: "bold red", Status.SKIPPED: "yellow"}
    for check in checks:
        status = f"[{styles[check.status]}]{check.status.value}[/]"
        table.add_row(check.name, status, check.detail, check.fix, end_section=False)
    console.print(table)
    failed = sum(not check.ok for check in checks)
    console.print("all green" if not failed else f"{failed} check(s) failed", style="green" if not failed else "red")


def diagnose(
    settings: Settings,
    *,
    address: str | None = None,
    namespace: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> int:
    """Run every check against `settings`, print the table, and return the exit code (0 green, 1 not)."""
    checks = asyncio.run(run_checks(settings, address=address, namespace=namespace, limit=timeout))
    print_report(checks)
    return 0 if all(check.ok for check in checks) else 1


@app.command()
def doctor(
    address: ProfileAddressOption = None,
    namespace: ProfileNamespaceOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds each check may take.")] = (
        DEFAULT_TIMEOUT_SECONDS
    ),
) -> None:
    """Check Temporal, the namespace, its search attributes, the database and each vendor's credentials."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Where and why only: the input of a bad field may be a secret.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        typer.secho(f"the settings cannot be read: {problems}", err=True, fg="red")
        raise typer.Exit(2) from None
    raise typer.Exit(diagnose(settings, address=address, namespace=namespace, timeout=timeout))
