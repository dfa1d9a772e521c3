"""`orderflow db`: migrate orderflow's database and say where it stands."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orderflow.settings import database_url, get_settings
from orderflow.store.db import Database, upgrade

app = typer.Typer(help="orderflow's database: the inbox, the order view, the cross-references.")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Database URL (default: ORDERFLOW_DATABASE_URL, else SQLite in .orderflow/)."),
]


def _url(url: str | None) -> str:
    return url or database_url(get_settings())


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@app.command("upgrade")
def upgrade_command(url: UrlOption = None) -> None:
    """Apply every migration the code ships (safe to run again)."""
    target = _url(url)
    try:
        upgrade(target)
    except SQLAlchemyError as exc:
        typer.secho(f"cannot migrate {_shown(target)}: {exc.__class__.__name__}: {exc.args[0]}", err=True, fg="red")
        raise typer.Exit(2) from None
    typer.echo(f"{_shown(target)} is at the latest migration")


@app.command("current")
def current_command(url: UrlOption = None) -> None:
    """Show the migration the database is at and the one the code needs; exit 1 if behind."""
    target = _url(url)

    async def check() -> tuple[str | None, str | None]:
        database = Database(target)
        try:
            return await database.current_revision(), database.head_revision()
        finally:
            await database.dispose()

    try:
        current, head = asyncio.run(check())
    except SQLAlchemyError as exc:
        typer.secho(f"cannot read {_shown(target)}: {exc.__class__.__name__}", err=True, fg="red")
        raise typer.Exit(2) from None
    typer.echo(f"database: {current or 'not migrated'}; code: {head}")
    if current != head:
        typer.echo("run `orderflow db upgrade`")
        raise typer.Exit(1)
