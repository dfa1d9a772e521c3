"""`orderflow sandbox`: serve the simulators, and switch their faults, clock and state at run time."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import httpx
import typer

from orderflow.settings import get_settings

app = typer.Typer(help="Local simulators of Shopify, NetSuite, the WMS and the carrier.")
faults_app = typer.Typer(help="Inject failures into the running sandbox: errors, throttles, latency, lost responses.")
app.add_typer(faults_app, name="faults")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The running sandbox's base URL (default: from settings, port 8700)."),
]
SYSTEMS = ("shopify", "netsuite", "wms", "carrier")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _sandbox_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    settings = get_settings()
    return f"http://{settings.sandbox_host}:{settings.sandbox_port}"


def _call(method: str, url: str | None, path: str, **kwargs: Any) -> Any:
    """Call the sandbox's control API; turn every failure into a message and exit code 2."""
    base = _sandbox_url(url)
    try:
        response = httpx.request(method, f"{base}{path}", timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"the sandbox is not reachable at {base} ({type(exc).__name__}); start it with `orderflow sandbox`")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        _fail(f"the sandbox refused {method} {path}: HTTP {response.status_code}: {json.dumps(detail)}")
    return response.json() if response.content else None


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _parse_subscription(value: str) -> tuple[str, str]:
    system, sep, url = value.partition("=")
    if not sep or system not in ("shopify", "wms", "carrier") or not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"expected SYSTEM=URL with SYSTEM one of shopify, wms, carrier; got {value!r}")
    return system, url


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8700).")] = None,
    orders_per_minute: Annotated[
        float, typer.Option("--orders-per-minute", min=0, help="Demo: Shopify invents this many orders a minute.")
    ] = 0.0,
    ship_after: Annotated[
        float | None,
        typer.Option("--ship-after", min=0, help="Demo: the WMS ships released orders after this many seconds."),
    ] = None,
    subscribe: Annotated[
        list[str] | None,
        typer.Option(
            "--subscribe",
            help="SYSTEM=URL: deliver that system's webhooks (all topics) to URL. Repeatable.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice the sandbox makes.")] = 7,
) -> None:
    """Serve every simulator on one port (:8700), until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from orderflow.sandbox import DemoConfig, SandboxConfig, create_app
    from orderflow.sandbox.core import WebhookTarget
    from orderflow.sandbox.credentials import ensure_m2m_keypair

    settings = get_settings()
    targets = [_parse_subscription(value) for value in subscribe or []]
    # The adapter's default settings and the sandbox share this generated key pair.
    public_key = ensure_m2m_keypair(settings.netsuite.private_key_file)
    config = SandboxConfig(
        seed=seed,
        netsuite_public_key_file=public_key,
        demo=DemoConfig(shopify_orders_per_minute=orders_per_minute, wms_ship_after_seconds=ship_after),
        webhooks=[WebhookTarget(system=system, topics=["*"], url=url) for system, url in targets],
    )
    host = host or settings.sandbox_host
    port = port or settings.sandbox_port
    typer.echo(f"orderflow sandbox on http://{host}:{port}  (control API: /sandbox, systems: {', '.join(SYSTEMS)})")
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")


@app.command()
def state(
    system: Annotated[str | None, typer.Argument(help="shopify, netsuite, wms or carrier; all when omitted.")] = None,
    url: UrlOption = None,
) -> None:
    """Print what a simulated system holds (orders, stock, records, labels)."""
    if system is not None and system not in SYSTEMS:
        _fail(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    _print(_call("GET", url, f"/sandbox/state/{system}" if system else "/sandbox/state"))


@app.command()
def reset(url: UrlOption = None) -> None:
    """Put every simulated system back to its seed state and clear all faults."""
    _print(_call("POST", url, "/sandbox/reset"))


@app.command()
def advance(
    seconds: Annotated[float, typer.Argument(min=0, help="How far to move the sandbox clock.")],
    url: UrlOption = None,
) -> None:
    """Move the sandbox clock forward, firing what was due (shipments, tracker updates, token expiry)."""
    _print(_call("POST", url, "/sandbox/clock/advance", json={"seconds": seconds}))
    _call("POST", url, "/sandbox/tick")


@app.command()
def webhooks(
    system: Annotated[str | None, typer.Option(help="Only this system's deliveries.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    url: UrlOption = None,
) -> None:
    """List the webhook deliveries the sandbox has made or is retrying."""
    params = {k: v for k, v in {"system": system, "status": status}.items() if v}
    _print(_call("GET", url, "/sandbox/webhooks/deliveries", params=params))


@faults_app.command("add")
def add_fault(
    kind: Annotated[str, typer.Argument(help="error, throttle, latency or timeout_after_commit.")],
    system: Annotated[str, typer.Option(help="shopify, netsuite, wms, carrier or * for all.")] = "*",
    path: Annotated[str, typer.Option(help="Glob over the path below the system prefix, e.g. '/v2/shipments*'.")] = "*",
    method: Annotated[str, typer.Option(help="HTTP method, or *.")] = "*",
    operation: Annotated[str | None, typer.Option(help="GraphQL: only requests naming this operation.")] = None,
    mutating_only: Annotated[bool, typer.Option("--mutating-only", help="Only writes.")] = False,
    rate: Annotated[float, typer.Option(min=0, max=1, help="Probability that a matching request is hit.")] = 1.0,
    times: Annotated[int | None, typer.Option(min=1, help="Stop after this many hits.")] = None,
    status: Annotated[int, typer.Option(min=400, max=599, help="HTTP status for `error`.")] = 503,
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay for `latency`.")] = 500,
    hold_seconds: Annotated[
        float, typer.Option(min=0, help="`timeout_after_commit`: how long the lost response is held.")
    ] = 10.0,
    retry_after: Annotated[float, typer.Option(min=0, help="`throttle`: the delay the vendor asks for.")] = 2.0,
    url: UrlOption = None,
) -> None:
    """Put a fault rule in force on the running sandbox."""
    rule = {
        "kind": kind,
        "system": system,
        "path": path,
        "method": method.upper(),
        "operation": operation,
        "mutating_only": mutating_only,
        "rate": rate,
        "times": times,
        "status": status,
        "latency_ms": latency_ms,
        "hold_seconds": hold_seconds,
        "retry_after": retry_after,
    }
    _print(_call("POST", url, "/sandbox/faults", json=rule))


@faults_app.command("list")
def list_faults(url: UrlOption = None) -> None:
    """Show the fault rules in force and how often each has fired."""
    _print(_call("GET", url, "/sandbox/faults"))


@faults_app.command("remove")
def remove_fault(
    rule_id: Annotated[str, typer.Argument(help="The rule's id, as `list` shows it.")], url: UrlOption = None
) -> None:
    """Take one fault rule out of force."""
    _print(_call("DELETE", url, f"/sandbox/faults/{rule_id}"))


@faults_app.command("clear")
def clear_faults(
    system: Annotated[str | None, typer.Option(help="Only this system's rules.")] = None,
    url: UrlOption = None,
) -> None:
    """Take every fault rule out of force."""
    _print(_call("DELETE", url, "/sandbox/faults", params={"system": system} if system else None))
