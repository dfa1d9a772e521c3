"""The NetSuite simulator's own rules, exercised with plain HTTP (no adapter in between)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from orderflow.settings import SANDBOX_NETSUITE_CERTIFICATE_ID, SANDBOX_NETSUITE_CLIENT_ID

pytestmark = pytest.mark.integration


def assertion(token_url: str, key_file: Path, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": SANDBOX_NETSUITE_CLIENT_ID, "scope": "rest_webservices", "aud": token_url, "iat": now,
              "exp": now + 600, **overrides}  # fmt: skip
    kid = overrides.pop("kid", SANDBOX_NETSUITE_CERTIFICATE_ID)
    claims.pop("kid", None)
    return jwt.encode(claims, key_file.read_bytes(), algorithm="PS256", headers={"kid": kid})


async def request_token(raw: httpx.AsyncClient, base: str, key_file: Path, **overrides: Any) -> httpx.Response:
    token_url = f"{base}/services/rest/auth/oauth2/v1/token"
    return await raw.post(token_url, data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(token_url, key_file, **overrides)})  # fmt: skip


@pytest.fixture
async def ns(sandbox_url: str, m2m_key_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    base = f"{sandbox_url}/netsuite"
    async with httpx.AsyncClient() as raw:
        token = (await request_token(raw, base, m2m_key_file)).json()["access_token"]
    async with httpx.AsyncClient(base_url=base + "/services/rest", headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def error_code(response: httpx.Response) -> str:
    return str(response.json()["o:errorDetails"][0]["o:errorCode"])


async def new_order(ns: httpx.AsyncClient, external_id: str, quantity: int = 2) -> str:
    response = await ns.post("/record/v1/salesOrder", json={
        "externalId": external_id, "entity": {"id": "3001"},
        "item": {"items": [{"item": {"id": "1001"}, "quantity": quantity},
                           {"item": {"id": "1002"}, "quantity": 1}]}})  # fmt: skip
    assert response.status_code == 204
    return response.headers["location"].rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("override", "reason"),
    [({"kid": "other-cert"}, "kid"), ({"iss": "someone-else"}, "iss"), ({"aud": "https://elsewhere/token"}, "Audience"),
     ({"exp": int(time.time()) + 7200}, "60 minutes"), ({"scope": "restlets"}, "scope")],
)  # fmt: skip
async def test_token_endpoint_refuses_a_bad_assertion(
    sandbox_url: str, m2m_key_file: Path, sandbox: httpx.AsyncClient, override: dict[str, Any], reason: str
) -> None:
    async with httpx.AsyncClient() as raw:
        response = await request_token(raw, f"{sandbox_url}/netsuite", m2m_key_file, **override)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    trail = (await sandbox.get("/sandbox/state/netsuite")).json()["auth"]["login_audit_trail"]
    assert reason in trail[-1]["reason"]


async def test_requests_without_login_are_invalid_login(sandbox_url: str) -> None:
    async with httpx.AsyncClient() as raw:
        response = await raw.get(f"{sandbox_url}/netsuite/services/rest/record/v1/customer/3001")
    assert response.status_code == 401
    assert error_code(response) == "INVALID_LOGIN"


async def test_creating_twice_with_one_external_id_is_refused(ns: httpx.AsyncClient) -> None:
    await new_order(ns, "SO-DUP")
    again = await ns.post("/record/v1/salesorder", json={"externalId": "SO-DUP", "entity": {"id": "3001"},
                                                         "item": {"items": [{"item": {"id": "1001"}}]}})  # fmt: skip
    assert again.status_code == 400
    assert again.json()["o:errorDetails"][0]["o:errorPath"] == "externalId"


async def test_get_by_external_id_expands_lines_and_restricts_fields(ns: httpx.AsyncClient) -> None:
    order_id = await new_order(ns, "SO-GET")
    plain = (await ns.get("/record/v1/salesOrder/eid:SO-GET")).json()
    assert plain["id"] == order_id and "links" in plain["item"]
    assert plain["orderStatus"]["id"] == "B"
    expanded = (await ns.get(f"/record/v1/salesOrder/{order_id}", params={"expandSubResources": "true"})).json()
    assert [ln["quantity"] for ln in expanded["item"]["items"]] == [2, 1]
    narrow = (await ns.get(f"/record/v1/salesOrder/{order_id}", params={"fields": "externalId"})).json()
    assert set(narrow) == {"links", "id", "externalId"}
    assert (await ns.get("/record/v1/salesOrder/eid:NOPE")).status_code == 404


async def test_over_fulfilling_and_over_billing_are_refused(ns: httpx.AsyncClient) -> None:
    order_id = await new_order(ns, "SO-OVER")
    over = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/itemFulfillment",
                         json={"item": {"items": [{"orderLine": 1, "quantity": 3}]}})  # fmt: skip
    assert over.status_code == 400
    assert over.json()["o:errorDetails"][0]["o:errorPath"] == "item.items[0].quantity"
    nothing_shipped = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/invoice", json={})
    assert nothing_shipped.status_code == 400
    partial = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/itemFulfillment", json={
        "externalId": "IF-OVER", "item": {"items": [{"orderLine": 1, "quantity": 1},
                                                    {"orderLine": 2, "itemReceive": False}]}})  # fmt: skip
    assert partial.status_code == 204
    dup = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/itemFulfillment", json={"externalId": "IF-OVER"})
    assert dup.status_code == 400
    over_bill = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/invoice",
                              json={"item": {"items": [{"orderLine": 1, "quantity": 2}]}})  # fmt: skip
    assert over_bill.status_code == 400
    order = (await ns.get(f"/record/v1/salesOrder/{order_id}")).json()
    assert order["orderStatus"]["id"] == "E"  # Pending Billing/Partially Fulfilled


async def test_deleting_a_fulfillment_gives_its_quantity_back(ns: httpx.AsyncClient) -> None:
    order_id = await new_order(ns, "SO-DEL")
    made = await ns.post(f"/record/v1/salesOrder/{order_id}/!transform/itemFulfillment", json={})
    fulfillment = made.headers["location"].rsplit("/", 1)[-1]
    assert (await ns.delete(f"/record/v1/salesOrder/{order_id}")).status_code == 400
    assert (await ns.delete(f"/record/v1/itemFulfillment/{fulfillment}")).status_code == 204
    assert (await ns.get(f"/record/v1/salesOrder/{order_id}")).json()["orderStatus"]["id"] == "B"


async def test_suiteql_needs_prefer_transient_and_select(ns: httpx.AsyncClient) -> None:
    no_prefer = await ns.post("/query/v1/suiteql", json={"q": "SELECT id FROM item"})
    assert no_prefer.status_code == 400
    update = await ns.post("/query/v1/suiteql", json={"q": "UPDATE item SET itemid = 'x'"},
                           headers={"Prefer": "transient"})  # fmt: skip
    assert update.status_code == 400


async def test_suiteql_pages_with_has_more_and_total_results(ns: httpx.AsyncClient) -> None:
    query = {"q": "SELECT id, itemid FROM item WHERE itemid IN ('BOLT-M8-S', 'BOLT-M8-M', 'BOLT-M8-L') ORDER BY id"}
    first = (await ns.post("/query/v1/suiteql", params={"limit": 2}, json=query,
                           headers={"Prefer": "transient"})).json()  # fmt: skip
    assert (first["count"], first["hasMore"], first["totalResults"]) == (2, True, 3)
    assert [r["itemid"] for r in first["items"]] == ["BOLT-M8-S", "BOLT-M8-M"]
    assert any(link["rel"] == "next" for link in first["links"])
    second = (await ns.post("/query/v1/suiteql", params={"limit": 2, "offset": 2}, json=query,
                            headers={"Prefer": "transient"})).json()  # fmt: skip
    assert (second["count"], second["hasMore"], second["items"][0]["id"]) == (1, False, "1003")


async def test_transactions_are_queryable_with_string_values(ns: httpx.AsyncClient) -> None:
    order_id = await new_order(ns, "SO-QL")
    rows = (await ns.post("/query/v1/suiteql", json={
        "q": "SELECT id, type, status, foreigntotal FROM transaction WHERE externalid = 'SO-QL'"},
        headers={"Prefer": "transient"})).json()["items"]  # fmt: skip
    assert rows == [{"links": [], "id": order_id, "type": "SalesOrd", "status": "B", "foreigntotal": "58.28"}]


async def test_idempotency_key_without_async_is_refused(ns: httpx.AsyncClient) -> None:
    response = await ns.post("/record/v1/salesOrder", json={}, headers={"X-NetSuite-Idempotency-Key": "k"})
    assert response.status_code == 400
