"""The order view on SQLite and PostgreSQL: never backwards, idempotent, filtered and paged; over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from typer.testing import CliRunner

from orderflow.canonical import Money
from orderflow.canonical.saga import OrderSagaState, OrderStatus, OrderViewUpdate, StepRecord, SystemIds
from orderflow.cli import app as cli
from orderflow.store.db import Database
from orderflow.store.order_view import InvalidCursorError, OrderViewRow, OrderViews
from orderflow.webhooks.orders import orders_router

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def update(
    order_id: str = "1042",
    version: int = 1,
    status: OrderStatus = OrderStatus.RECEIVED,
    *,
    channel: str = "shopify",
    attention: str | None = None,
    erp_customer_id: str | None = None,
    **ids: Any,
) -> OrderViewUpdate:
    state = OrderSagaState(
        key=f"order:{channel}:{order_id}",
        channel=channel,
        status=status,
        steps_done=[StepRecord(step="accept", at=T0.isoformat(), detail="ok")] if version > 1 else [],
        ids=SystemIds(erp_customer_id=erp_customer_id, **ids),
        needs_attention=attention is not None,
        attention_reason=attention,
        attention_step="post_to_erp" if attention else None,
    )
    return OrderViewUpdate(
        version=version,
        at=T0 + timedelta(minutes=version),
        channel_order_id=order_id,
        channel_customer_id="207119551",
        order_total=Money.of("1234.57", "USD"),
        state=state,
    )


async def rows(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(OrderViewRow)) or 0)


async def test_the_first_update_creates_the_row_with_every_column(database: Database) -> None:
    views = OrderViews(database)
    first = update(version=2, status=OrderStatus.POSTED, erp_customer_id="2001", erp_order_id="4321",
                   tracking_numbers=["1ZA", "1ZB"])  # fmt: skip

    assert await views.record(first) is True

    view = await views.get("order:shopify:1042")
    assert view is not None
    assert (view.channel, view.channel_order_id, view.status) == ("shopify", "1042", OrderStatus.POSTED)
    assert (view.erp_customer_id, view.channel_customer_id, view.erp_order_id) == ("2001", "207119551", "4321")
    assert view.tracking_numbers == ["1ZA", "1ZB"]
    assert view.order_total == Money.of("1234.57", "USD")  # exact: no float on the way
    assert view.step_times == {"accept": T0.isoformat()}
    assert view.version == 2 and view.created_at == view.updated_at == T0 + timedelta(minutes=2)
    assert view.state == first.state


async def test_an_older_update_arriving_late_never_moves_the_view_backwards(database: Database) -> None:
    views = OrderViews(database)
    assert await views.record(update(version=1))
    assert await views.record(update(version=3, status=OrderStatus.ALLOCATED))

    assert await views.record(update(version=2, status=OrderStatus.ACCEPTED)) is False

    view = await views.get("order:shopify:1042")
    assert view is not None and view.version == 3 and view.status is OrderStatus.ALLOCATED
    assert view.created_at == T0 + timedelta(minutes=1) and view.updated_at == T0 + timedelta(minutes=3)
    assert await rows(database) == 1


async def test_the_same_update_twice_is_a_no_op(database: Database) -> None:
    views = OrderViews(database)
    parked = update(version=4, status=OrderStatus.ALLOCATED, attention="ValidationRejectedError: bad address")
    assert await views.record(parked) is True
    before = await views.get("order:shopify:1042")

    assert await views.record(parked) is False

    assert await views.get("order:shopify:1042") == before
    assert await rows(database) == 1


async def seed(views: OrderViews) -> None:
    await views.record(update("1", 2, OrderStatus.COMPLETED, erp_customer_id="2001"))
    await views.record(update("2", 3, OrderStatus.ALLOCATED, attention="ValidationRejectedError: no such SKU"))
    await views.record(update("3", 2, OrderStatus.CREDIT_HOLD, attention="credit hold: over limit",
                              erp_customer_id="3001"))  # fmt: skip
    await views.record(update("A-4", 1, OrderStatus.RECEIVED, channel="amazon"))
    await views.record(update("5", 5, OrderStatus.COMPLETED))


async def test_the_list_filters_by_status_attention_channel_and_customer(database: Database) -> None:
    views = OrderViews(database)
    await seed(views)

    async def keys(**filters: Any) -> list[str]:
        return [view.key for view in (await views.list(**filters)).orders]

    assert await keys(status=OrderStatus.COMPLETED) == ["order:shopify:5", "order:shopify:1"]
    assert await keys(needs_attention=True) == ["order:shopify:3", "order:shopify:2"]
    assert len(await keys(needs_attention=False)) == 3
    assert await keys(channel="amazon") == ["order:amazon:A-4"]
    assert await keys(customer="3001") == ["order:shopify:3"]
    assert await keys(needs_attention=True, status=OrderStatus.CREDIT_HOLD) == ["order:shopify:3"]
    attention = (await views.list(needs_attention=True)).orders
    assert [v.attention_reason for v in attention] == [
        "credit hold: over limit",
        "ValidationRejectedError: no such SKU",
    ]


async def test_pages_follow_the_cursor_newest_first_without_gaps_or_repeats(database: Database) -> None:
    views = OrderViews(database)
    await seed(views)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await views.list(limit=2, cursor=cursor)
        seen += [view.key for view in page.orders]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 3
    assert seen == ["order:shopify:5", "order:amazon:A-4", "order:shopify:3", "order:shopify:2", "order:shopify:1"]
    with pytest.raises(InvalidCursorError):
        await views.list(cursor="'; drop table order_view; --")


# ---- over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture
async def api(database: Database) -> Any:
    app = FastAPI()
    app.include_router(orders_router(database))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders") as client:
        yield client


async def test_get_order_is_404_for_an_unknown_key_and_200_with_the_row(database: Database, api: Any) -> None:
    await OrderViews(database).record(update("2", 3, OrderStatus.ALLOCATED, attention="ValidationRejectedError: x"))

    missing = await api.get("/orders/order:shopify:999")
    found = await api.get("/orders/order:shopify:2")

    assert missing.status_code == 404 and "no order order:shopify:999" in missing.json()["detail"]
    assert found.status_code == 200
    body = found.json()
    assert body["key"] == "order:shopify:2" and body["status"] == "ALLOCATED" and body["version"] == 3
    assert body["needs_attention"] is True and body["attention_reason"] == "ValidationRejectedError: x"
    assert body["order_total"] == {"amount": "1234.57", "currency": "USD"}


async def test_list_orders_filters_pages_and_refuses_bad_parameters(database: Database, api: Any) -> None:
    await seed(OrderViews(database))

    parked = await api.get("/orders", params={"needs_attention": "true"})
    amazon = await api.get("/orders", params={"channel": "amazon"})
    first = await api.get("/orders", params={"status": "COMPLETED", "limit": 1})
    second = await api.get("/orders", params={"status": "COMPLETED", "limit": 1, "cursor": first.json()["next_cursor"]})

    assert [o["key"] for o in parked.json()["orders"]] == ["order:shopify:3", "order:shopify:2"]
    assert [o["key"] for o in amazon.json()["orders"]] == ["order:amazon:A-4"]
    assert [o["key"] for o in first.json()["orders"]] == ["order:shopify:5"]
    assert [o["key"] for o in second.json()["orders"]] == ["order:shopify:1"]
    assert second.json()["next_cursor"] is None
    assert (await api.get("/orders", params={"cursor": "abc"})).status_code == 400
    assert (await api.get("/orders", params={"status": "NOPE"})).status_code == 422
    assert (await api.get("/orders", params={"limit": 0})).status_code == 422


# ---- the CLI ------------------------------------------------------------------------------------------------


def cli_url(database: Database) -> str:
    """The database's URL as a command line gives it (a test schema rides in the connection options)."""
    if database.schema is None:
        return database.url
    return f"{database.url}?options=-csearch_path%3D{database.schema}"


async def test_orders_list_reads_parked_orders_and_reasons_from_the_view(database: Database) -> None:
    await seed(OrderViews(database))
    runner, url = CliRunner(), cli_url(database)

    # The CLI runs its own event loop: give it a thread, as a separate process would have.
    listed = await asyncio.to_thread(
        runner.invoke, cli, ["orders", "list", "--needs-attention", "--json", "--database-url", url]
    )
    table = await asyncio.to_thread(
        runner.invoke, cli, ["orders", "list", "--needs-attention", "--database-url", url], env={"COLUMNS": "200"}
    )

    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["key"], r["attention_reason"]) for r in rows] == [
        ("order:shopify:3", "credit hold: over limit"),
        ("order:shopify:2", "ValidationRejectedError: no such SKU"),
    ]
    assert table.exit_code == 0, table.output
    assert "order:shopify:3" in table.output and "no such SKU" in table.output
    assert "order:shopify:1 " not in table.output


def test_orders_list_against_an_unmigrated_database_says_what_to_run(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["orders", "list", "--database-url", f"sqlite:///{tmp_path / 'new.db'}"])

    assert result.exit_code == 2
    assert "orderflow db upgrade" in result.output
