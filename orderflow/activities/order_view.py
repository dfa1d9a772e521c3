"""The order view's bookkeeping: the saga records each transition, as a local activity."""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from orderflow.canonical.saga import OrderViewUpdate
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.store.order_view import OrderViews

# How long a worker trusts "the database is not migrated" before looking again, so that
# `orderflow db upgrade` on a running system takes effect without a restart.
RECHECK_UNMIGRATED_SECONDS = 30.0


class OrderViewActivities:
    """Keep the order view in step with the sagas (cheap, so local: no round trip through the server)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.views = OrderViews(database)
        self._migrated = False
        self._unmigrated_until = 0.0

    async def _require_migrated(self) -> None:
        if self._migrated:
            return
        if time.monotonic() < self._unmigrated_until:
            raise ApplicationError("the database is not migrated", type="DatabaseNotMigrated", non_retryable=True)
        try:
            await self.database.require_migrated()
        except DatabaseNotMigratedError as exc:
            # Retrying cannot help until someone migrates: fail at once, so the saga moves straight on.
            self._unmigrated_until = time.monotonic() + RECHECK_UNMIGRATED_SECONDS
            raise ApplicationError(str(exc), type="DatabaseNotMigrated", non_retryable=True) from None
        self._migrated = True

    @activity.defn
    async def record_order_view(self, update: OrderViewUpdate) -> None:
        """Record the saga's state at a transition; an older or repeated update changes nothing."""
        await self._require_migrated()
        applied = await self.views.record(update)
        if not applied:
            activity.logger.debug("order view of %s already at or past version %d", update.state.key, update.version)
