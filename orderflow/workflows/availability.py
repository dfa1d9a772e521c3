"""Publishing availability from a saga: in the background and best effort, after stock moves.

Stock is shared by the channels, so when a saga reserves, gives back or restocks units, the
channels that keep their own count (Amazon) are told what the warehouse can still ship. A listing
that cannot be updated must never hold up an order or a refund, so a publication retries a few
times and then only logs: the next publication of the SKU (any saga's) tells the truth again,
since each reads the warehouse afresh. The saga waits for its publications only before it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from orderflow import metrics
    from orderflow.activities.availability import AvailabilityActivities
    from orderflow.canonical.saga import PublishAvailabilityInput

# Sagas begun before availability publishing never publish (`workflow.patched`).
AVAILABILITY_PATCH = "publish-availability"
AVAILABILITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                 maximum_interval=timedelta(seconds=30), maximum_attempts=6)  # fmt: skip
AVAILABILITY_TIMEOUT = timedelta(seconds=60)


class AvailabilityPublications:
    """One saga's availability publications: started in the background, awaited before the saga ends."""

    def __init__(self) -> None:
        self.enabled = False  # decided by the patch when the saga starts
        self.running: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Decide, once at the saga's start, whether this run publishes (a replayed older run does not)."""
        self.enabled = workflow.patched(AVAILABILITY_PATCH)

    def publish(self, skus: Iterable[str]) -> None:
        """Tell the channels, in the background, how many units of these SKUs the warehouse can still ship."""
        wanted = sorted(set(skus))
        if self.enabled and wanted:
            self.running.append(asyncio.ensure_future(self._send(wanted, workflow.now())))

    async def settled(self) -> None:
        """Wait for every publication started (none ever raises)."""
        await asyncio.gather(*self.running)

    async def _send(self, skus: list[str], stock_moved_at: datetime) -> None:
        try:
            await workflow.execute_activity_method(
                AvailabilityActivities.publish_availability,
                PublishAvailabilityInput(skus=skus),
                start_to_close_timeout=AVAILABILITY_TIMEOUT,
                retry_policy=AVAILABILITY_RETRY,
            )
            metrics.inventory_published(stock_moved_at)
        except ActivityError as error:
            workflow.logger.warning("availability of %s not published: %s", ", ".join(skus), error.cause or error)
