"""`orderflow xref ...`: the master-data cross-references accept uses; set one, import a CSV, list them.

Exit codes: 0 done, 1 nothing to delete, 2 bad input (a CSV is imported whole or not at all) or the
database is unreachable or not migrated.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orderflow.canonical import Channel, PaymentTerms
from orderflow.settings import database_url, get_settings
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.store.xref import (
    MODELS,
    CrossReference,
    CrossReferences,
    CustomerXref,
    LocationXref,
    ShipMethodXref,
    SkuXref,
    XrefKind,
)

app = typer.Typer(help="Master data: map a channel's SKUs, customers, ship methods and locations to ours.")
set_app = typer.Typer(help="Create or replace one cross-reference.")
app.add_typer(set_app, name="set")

T = TypeVar("T")
# A CSV bigger than this is not master data someone typed; refuse it rather than hold it in memory.
MAX_IMPORT_BYTES = 50 * 1024 * 1024
# Enough problems to fix a file by, without flooding the terminal.
MAX_REPORTED_ERRORS = 20

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Database URL (default: ORDERFLOW_DATABASE_URL, else SQLite in .orderflow/)."),
]
ChannelArg = Annotated[Channel, typer.Argument(help="The sales channel the key belongs to.")]


def _fail(message: str) -> NoReturn:
    typer.secho(message, err=True, fg="red")
    raise typer.Exit(2)


def _run(url: str | None, action: Callable[[CrossReferences], Awaitable[T]]) -> T:
    """Open the database, refuse it unless migrated, and run one action on its cross-references."""
    target = url or database_url(get_settings())

    async def run() -> T:
        database = Database(target)
        try:
            await database.require_migrated()
            return await action(CrossReferences(database))
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except DatabaseNotMigratedError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        shown = make_url(target).render_as_string(hide_password=True)
        _fail(f"cannot use the database {shown}: {exc.__class__.__name__}")


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """Each field a validation error names, with what is wrong with it."""
    return [(".".join(map(str, e["loc"])) or "row", e["msg"]) for e in error.errors()]


def _mapped(entry: CrossReference) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry.mapped_values().items() if v is not None)


def _set(url: str | None, fields: Mapping[str, object], model: type[CrossReference]) -> None:
    try:
        entry = model.model_validate(fields)
    except ValidationError as exc:
        _fail("; ".join(f"{field}: {message}" for field, message in _problems(exc)))

    async def write(xref: CrossReferences) -> None:
        await xref.set(entry)

    _run(url, write)
    typer.echo(f"{entry.kind.value} {entry.channel.value} {entry.key} -> {_mapped(entry)}")


@set_app.command("sku")
def set_sku(
    channel: ChannelArg,
    sku: Annotated[str, typer.Argument(help="The SKU as the channel sells it.")],
    erp_item: Annotated[str, typer.Option("--erp-item", help="The ERP item's internal id.")],
    wms_sku: Annotated[str | None, typer.Option("--wms-sku", help="The warehouse's SKU (default: the same).")] = None,
    url: UrlOption = None,
) -> None:
    """Map a channel SKU to an ERP item (and a WMS SKU)."""
    _set(url, {"channel": channel, "channel_sku": sku, "erp_item_id": erp_item, "wms_sku": wms_sku}, SkuXref)


@set_app.command("customer")
def set_customer(
    channel: ChannelArg,
    customer: Annotated[str, typer.Argument(help="The customer's id on the channel.")],
    erp_customer: Annotated[str, typer.Option("--erp-customer", help="The ERP customer's internal id.")],
    terms: Annotated[PaymentTerms, typer.Option("--terms", help="prepaid, or terms (credit-checked).")],
    url: UrlOption = None,
) -> None:
    """Map a channel customer to an ERP customer and the terms they buy on."""
    fields = {"channel": channel, "channel_customer_id": customer, "erp_customer_id": erp_customer, "terms": terms}
    _set(url, fields, CustomerXref)


@set_app.command("ship-method")
def set_ship_method(
    channel: ChannelArg,
    ship_method: Annotated[str, typer.Argument(help="The ship method as the channel names it, e.g. Standard.")],
    carrier: Annotated[str, typer.Option("--carrier", help="The carrier, e.g. USPS.")],
    service: Annotated[str, typer.Option("--service", help="The carrier's service, e.g. GroundAdvantage.")],
    url: UrlOption = None,
) -> None:
    """Map a channel ship method to a carrier service."""
    fields = {"channel": channel, "channel_ship_method": ship_method, "carrier": carrier, "carrier_service": service}
    _set(url, fields, ShipMethodXref)


@set_app.command("location")
def set_location(
    channel: ChannelArg,
    location: Annotated[str, typer.Argument(help="The channel's location id.")],
    warehouse: Annotated[str, typer.Option("--warehouse", help="Our warehouse's id in the WMS.")],
    url: UrlOption = None,
) -> None:
    """Map a channel location to a warehouse."""
    _set(url, {"channel": channel, "channel_location_id": location, "warehouse_id": warehouse}, LocationXref)


@app.command("delete")
def delete_command(
    kind: Annotated[XrefKind, typer.Argument(help="sku, customer, ship-method or location.")],
    channel: ChannelArg,
    key: Annotated[str, typer.Argument(help="The channel's key (SKU, customer id, ship method, location id).")],
    url: UrlOption = None,
) -> None:
    """Remove one cross-reference; exit 1 if there was none."""

    async def remove(xref: CrossReferences) -> bool:
        return await xref.delete(kind, channel, key)

    if not _run(url, remove):
        typer.echo(f"no {kind.value} cross-reference for {channel.value} {key}")
        raise typer.Exit(1)
    typer.echo(f"deleted {kind.value} {channel.value} {key}")


@app.command("list")
def list_command(
    kind: Annotated[XrefKind | None, typer.Argument(help="Only this kind (default: all).")] = None,
    channel: Annotated[Channel | None, typer.Option("--channel", help="Only this channel.")] = None,
    url: UrlOption = None,
) -> None:
    """List the cross-references, one a line: kind, channel, key, what it maps to, who set it."""

    async def read(xref: CrossReferences) -> list[CrossReference]:
        return await xref.listing(kind, channel=channel)

    entries = _run(url, read)
    if not entries:
        typer.echo("no cross-references")
        return
    for entry in entries:
        typer.echo(f"{entry.kind.value}\t{entry.channel.value}\t{entry.key}\t{_mapped(entry)}\t{entry.source.value}")


def _kind_of(header: list[str], row: dict[str, str], given: XrefKind | None) -> XrefKind | None:
    """A row's kind: its `kind` column, else --kind, else the one kind whose key column the file has."""
    if "kind" in header:
        try:
            return XrefKind((row.get("kind") or "").strip())
        except ValueError:
            return None
    if given is not None:
        return given
    keyed = [kind for kind, model in MODELS.items() if model.key_field in header]
    return keyed[0] if len(keyed) == 1 else None


