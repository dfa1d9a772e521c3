"""The sandbox Amazon SP-API over real HTTP: LWA, auth, paging, restricted data, confirmShipment, feeds, limits."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orderflow.sandbox import SandboxConfig
from orderflow.sandbox.seed import CATALOG

pytestmark = pytest.mark.integration

CFG = SandboxConfig()
MARKETPLACE = CFG.amazon_marketplace_id
LWA_FORM = {
    "grant_type": "refresh_token",
    "refresh_token": CFG.amazon_refresh_token,
    "client_id": CFG.amazon_lwa_client_id,
    "client_secret": CFG.amazon_lwa_client_secret,
}
SKUS = [item.sku for item in CATALOG if sum(item.stock.values()) >= 20][:3]
SINCE = "2000-01-01T00:00:00Z"


@pytest.fixture
async def amazon(sandbox_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client for `/amazon`, already holding an LWA access token."""
    async with httpx.AsyncClient(base_url=f"{sandbox_url}/amazon", timeout=10) as client:
        token = (await client.post("/auth/o2/token", data=LWA_FORM)).json()["access_token"]
        client.headers["x-amz-access-token"] = token
        yield client


async def _new_order(amazon: httpx.AsyncClient, *, channel: str = "MFN", **extra: Any) -> dict[str, Any]:
    lines = extra.pop("lines", [{"sku": SKUS[0], "quantity": 2}, {"sku": SKUS[1], "quantity": 1}])
    response = await amazon.post("/sandbox/orders", json={"fulfillment_channel": channel, "lines": lines, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def _state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    return (await sandbox.get("/sandbox/state/amazon")).json()


def _error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


async def test_lwa_exchanges_the_refresh_token_and_refuses_bad_grants(sandbox_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{sandbox_url}/amazon", timeout=10) as lwa:
        good = await lwa.post("/auth/o2/token", data=LWA_FORM)
        bad_grant = await lwa.post("/auth/o2/token", data={**LWA_FORM, "refresh_token": "Atzr|stolen"})
        bad_client = await lwa.post("/auth/o2/token", data={**LWA_FORM, "client_secret": "wrong"})

    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["access_token"].startswith("Atza|")
    assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "invalid_grant")
    assert (bad_client.status_code, bad_client.json()["error"]) == (401, "invalid_client")


async def test_calls_without_a_valid_token_are_refused_and_tokens_expire_after_an_hour(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    params = {"lastUpdatedAfter": SINCE, "marketplaceIds": MARKETPLACE}
    missing = await amazon.get("/orders/2026-01-01/orders", params=params, headers={"x-amz-access-token": ""})
    forged = await amazon.get("/orders/2026-01-01/orders", params=params, headers={"x-amz-access-token": "Atza|x"})
    fresh = await amazon.get("/orders/2026-01-01/orders", params=params)
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 3601})
    expired = await amazon.get("/orders/2026-01-01/orders", params=params)

    assert (missing.status_code, _error_code(missing)) == (403, "Unauthorized")
    assert (forged.status_code, _error_code(forged)) == (403, "Unauthorized")
    assert fresh.status_code == 200
    assert (expired.status_code, _error_code(expired)) == (403, "Unauthorized")
    assert "expired" in expired.json()["errors"][0]["details"]


async def test_search_orders_pages_through_every_order_exactly_once(amazon: httpx.AsyncClient) -> None:
    created = [(await _new_order(amazon, channel="AFN" if n == 2 else "MFN"))["orderId"] for n in range(5)]
    params: dict[str, Any] = {"lastUpdatedAfter": SINCE, "marketplaceIds": MARKETPLACE, "maxResultsPerPage": 2}
    seen: list[str] = []
    pages = 0
    while True:
        response = await amazon.get("/orders/2026-01-01/orders", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [o["orderId"] for o in body["orders"]]
        if "pagination" not in body:
            break
        params = {**params, "paginationToken": body["pagination"]["nextToken"]}

    assert pages == 3
    again = await amazon.get("/orders/2026-01-01/orders", params=params)  # a retried last page
    assert [o["orderId"] for o in again.json()["orders"]] == seen[-1:]
    assert sorted(seen) == sorted(created) and len(seen) == len(set(seen))
    merchant = await amazon.get(
        "/orders/2026-01-01/orders",
        params={"lastUpdatedAfter": SINCE, "marketplaceIds": MARKETPLACE, "fulfilledBy": "MERCHANT"},
    )
    assert {o["fulfillment"]["fulfilledBy"] for o in merchant.json()["orders"]} == {"MERCHANT"}
    assert len(merchant.json()["orders"]) == 4


async def test_search_orders_needs_exactly_one_of_created_after_and_last_updated_after(
    amazon: httpx.AsyncClient,
) -> None:
    neither = await amazon.get("/orders/2026-01-01/orders", params={"marketplaceIds": MARKETPLACE})
    both = await amazon.get(
        "/orders/2026-01-01/orders",
        params={"marketplaceIds": MARKETPLACE, "createdAfter": SINCE, "lastUpdatedAfter": SINCE},
    )
    stale = await amazon.get(
        "/orders/2026-01-01/orders", params={"lastUpdatedAfter": SINCE, "paginationToken": "bm90LWEtdG9rZW4="}
    )

    for response in (neither, both, stale):
        assert (response.status_code, _error_code(response)) == (400, "InvalidInput")


async def test_recipient_pii_is_withheld_without_a_restricted_data_token(amazon: httpx.AsyncClient) -> None:
    order_id = (await _new_order(amazon, buyer_cancel_reason="Found it cheaper"))["orderId"]
    path = f"/orders/2026-01-01/orders/{order_id}"

    plain = (await amazon.get(path, params={"includedData": "RECIPIENT,BUYER,CANCELLATION"})).json()["order"]
    rdt_response = await amazon.post(
        "/tokens/2021-03-01/restrictedDataToken",
        json={"restrictedResources": [{"method": "GET", "path": "/orders/2026-01-01/orders/{orderId}",
                                       "dataElements": ["buyerInfo", "shippingAddress"]}]},
    )  # fmt: skip
    rdt = rdt_response.json()["restrictedDataToken"]
    restricted = await amazon.get(path, headers={"x-amz-access-token": rdt})
    elsewhere = await amazon.get(
        "/orders/2026-01-01/orders", params={"lastUpdatedAfter": SINCE}, headers={"x-amz-access-token": rdt}
    )

    address = plain["recipient"]["deliveryAddress"]
    assert {"name", "addressLine1", "phone"}.isdisjoint(address) and address["postalCode"]
    assert plain["buyer"] == {}
    assert rdt_response.json()["expiresIn"] == 3600
    full = restricted.json()["order"]["recipient"]["deliveryAddress"]
    assert full["name"] and full["addressLine1"] and full["phone"] and full["city"] == address["city"]
    assert (elsewhere.status_code, _error_code(elsewhere)) == (403, "Unauthorized")
    requests = [i["cancellation"]["cancellationRequest"] for i in plain["orderItems"]]
    assert requests == [{"requester": "BUYER", "cancelReason": "Found it cheaper"}] * 2


def _package(ref: str, lines: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "marketplaceId": MARKETPLACE,
        "packageDetail": {
            "packageReferenceId": ref,
            "carrierCode": "UPS",
            "shippingMethod": "Ground",
            "trackingNumber": f"1Z999AA1012345678{ref}",
            "shipDate": "2026-01-02T18:00:00Z",
            "orderItems": [{"orderItemId": item, "quantity": qty} for item, qty in lines],
        },
    }


async def test_confirm_shipment_validates_and_allows_partial_shipments(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    order = await _new_order(amazon)
    first, second = (i["orderItemId"] for i in order["items"])
    url = f"/orders/v0/orders/{order['orderId']}/shipmentConfirmation"
    afn = await _new_order(amazon, channel="AFN")

    unknown = await amazon.post("/orders/v0/orders/111-0000000-0000000/shipmentConfirmation", json=_package("1", []))
    too_many = await amazon.post(url, json=_package("1", [(first, 3)]))
    stranger = await amazon.post(url, json=_package("1", [("99999999999999", 1)]))
    fba = await amazon.post(
        f"/orders/v0/orders/{afn['orderId']}/shipmentConfirmation",
        json=_package("1", [(afn["items"][0]["orderItemId"], 1)]),
    )
    assert (unknown.status_code, _error_code(unknown)) == (404, "NotFound")
    for refused in (too_many, stranger, fba):
        assert (refused.status_code, _error_code(refused)) == (400, "InvalidInput")
    assert (await _state(sandbox))["orders"][0]["status"] == "UNSHIPPED"

    partial = await amazon.post(url, json=_package("1", [(first, 1)]))
    edited = await amazon.post(url, json=_package("1", [(first, 2)]))  # same package: an edit, not a second one
    after_edit = next(o for o in (await _state(sandbox))["orders"] if o["orderId"] == order["orderId"])
    rest = await amazon.post(url, json=_package("2", [(second, 1)]))
    over = await amazon.post(url, json=_package("3", [(first, 1)]))

    assert partial.status_code == edited.status_code == rest.status_code == 204
    assert after_edit["status"] == "PARTIALLY_SHIPPED"
    assert [i["quantityShipped"] for i in after_edit["items"]] == [2, 0]
    assert over.status_code == 400
    final = next(o for o in (await _state(sandbox))["orders"] if o["orderId"] == order["orderId"])
    assert final["status"] == "SHIPPED"
    assert sorted(s["packageReferenceId"] for s in final["shipments"]) == ["1", "2"]


def _ack_feed(order_id: str, status: str) -> bytes:
    return (
        f"<?xml version='1.0'?><AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion>"
        f"<MerchantIdentifier>{CFG.amazon_seller_id}</MerchantIdentifier></Header>"
        f"<MessageType>OrderAcknowledgement</MessageType><Message><MessageID>1</MessageID>"
        f"<OrderAcknowledgement><AmazonOrderID>{order_id}</AmazonOrderID><StatusCode>{status}</StatusCode>"
        f"</OrderAcknowledgement></Message></AmazonEnvelope>"
    ).encode()


def _refund_feed(order_id: str, item_id: str, principal: str) -> bytes:
    return (
        f"<?xml version='1.0'?><AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion>"
        f"<MerchantIdentifier>{CFG.amazon_seller_id}</MerchantIdentifier></Header>"
        f"<MessageType>OrderAdjustment</MessageType><Message><MessageID>1</MessageID><OrderAdjustment>"
        f"<AmazonOrderID>{order_id}</AmazonOrderID><ActionType>Refund</ActionType><AdjustedItem>"
        f"<AmazonOrderItemCode>{item_id}</AmazonOrderItemCode><AdjustmentReason>CustomerReturn</AdjustmentReason>"
        f"<ItemPriceAdjustments><Component><Type>Principal</Type><Amount currency='USD'>{principal}</Amount>"
        f"</Component></ItemPriceAdjustments></AdjustedItem></OrderAdjustment></Message></AmazonEnvelope>"
    ).encode()


async def _submit_feed(amazon: httpx.AsyncClient, feed_type: str, content: bytes) -> str:
    doc = (await amazon.post("/feeds/2021-06-30/documents", json={"contentType": "text/xml; charset=UTF-8"})).json()
    async with httpx.AsyncClient(timeout=10) as storage:  # a presigned URL: no SP-API token
        assert (await storage.put(doc["url"], content=content)).status_code == 200
    response = await amazon.post(
        "/feeds/2021-06-30/feeds",
        json={"feedType": feed_type, "marketplaceIds": [MARKETPLACE], "inputFeedDocumentId": doc["feedDocumentId"]},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["feedId"])


async def _report(amazon: httpx.AsyncClient, feed: dict[str, Any]) -> ET.Element:
    doc = (await amazon.get(f"/feeds/2021-06-30/documents/{feed['resultFeedDocumentId']}")).json()
    async with httpx.AsyncClient(timeout=10) as storage:
        return ET.fromstring((await storage.get(doc["url"])).content)  # noqa: S314 - the sandbox's own report


async def test_an_acknowledgement_feed_moves_through_its_states_and_cancels_the_order(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = (await _new_order(amazon, buyer_cancel_reason="Ordered by mistake"))["orderId"]
    feed_id = await _submit_feed(amazon, "POST_ORDER_ACKNOWLEDGEMENT_DATA", _ack_feed(order_id, "Failure"))

    queued = (await amazon.get(f"/feeds/2021-06-30/feeds/{feed_id}")).json()
    untouched = (await _state(sandbox))["orders"][0]["status"]
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 1.5})
    working = (await amazon.get(f"/feeds/2021-06-30/feeds/{feed_id}")).json()
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 5})
    done = (await amazon.get(f"/feeds/2021-06-30/feeds/{feed_id}")).json()

    assert [queued["processingStatus"], working["processingStatus"], done["processingStatus"]] == [
        "IN_QUEUE", "IN_PROGRESS", "DONE",
    ]  # fmt: skip
    assert untouched == "UNSHIPPED" and "resultFeedDocumentId" not in queued
    report = await _report(amazon, done)
    assert report.findtext(".//MessagesProcessed") == "1" and report.findtext(".//MessagesWithError") == "0"
    state = await _state(sandbox)
    assert state["orders"][0]["status"] == "CANCELLED"
    order = (await amazon.get(f"/orders/2026-01-01/orders/{order_id}")).json()["order"]
    assert order["fulfillment"]["fulfillmentStatus"] == "CANCELLED"
    assert order["orderItems"][0]["cancellation"]["cancellationExecution"]["cancelledBy"] == "MERCHANT"
    assert state["feeds"][0]["effects"] == [f"cancelled {order_id} (buyer request acknowledged)"]


