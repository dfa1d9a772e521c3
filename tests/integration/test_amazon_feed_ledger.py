"""Two workers refunding one Amazon return share the feed ledger in the database: one feed, one refund.

Each "worker" is its own `AmazonClient` (own rate buckets and token) over its own `Database` engine
on the same database, against the sandbox's SP-API over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from integration.test_amazon_contract import order_state, place_order, plentiful_skus, shipment
from orderflow.adapters.amazon import ACKNOWLEDGEMENT_FEED, ADJUSTMENT_FEED, AmazonClient, FeedEntry
from orderflow.adapters.errors import ConflictError, RateLimitedError, TransientError
from orderflow.canonical.money import Money
from orderflow.canonical.returns import Refund, RefundLine
from orderflow.settings import AmazonSettings
from orderflow.store.db import Database
from orderflow.store.feed_ledger import AmazonFeed, AmazonFeedLedger

pytestmark = pytest.mark.integration

CREATE_FEED = {"system": "amazon", "method": "POST", "path": "/feeds/2021-06-30/feeds", "times": 1}


@pytest.fixture
def amazon_settings(sandbox_url: str) -> AmazonSettings:
    """Amazon on the sandbox; no throttle waited out in the call, so a queued feed comes back at once."""
    return AmazonSettings(
        base_url=f"{sandbox_url}/amazon",
        lwa_url=f"{sandbox_url}/amazon/auth/o2/token",
        timeout_seconds=5,
        max_throttle_wait_seconds=0,
    )


@pytest.fixture
async def second_database(database: Database) -> AsyncIterator[Database]:
    """The same database as another worker process opens it."""
    other = Database(database.url, schema=database.schema)
    try:
        yield other
    finally:
        await other.dispose()


@pytest.fixture
def workers(
    http: httpx.AsyncClient, amazon_settings: AmazonSettings, database: Database, second_database: Database
) -> tuple[AmazonClient, AmazonClient]:
    """Two workers' Amazon clients, each with the database ledger through its own engine."""
    return (
        AmazonClient(http, amazon_settings, ledger=AmazonFeedLedger(database)),
        AmazonClient(http, amazon_settings, ledger=AmazonFeedLedger(second_database)),
    )


async def shipped_order(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> tuple[str, Refund]:
    """A shipped MFN order of two units, and a refund of one of them as the return saga builds it."""
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 2)])
    await amazon.confirm_shipment(placed["orderId"], shipment("8101", [(sku, 2)]))
    assert (await order_state(sandbox, placed["orderId"]))["status"] == "SHIPPED"
    order = await amazon.get_order(placed["orderId"])
    line = order.lines[0]
    amount = Money(amount=(line.net + line.tax_total).amount / 2, currency="USD").rounded()
    refund = Refund(
        order_key=order.key,
        lines=[RefundLine(line_id=line.line_id, sku=sku, quantity=1, amount=amount)],
        total=amount,
        reason="return",
    )
    return placed["orderId"], refund


async def feeds(sandbox: httpx.AsyncClient, feed_type: str) -> list[dict[str, Any]]:
    """The feeds of one type Amazon has received."""
    state = (await sandbox.get("/sandbox/state/amazon")).json()
    return [f for f in state["feeds"] if f["feedType"] == feed_type]


async def process_feeds(sandbox: httpx.AsyncClient) -> None:
    """Let Amazon process what it has queued."""
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")


async def test_a_refund_retried_on_another_worker_finds_the_first_workers_feed_and_refunds_once(
    workers: tuple[AmazonClient, AmazonClient], sandbox: httpx.AsyncClient
) -> None:
    first, second = workers
    order_id, refund = await shipped_order(first, sandbox)
    key = "return:amazon:ret-1:refund"

    with pytest.raises(TransientError, match="still"):
        await first.refund(order_id, refund, idempotency_key=key)
    # The retry lands on the other worker, which never saw the first one's createFeed answer.
    with pytest.raises(TransientError, match="still"):
        await second.refund(order_id, refund, idempotency_key=key)
    queued = await feeds(sandbox, ADJUSTMENT_FEED)
    await process_feeds(sandbox)
    done = await second.refund(order_id, refund, idempotency_key=key)
    again = await first.refund(order_id, refund, idempotency_key=key)

    assert len(queued) == 1
    assert [f["feedId"] for f in await feeds(sandbox, ADJUSTMENT_FEED)] == [done.channel_refund_id]
    assert again == done and done.amount == refund.total
    (refunded,) = (await order_state(sandbox, order_id))["refunds"]
    assert Decimal(refunded["amount"]) == refund.total.amount


