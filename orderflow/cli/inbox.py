"""`orderflow inbox ...`: see the webhooks the service stored, and replay one after fixing its mapping.

`replay` maps the stored body again and starts or signals its saga, as the relay would. Exit codes:
0 dispatched (or a duplicate, or ignored), 1 not dispatched (rejected again, failed, Temporal
away, no such row, already dispatched), 2 the database not reachable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orderflow.settings import Settings, database_url, get_settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxEvent, InboxStatus
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.inbox import WebhookInbox

app = typer.Typer(help="The webhook inbox: every authentic delivery, what became of it, and replay.")

# Enough of a body to recognise it; `--full` shows the rest.
PREVIEW_BYTES = 2000
SETTLED = frozenset({InboxStatus.DISPATCHED, InboxStatus.DUPLICATE, InboxStatus.IGNORED})

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Database URL (default: ORDERFLOW_DATABASE_URL, else SQLite in .orderflow/)."),
]


def _database(settings: Settings, url: str | None) -> Database:
    return Database(url or database_url(settings))


def _unreachable(database: Database, exc: Exception) -> typer.Exit:
    shown = make_url(database.url).render_as_string(hide_password=True)
    typer.secho(f"cannot read the inbox in {shown}: {exc.__class__.__name__}", err=True, fg="red")
    return typer.Exit(2)


def _when(event: InboxEvent) -> str:
    return store.aware(event.received_at).isoformat(timespec="seconds")


@app.command("list")
def list_command(
    status: Annotated[InboxStatus | None, typer.Option(help="Only rows in this status.")] = None,
    source: Annotated[str | None, typer.Option(help="Only rows from this source: shopify, wms, carrier.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, newest first.")] = 50,
    url: UrlOption = None,
) -> None:
    """List stored webhooks, newest first."""
    database = _database(get_settings(), url)

    async def read() -> list[InboxEvent]:
        try:
            return list(await store.listing(database, status=status, source=source, limit=limit))
        finally:
            await database.dispose()

    try:
        rows = asyncio.run(read())
    except SQLAlchemyError as exc:
        raise _unreachable(database, exc) from None
    # Plain columns, one row a line: readable, and greppable in a pipe.
    typer.echo(
        f"{'id':>6}  {'received':25}  {'source':8}  {'topic':18}  {'status':10}  {'deliv':>5}  {'tries':>5}  outcome"
    )
    for row in rows:
        outcome = (row.outcome or row.last_error or "").replace("\n", " ")
        typer.echo(
            f"{row.id:>6}  {_when(row):25}  {row.source:8}  {row.topic[:18]:18}  {row.status:10}  "
            f"{row.deliveries:>5}  {row.attempts:>5}  {outcome[:100]}"
        )
    if not rows:
        typer.echo("(no rows)")


@app.command("show")
def show_command(
    inbox_id: Annotated[int, typer.Argument(help="The inbox row's id.")],
    full: Annotated[bool, typer.Option("--full", help="Show the whole body, not a preview.")] = False,
    url: UrlOption = None,
) -> None:
    """Show one stored webhook: headers, body, errors, and what dispatching it came to."""
    database = _database(get_settings(), url)

    async def read() -> InboxEvent | None:
        try:
            return await store.get(database, inbox_id)
        finally:
            await database.dispose()

    try:
        row = asyncio.run(read())
    except SQLAlchemyError as exc:
        raise _unreachable(database, exc) from None
    if row is None:
        typer.secho(f"no inbox row {inbox_id}", err=True, fg="red")
        raise typer.Exit(1)
    body = row.body if full else row.body[:PREVIEW_BYTES]
    typer.echo(f"inbox {row.id}: {row.source} {row.topic} event {row.event_id}")
    typer.echo(f"status: {row.status} (received {_when(row)}, {row.deliveries} deliveries, {row.attempts} attempts)")
    typer.echo(f"workflow: {row.workflow_id or '-'}")
    typer.echo(f"outcome: {row.outcome or '-'}")
    if row.last_error:
        typer.echo(f"last error: {row.last_error}")
    if row.errors:
        typer.echo("errors:")
        for error in row.errors:
            typer.echo(f"  {'.'.join(str(p) for p in error.get('loc', [])) or '-'}: {error.get('msg')}")
    typer.echo("headers:")
    for name, value in sorted(row.headers.items()):
        typer.echo(f"  {name}: {value}")
    more = "" if len(body) == len(row.body) else f"\n... ({len(row.body) - len(body)} more bytes; --full)"
    typer.echo(f"body ({len(row.body)} bytes):\n{body.decode('utf-8', errors='replace')}{more}")


@app.command("replay")
def replay_command(
    inbox_id: Annotated[int, typer.Argument(help="The inbox row's id.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replay a row that was already dispatched (signals it again).")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Map a stored webhook again and start or signal its saga (after its mapping or data was fixed)."""
    settings = get_settings()
    database = _database(settings, url)
    # Replay needs no source's routes, only their mappings; imported here to keep `list` light.
    from orderflow.webhooks.app import SOURCES

    inbox = WebhookInbox(database=database, settings=settings, temporal=TemporalGateway.from_env(), sources=SOURCES)

    async def replay() -> tuple[str, bool]:
        try:
            row = await store.get(database, inbox_id)
            if row is None:
                return f"no inbox row {inbox_id}", False
            if InboxStatus(row.status) in (InboxStatus.DISPATCHED, InboxStatus.DUPLICATE) and not force:
                return f"inbox {inbox_id} was already {row.status} ({row.outcome}); --force to replay it", False
            if not await store.claim(database, row):
                return f"inbox {inbox_id} is being dispatched by another process; try again", False
            answer = await inbox.dispatch(row)
            return f"inbox {inbox_id}: {answer.status.value}: {json.dumps(answer.content)}", answer.status in SETTLED
        finally:
            await database.dispose()

    try:
        message, done = asyncio.run(replay())
    except SQLAlchemyError as exc:
        raise _unreachable(database, exc) from None
    typer.secho(message, fg="green" if done else "red")
    if not done:
        raise typer.Exit(1)