async def test_a_payment_adjustment_feed_refunds_and_its_report_names_refused_messages(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    order = await _new_order(amazon)
    item = order["items"][0]  # two units at the catalogue price, plus tax
    good = await _submit_feed(
        amazon, "POST_PAYMENT_ADJUSTMENT_DATA", _refund_feed(order["orderId"], item["orderItemId"], item["unitPrice"])
    )
    too_much = await _submit_feed(
        amazon, "POST_PAYMENT_ADJUSTMENT_DATA", _refund_feed(order["orderId"], item["orderItemId"], "100000.00")
    )
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    good_feed = (await amazon.get(f"/feeds/2021-06-30/feeds/{good}")).json()
    bad_feed = (await amazon.get(f"/feeds/2021-06-30/feeds/{too_much}")).json()

    assert good_feed["processingStatus"] == bad_feed["processingStatus"] == "DONE"
    assert (await _report(amazon, good_feed)).findtext(".//MessagesWithError") == "0"
    refused = await _report(amazon, bad_feed)
    assert refused.findtext(".//MessagesWithError") == "1"
    assert refused.findtext(".//Result/ResultCode") == "Error"
    assert refused.findtext(".//Result/AdditionalInfo/AmazonOrderID") == order["orderId"]
    (summary,) = (await _state(sandbox))["orders"]
    assert summary["items"][0]["refunded"] == item["unitPrice"]
    assert [r["feedId"] for r in summary["refunds"]] == [good]


async def test_listings_patch_stores_the_merchant_quantity(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    def patch(quantity: int) -> dict[str, Any]:
        value = [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}]
        replace = {"op": "replace", "path": "/attributes/fulfillment_availability", "value": value}
        return {"productType": "PRODUCT", "patches": [replace]}

    url = f"/listings/2021-08-01/items/{CFG.amazon_seller_id}"
    accepted = await amazon.patch(f"{url}/{SKUS[0]}", params={"marketplaceIds": MARKETPLACE}, json=patch(12))
    unknown = await amazon.patch(f"{url}/NO-SUCH-SKU", params={"marketplaceIds": MARKETPLACE}, json=patch(3))

    assert accepted.status_code == 200 and accepted.json()["status"] == "ACCEPTED" and accepted.json()["submissionId"]
    assert accepted.headers["x-amzn-RateLimit-Limit"] == "5"
    assert unknown.json()["status"] == "INVALID" and unknown.json()["issues"]
    listings = (await _state(sandbox))["listings"]
    assert listings[SKUS[0]] == 12 and "NO-SUCH-SKU" not in listings


async def test_each_operation_has_its_own_bucket_with_amazons_headers(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = (await _new_order(amazon))["orderId"]
    params = {"lastUpdatedAfter": SINCE, "marketplaceIds": MARKETPLACE}
    burst = [await amazon.get("/orders/2026-01-01/orders", params=params) for _ in range(21)]
    get_order = await amazon.get(f"/orders/2026-01-01/orders/{order_id}")

    assert [r.status_code for r in burst] == [200] * 20 + [429]
    assert burst[0].headers["x-amzn-RateLimit-Limit"] == "0.0056"
    assert burst[-1].headers["x-amzn-RequestId"]
    assert burst[-1].json() == {
        "errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota for the requested resource.",
                    "details": ""}]
    }  # fmt: skip
    assert get_order.status_code == 200 and get_order.headers["x-amzn-RateLimit-Limit"] == "0.5"
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 180})  # one token back at 0.0056/s
    assert (await amazon.get("/orders/2026-01-01/orders", params=params)).status_code == 200
    assert (await amazon.get("/orders/2026-01-01/orders", params=params)).status_code == 429
    state = await _state(sandbox)
    assert state["throttled"]["searchOrders"] == 2
    searches = [c for c in state["calls"] if c["operation"] == "searchOrders"]
    assert [c["status"] for c in searches] == [200] * 20 + [429, 200, 429]
    assert searches[21]["at"] - searches[20]["at"] >= 180


