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

    row = await store.get(database, received.id)
    assert row is not None and not received.redelivery and received.status is InboxStatus.PENDING
    assert (row.source, row.event_id, row.status, row.body) == ("shopify", "evt-1", InboxStatus.PENDING, raw)
    assert row.headers == {"x-shopify-topic": "orders/create"}
    # Not yet attempted: the relay takes it next.
    assert (row.deliveries, row.attempts, row.last_attempt_at) == (1, 0, None)


async def test_a_delivery_the_edge_refused_is_stored_settled_and_its_redelivery_says_so(database: Database) -> None:
    errors = [{"loc": ["line_items", "0", "sku"], "msg": "missing"}]

    first = await store.receive(
        database,
        source="shopify",
        event_id="evt-bad",
        topic="orders/create",
        headers={},
        body=b"{}",
        status=InboxStatus.REJECTED,
        errors=errors,
        error="line_items.0.sku: missing",
    )
    again = await store.receive(
        database, source="shopify", event_id="evt-bad", topic="orders/create", headers={}, body=b"{}"
    )

    row = await store.get(database, first.id)
    assert row is not None and row.settled_at is not None
    assert (row.status, row.errors, row.last_error, row.deliveries) == (
        InboxStatus.REJECTED,
        errors,
        "line_items.0.sku: missing",
        2,
    )
    # The redelivery changed nothing but the count, and learned the row's standing.
    assert (again.id, again.redelivery, again.status) == (first.id, True, InboxStatus.REJECTED)
    assert await store.claim_pending(database, attempted_before=store.now()) == []


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
    first, second = await store.get(database, received.id), await store.get(database, received.id)
    assert first is not None and second is not None

    taken = [await store.claim(database, first), await store.claim(database, second)]

    assert taken == [True, False]
    row = await store.get(database, received.id)
    assert row is not None and row.attempts == 1


async def test_concurrent_relays_never_take_the_same_row(database: Database) -> None:
    start = store.now() - timedelta(minutes=1)
    for n in range(30):
        await store.receive(
            database,
            source="shopify",
            event_id=f"e{n}",
            topic="orders/create",
            headers={},
            body=b"{}",
            received_at=start + timedelta(milliseconds=n),
        )

    passes = await asyncio.gather(*(store.claim_pending(database, attempted_before=start, limit=12) for _ in range(4)))

    taken = [row.event_id for rows in passes for row in rows]
    assert sorted(taken) == sorted(f"e{n}" for n in range(30)) and len(set(taken)) == 30
    # Each relay's rows come oldest first; a row whose attempt is under way is nobody else's.
    for rows in passes:
        assert [row.received_at for row in rows] == sorted(row.received_at for row in rows)
    assert await store.claim_pending(database, attempted_before=start) == []


async def test_attempts_given_back_or_settled_pending_are_taken_again_at_once(database: Database) -> None:
    ids = [
        (await store.receive(database, source="wms", event_id=f"m{n}", topic="t", headers={}, body=b"")).id
        for n in range(3)
    ]
    first = await store.claim_pending(database, attempted_before=store.now() - timedelta(seconds=15))
    assert [row.id for row in first] == ids

    # The first found Temporal away; the relay gave the other two back untried.
    await store.settle(database, ids[0], status=InboxStatus.PENDING, error="Temporal unavailable")
    await store.release(database, ids[1:])
    again = await store.claim_pending(database, attempted_before=store.now() - timedelta(seconds=15))

    assert [(row.id, row.attempts) for row in again] == [(ids[0], 2), (ids[1], 1), (ids[2], 1)]
    assert again[0].last_error == "Temporal unavailable"


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
        ids.append(received.id)
    await store.settle(
        database, ids[1], status=InboxStatus.REJECTED, errors=[{"loc": ["id"], "msg": "missing"}], error="missing id"
    )
    await store.settle(database, ids[2], status=InboxStatus.PENDING, error="Temporal unavailable")

    queued = await store.claim_pending(database, attempted_before=store.now() - timedelta(seconds=15))
    rejected = await store.listing(database, status=InboxStatus.REJECTED, source="shopify")

    assert [row.id for row in queued] == [ids[0], ids[2]]
    assert queued[1].last_error == "Temporal unavailable"
    assert [(r.id, r.errors, r.last_error) for r in rejected] == [
        (ids[1], [{"loc": ["id"], "msg": "missing"}], "missing id")
    ]
    # A row whose attempt just began is not handed to another relay.
    assert await store.claim_pending(database, attempted_before=start) == []
    assert await store.count_by_status(database) == {"pending": 2, "rejected": 1}