async def test_two_workers_refunding_one_return_at_the_same_moment_send_one_feed(
    workers: tuple[AmazonClient, AmazonClient], sandbox: httpx.AsyncClient
) -> None:
    first, second = workers
    order_id, refund = await shipped_order(first, sandbox)
    key = "return:amazon:ret-2:refund"

    raced = await asyncio.gather(
        first.refund(order_id, refund, idempotency_key=key),
        second.refund(order_id, refund, idempotency_key=key),
        return_exceptions=True,
    )
    await process_feeds(sandbox)
    made = [await worker.refund(order_id, refund, idempotency_key=key) for worker in workers]

    # Both come back to be retried: the feed is queued, or the other worker is still submitting it.
    assert all(isinstance(outcome, TransientError) for outcome in raced), raced
    assert made[0] == made[1]
    assert [f["feedId"] for f in await feeds(sandbox, ADJUSTMENT_FEED)] == [made[0].channel_refund_id]
    assert len((await order_state(sandbox, order_id))["refunds"]) == 1


async def test_a_refund_whose_create_feed_answer_was_lost_is_parked_not_sent_twice(
    workers: tuple[AmazonClient, AmazonClient], sandbox: httpx.AsyncClient, database: Database
) -> None:
    first, second = workers
    order_id, refund = await shipped_order(first, sandbox)
    key = "return:amazon:ret-3:refund"
    # Amazon creates the feed, then the answer is lost (a 504 after the commit).
    await sandbox.post("/sandbox/faults", json={**CREATE_FEED, "kind": "timeout_after_commit", "hold_seconds": 0.1})

    with pytest.raises(TransientError) as lost:
        await first.refund(order_id, refund, idempotency_key=key)
    # Straight away, the other worker cannot tell a slow first attempt from a dead one: it waits.
    with pytest.raises(TransientError, match="another attempt"):
        await second.refund(order_id, refund, idempotency_key=key)
    # Later than any live attempt could take, the doubt is an operator's to settle.
    await age_submissions(database, by=first.submission_window + timedelta(seconds=5))
    with pytest.raises(ConflictError, match="Seller Central") as parked:
        await second.refund(order_id, refund, idempotency_key=key)
    (sent,) = await feeds(sandbox, ADJUSTMENT_FEED)
    await process_feeds(sandbox)
    # The operator finds the feed in Seller Central and settles the entry; the retry then confirms it.
    assert await AmazonFeedLedger(database).settle(key, feed_id=sent["feedId"])
    done = await second.refund(order_id, refund, idempotency_key=key)

    assert lost.value.status_code == 504
    assert parked.value.vendor_code == "FeedSubmissionUnknown"
    assert done.channel_refund_id == sent["feedId"]
    assert len(await feeds(sandbox, ADJUSTMENT_FEED)) == 1
    assert len((await order_state(sandbox, order_id))["refunds"]) == 1


async def test_a_create_feed_amazon_throttled_frees_the_key_so_the_retry_submits(
    workers: tuple[AmazonClient, AmazonClient], sandbox: httpx.AsyncClient
) -> None:
    first, second = workers
    order_id, refund = await shipped_order(first, sandbox)
    key = "return:amazon:ret-4:refund"
    await sandbox.post("/sandbox/faults", json={**CREATE_FEED, "kind": "throttle", "retry_after": 30})

    with pytest.raises(RateLimitedError):
        await first.refund(order_id, refund, idempotency_key=key)
    # A 429 means Amazon created nothing: the retry submits at once instead of waiting on a doubt.
    with pytest.raises(TransientError, match="still"):
        await second.refund(order_id, refund, idempotency_key=key)
    await process_feeds(sandbox)
    done = await second.refund(order_id, refund, idempotency_key=key)

    assert [f["feedId"] for f in await feeds(sandbox, ADJUSTMENT_FEED)] == [done.channel_refund_id]
    assert len((await order_state(sandbox, order_id))["refunds"]) == 1


async def test_a_cancel_left_in_doubt_by_a_dead_worker_is_sent_again(
    workers: tuple[AmazonClient, AmazonClient], sandbox: httpx.AsyncClient, database: Database
) -> None:
    _, second = workers
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)])
    key = f"order:amazon:{placed['orderId']}:cancel_on_channel"
    # A worker recorded its document long ago and died before createFeed reached Amazon.
    dead = FeedEntry(
        key=key,
        feed_type=ACKNOWLEDGEMENT_FEED,
        amazon_order_id=placed["orderId"],
        document_id="amzn1.tortuga.dead",
        recorded_at=datetime.now(UTC) - timedelta(hours=1),
    )
    await AmazonFeedLedger(database).claim(dead)

    feed_id = await second.cancel_order(placed["orderId"], reason="credit refused", idempotency_key=key)
    again = await second.cancel_order(placed["orderId"], reason="credit refused", idempotency_key=key)
    await process_feeds(sandbox)

    # A repeated acknowledgement would change nothing, so the doubt is resolved by sending it.
    assert again == feed_id
    assert [f["feedId"] for f in await feeds(sandbox, ACKNOWLEDGEMENT_FEED)] == [feed_id]
    assert (await order_state(sandbox, placed["orderId"]))["status"] == "CANCELLED"


async def age_submissions(database: Database, *, by: timedelta) -> None:
    """Date every recorded submission `by` ago, as if the clock had run on since (the test's are seconds old)."""
    async with database.session() as session:
        await session.execute(update(AmazonFeed).values(created_at=datetime.now(UTC) - by))