async def test_rates_can_be_scaled_to_half_of_amazons(amazon: httpx.AsyncClient) -> None:
    scaled = await amazon.put("/sandbox/rate-scale", json={"scale": 0.5})
    params = {"lastUpdatedAfter": SINCE, "marketplaceIds": MARKETPLACE}
    burst = [await amazon.get("/orders/2026-01-01/orders", params=params) for _ in range(11)]

    assert scaled.json() == {"scale": 0.5}
    assert [r.status_code for r in burst] == [200] * 10 + [429]
    assert burst[0].headers["x-amzn-RateLimit-Limit"] == "0.0028"


async def test_demo_mode_places_mfn_and_afn_orders_and_buyer_cancellations(
    amazon: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    demo = {"amazon_orders_per_minute": 600, "amazon_afn_share": 0.3, "amazon_buyer_cancel_share": 0.5,
            "amazon_buyer_cancel_after_seconds": 5}  # fmt: skip
    assert (await sandbox.put("/sandbox/demo", json=demo)).status_code == 200
    await sandbox.post("/sandbox/tick")
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 6})
    await sandbox.post("/sandbox/tick")
    await sandbox.put("/sandbox/demo", json={})
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 6})
    await sandbox.post("/sandbox/tick")

    orders = (await _state(sandbox))["orders"]
    assert len(orders) >= 50
    channels = {o["fulfillmentChannel"] for o in orders}
    assert channels == {"MFN", "AFN"}
    cancelling = [o for o in orders if o["buyerCancellationRequested"]]
    assert cancelling and all(o["fulfillmentChannel"] == "MFN" for o in cancelling)
    assert len(cancelling) < len(orders)
