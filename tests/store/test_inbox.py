"""The inbox table on SQLite and PostgreSQL: one row per event, every delivery counted, attempts taken once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxStatus


async def test_a_delivery_is_stored_pending_with_its_body_and_headers(database: Database) -> None:
    raw = b'{"id": 9001, "weird": "\\u0000 bytes"}\xff'

    received = await store.receive(
        database,
        source="shopify",
        event_id="evt-1",
        topic="orders/create",
        headers={"x-shopify-topic": "orders/create"},
        body=raw,
    )

    row = await store.get(database, received.event.id)
    assert row is not None and not received.redelivery
    assert (row.source, row.event_id, row.status, row.body) == ("shopify", "evt-1", InboxStatus.PENDING, raw)
    assert row.headers == {"x-shopify-topic": "orders/create"}
    assert (row.deliveries, row.attempts) == (1, 1)


async def test_concurrent_deliveries_of_one_event_make_one_row_that_counts_them_all(database: Database) -> None:
    async def deliver() -> store.Received:
        return await store.receive(
            database, source="wms", event_id="msg_2Lh9", topic="order.shipped", headers={}, body=b"{}"
        )

    results = await asyncio.gather(*(deliver() for _ in range(20)))

    assert sum(not r.redelivery for r in results) == 1
    (row,) = await store.listing(database)
    assert row.deliveries == 20
    # The same event id from another source is another event.
    other = await store.receive(database, source="carrier", event_id="msg_2Lh9", topic="", headers={}, body=b"{}")
    assert not other.redelivery


async def test_only_one_dispatcher_takes_an_attempt(database: Database) -> None:
    received = await store.receive(database, source="shopify", event_id="e", topic="t", headers={}, body=b"")
    first, second = await store.get(database, received.event.id), await store.get(database, received.event.id)
    assert first is not None and second is not None

    taken = [await store.claim(database, first), await store.claim(database, second)]

    assert taken == [True, False]
    row = await store.get(database, received.event.id)
    assert row is not None and row.attempts == 2


async def test_pending_rows_come_oldest_first_and_settled_ones_leave_the_queue(database: Database) -> None:
    start = store.now() - timedelta(minutes=5)
    ids = []
    for n in range(3):
        received = await store.receive(
            database,
            source="shopify",
            event_id=f"e{n}",
            topic="orders/create",
            headers={},
            body=b"{}",
            received_at=start + timedelta(seconds=n),
        )
        ids.append(received.event.id)
    await store.settle(
        database, ids[1], status=InboxStatus.REJECTED, errors=[{"loc": ["id"], "msg": "missing"}], error="missing id"
    )
    await store.settle(database, ids[2], status=InboxStatus.PENDING, error="Temporal unavailable")

    queued = await store.pending(database, attempted_before=store.now())
    rejected = await store.listing(database, status=InboxStatus.REJECTED, source="shopify")

    assert [row.id for row in queued] == [ids[0], ids[2]]
    assert queued[1].last_error == "Temporal unavailable"
    assert [(r.id, r.errors, r.last_error) for r in rejected] == [
        (ids[1], [{"loc": ["id"], "msg": "missing"}], "missing id")
    ]
    # A row whose attempt just began is not handed to the relay.
    assert await store.pending(database, attempted_before=start) == []
    assert await store.count_by_status(database) == {"pending": 2, "rejected": 1}
