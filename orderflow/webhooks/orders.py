"""The order view over HTTP: where an order is, and which orders wait on an operator.

Reads come from the view the sagas keep current, so they touch neither the ERP nor Temporal and
keep answering while either is down.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the route parameters' annotations,
# and `Views` is local to `orders_router` (one repository per router), which a string cannot reach.

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy.exc import SQLAlchemyError

from orderflow.canonical import Channel
from orderflow.canonical.saga import OrderStatus, OrderView, OrderViewPage
from orderflow.store.db import Database
from orderflow.store.order_view import DEFAULT_PAGE, MAX_PAGE, InvalidCursorError, OrderViews

log = logging.getLogger("orderflow.webhooks.orders")

# Long enough for a database restart; a dashboard polling this simply asks again.
RETRY_AFTER_SECONDS = 5


def _unavailable(exc: SQLAlchemyError) -> HTTPException:
    # The class name only: a driver's message can carry connection details.
    log.warning("order view unreadable: %s", exc.__class__.__name__)
    return HTTPException(503, "the order view's database is unavailable; retry later",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip


def orders_router(database: Database) -> APIRouter:
    """`GET /orders/{key}` and `GET /orders?...`, read from the order view in `database`."""
    views = OrderViews(database)

    def order_views() -> OrderViews:
        return views

    Views = Annotated[OrderViews, Depends(order_views)]
    router = APIRouter(prefix="/orders", tags=["orders"])

    @router.get("")
    async def list_orders(
        views: Views,
        status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
        needs_attention: Annotated[
            bool | None, Query(description="Only orders that do (or do not) wait on an operator.")
        ] = None,
        channel: Annotated[Channel | None, Query(description="Only orders from this channel.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Orders per page, newest first.")] = DEFAULT_PAGE,
        cursor: Annotated[str | None, Query(max_length=40, description="`next_cursor` of the page before.")] = None,
    ) -> OrderViewPage:
        """A page of orders, newest first; follow `next_cursor` for the next."""
        try:
            return await views.list(
                status=status,
                needs_attention=needs_attention,
                channel=channel.value if channel else None,
                limit=limit,
                cursor=cursor,
            )
        except InvalidCursorError as exc:
            raise HTTPException(400, str(exc)) from None
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None

    @router.get("/{key:path}")
    async def get_order(key: str, views: Views) -> OrderView:
        """One order by its saga key (`order:shopify:1042`): status, attention, ids in every system."""
        try:
            view = await views.get(key)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
        if view is None:
            raise HTTPException(404, f"no order {key} in the order view")
        return view

    return router