def read_csv(path: Path, given: XrefKind | None) -> tuple[list[CrossReference], list[str]]:
    """The cross-references in a CSV file, and every problem found, as `line N, field: why`."""
    if path.stat().st_size > MAX_IMPORT_BYTES:
        return [], [f"{path} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB"]
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        return [], [f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"]
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        return [], [f"{path} is empty: the first line must name the columns"]
    reader.fieldnames = header
    if "kind" not in header and given is None and _kind_of(header, {}, None) is None:
        keys = ", ".join(model.key_field for model in MODELS.values())
        return [], [f"line 1: no `kind` column and no --kind, and the columns name no one key column ({keys})"]
    entries: list[CrossReference] = []
    problems: list[str] = []
    seen: dict[tuple[XrefKind, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(f"line {line}: more values than the header has columns")
            continue
        kind = _kind_of(header, row, given)
        if kind is None:
            kinds = ", ".join(k.value for k in XrefKind)
            problems.append(f"line {line}, kind: {row.get('kind')!r} is not one of {kinds}")
            continue
        model = MODELS[kind]
        known = set(model.model_fields) - {"source", "updated_at"}
        fields = {k: (v.strip() or None if v is not None else None) for k, v in row.items() if k in known}
        try:
            entry = model.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            problems += [f"line {line}, {field}: {message}" for field, message in _problems(exc)]
            continue
        first = seen.setdefault((kind, entry.channel.value, entry.key), line)
        if first != line:
            problems.append(f"line {line}, {model.key_field}: {entry.key!r} is already on line {first}")
            continue
        entries.append(entry)
    if not entries and not problems:
        problems.append(f"{path} has no rows")
    return entries, problems


@app.command("import")
def import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV file; see docs/operations.md for its columns.", exists=True, dir_okay=False, readable=True
        ),
    ],
    kind: Annotated[XrefKind | None, typer.Option("--kind", help="The kind of every row, if no `kind` column.")] = None,
    url: UrlOption = None,
) -> None:
    """Import cross-references from CSV: every row is set, or (on any bad row) none is."""
    entries, problems = read_csv(file, kind)
    if problems:
        for problem in problems[:MAX_REPORTED_ERRORS]:
            typer.secho(problem, err=True, fg="red")
        if len(problems) > MAX_REPORTED_ERRORS:
            typer.secho(f"... and {len(problems) - MAX_REPORTED_ERRORS} more", err=True, fg="red")
        _fail(f"nothing imported from {file}: fix the rows above and import it again")

    async def write(xref: CrossReferences) -> int:
        return await xref.import_all(entries)

    count = _run(url, write)
    typer.echo(f"imported {count} cross-reference(s) from {file}")
