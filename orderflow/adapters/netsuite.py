"""NetSuite over SuiteTalk REST: customers, items, credit, sales orders and the documents after them.

Authentication is either OAuth 2.0 client credentials (a JWT assertion signed with the private
key of the certificate mapping, exchanged for a bearer token that is cached until shortly before
it expires) or token-based authentication (OAuth 1.0a with HMAC-SHA256, signed per request).

Every write is safe to repeat. Customers and sales orders are upserted with `PUT .../eid:{id}`;
fulfillments, invoices, return authorizations, receipts and credit memos are record transforms
carrying an `externalId`, and before a transform is sent the adapter looks for a record with that
external id, so a retry after a lost response finds the first document instead of making a second.

NetSuite limits concurrent requests per account, not requests per second. A client-side
semaphore keeps this process under its share; a 429, or a 401 that arrives while we are being
throttled (what NetSuite is reported to send when over the limit), is retried a few times here
with backoff and then handed back as transient.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import jwt
from pydantic import ValidationError

from orderflow.adapters.errors import (
    AdapterError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
    classify_status,
    retry_after_seconds,
    transport_error,
)
from orderflow.canonical import (
    CanonicalModel,
    CreditStanding,
    Customer,
    ErpDocumentRef,
    ErpItem,
    Invoice,
    InvoiceLine,
    Money,
    Order,
    PaymentTerms,
    RefundLine,
    ReturnLine,
    SalesOrder,
    SalesOrderLine,
    SalesOrderRef,
    SalesOrderStatus,
    Shipment,
)
from orderflow.canonical.erp import (
    CreditMemo,
    ReturnAuthorization,
    ReturnAuthorizationLine,
    ReturnAuthorizationStatus,
)
from orderflow.settings import NetSuiteSettings

SYSTEM = "netsuite"
REST = "/services/rest"
TOKEN_PATH = REST + "/auth/oauth2/v1/token"
# Oracle's own example assertion lives 60 minutes, the most NetSuite accepts.
ASSERTION_LIFETIME_SECONDS = 3600
# Refresh a bearer token this long before NetSuite says it expires.
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
# NetSuite sends no Retry-After; a throttle is retried here this many times with fixed backoff.
THROTTLE_ATTEMPTS = 5
THROTTLE_BACKOFF_SECONDS = 0.2
# NetSuiteSettings has no max_throttle_wait_seconds yet; this is the same default as the others.
MAX_THROTTLE_WAIT_SECONDS = 5.0
# A 401 this soon after a 429, or sent among this many parallel calls, is taken as the account
# being over its concurrency limit rather than a bad login.
BURST_WINDOW_SECONDS = 10.0
BURST_PARALLEL_CALLS = 3
SUITEQL_PAGE = 1000
# Documented: external ids are letters, digits, `_` and `-`; `|` breaks parsing.
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/ ]*$")

_ORDER_STATUS = {
    "A": SalesOrderStatus.PENDING_APPROVAL,
    "B": SalesOrderStatus.PENDING_FULFILLMENT,
    "C": SalesOrderStatus.CANCELLED,
    "D": SalesOrderStatus.PARTIALLY_FULFILLED,
    "E": SalesOrderStatus.PARTIALLY_FULFILLED,
    "F": SalesOrderStatus.PENDING_BILLING,
    "G": SalesOrderStatus.BILLED,
    "H": SalesOrderStatus.CLOSED,
}
_STATUS_NAMES = {
    "pending approval": "A",
    "pending fulfillment": "B",
    "cancelled": "C",
    "partially fulfilled": "D",
    "pending billing/partially fulfilled": "E",
    "pending billing": "F",
    "billed": "G",
    "closed": "H",
}


_RETURN_STATUS = {
    "A": ReturnAuthorizationStatus.PENDING_RECEIPT,  # pending approval: nothing can be received yet either
    "B": ReturnAuthorizationStatus.PENDING_RECEIPT,
    "C": ReturnAuthorizationStatus.CLOSED,  # cancelled
    "D": ReturnAuthorizationStatus.PARTIALLY_RECEIVED,
    "E": ReturnAuthorizationStatus.PENDING_REFUND_PARTIALLY_RECEIVED,
    "F": ReturnAuthorizationStatus.PENDING_REFUND,
    "G": ReturnAuthorizationStatus.REFUNDED,
    "H": ReturnAuthorizationStatus.CLOSED,
}
_RETURN_STATUS_NAMES = {
    "pending approval": "A",
    "pending receipt": "B",
    "cancelled": "C",
    "partially received": "D",
    "pending refund/partially received": "E",
    "pending refund": "F",
    "refunded": "G",
    "closed": "H",
}
# A transaction column field (integer) the account defines for orderflow: the quantity a sales order
# line had before orderflow first cut it, so a repeated partial cancellation cuts nothing more.
ORDERED_QUANTITY_FIELD = "custcol_orderflow_ordered_qty"
# The discount item a restocking fee is booked with; the sandbox account's "Restocking fee". A real
# account sets `restocking_fee_item_id` in its NetSuite settings.
DEFAULT_RESTOCKING_FEE_ITEM_ID = "951"
# SuiteTax's reference for the one tax detail orderflow posts: tax the channel computed and collected.
CHANNEL_TAX_REFERENCE = "channel_tax"


class AsyncJob(CanonicalModel):
    """A NetSuite asynchronous request: its job id and how far it has got."""

    job_id: str
    completed: bool
    progress: str
    record_id: str | None = None


# ---------------------------------------------------------------- TBA signing


def percent_encode(value: str) -> str:
    """RFC 5849 §3.6 percent-encoding: everything but the RFC 3986 unreserved set."""
    return quote(value, safe="~-._")


def tba_base_string(method: str, url: str, oauth_params: Mapping[str, str]) -> str:
    """The signature base string of RFC 5849 §3.4.1: method, base URL and normalised parameters.

    Query parameters are part of it; `realm`, `oauth_signature` and any JSON body are not.
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    base_url = f"{scheme}://{host}{parts.path or '/'}"
    pairs = [
        (percent_encode(k), percent_encode(v)) for k, v in oauth_params.items() if k not in ("realm", "oauth_signature")
    ]
    pairs += [(percent_encode(k), percent_encode(v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    normalized = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    return "&".join((method.upper(), percent_encode(base_url), percent_encode(normalized)))


def tba_signature(base_string: str, consumer_secret: str, token_secret: str) -> str:
    """HMAC-SHA256 over the base string, keyed by both secrets, base64-encoded."""
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()


def tba_authorization_header(
    method: str,
    url: str,
    *,
    realm: str,
    consumer_key: str,
    consumer_secret: str,
    token_id: str,
    token_secret: str,
    timestamp: int,
    nonce: str,
) -> str:
    """The `Authorization: OAuth ...` header NetSuite expects for one request."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_token": token_id,
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": str(timestamp),
        "oauth_nonce": nonce,
        "oauth_version": "1.0",
    }
    signature = tba_signature(tba_base_string(method, url, oauth), consumer_secret, token_secret)
    fields = [f'realm="{realm}"'] + [f'{k}="{percent_encode(v)}"' for k, v in oauth.items()]
    fields.append(f'oauth_signature="{percent_encode(signature)}"')
    return "OAuth " + ", ".join(fields)


def client_assertion(settings: NetSuiteSettings, *, token_url: str, now: int, private_key: bytes) -> str:
    """The JWT a client-credentials token request carries, signed with the mapping's private key."""
    headers = {"typ": "JWT", "kid": settings.certificate_id}
    claims = {
        "iss": settings.client_id,
        "scope": "rest_webservices",
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, private_key, algorithm=settings.jwt_algorithm, headers=headers)


# ------------------------------------------------------------------- mapping


def error_from_response(response: httpx.Response) -> AdapterError:
    """An error response as a typed error, keeping NetSuite's code, detail and error path."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    details = body.get("o:errorDetails") or []
    first = details[0] if details and isinstance(details[0], dict) else {}
    code = first.get("o:errorCode") or body.get("error")
    message = first.get("detail") or body.get("error_description") or body.get("title") or response.reason_phrase
    info = {
        "title": body.get("title"),
        "error_path": first.get("o:errorPath"),
        "location": response.headers.get("location"),
        "error_details": details,
    }
    kwargs: dict[str, Any] = {
        "system": SYSTEM,
        "status_code": response.status_code,
        "vendor_code": code,
        "details": info,
    }
    if code == "IDEMPOTENCY_ERROR":
        return ConflictError(message, **kwargs)
    if code == "USER_ERROR" and "already exists" in str(message):
        return ConflictError(message, **kwargs)
    if code in ("invalid_grant", "invalid_client", "invalid_request", "unsupported_grant_type"):
        return AuthenticationError(message, **kwargs)
    return classify_status(
        response.status_code,
        message,
        system=SYSTEM,
        vendor_code=code,
        details=info,
        retry_after=retry_after_seconds(response.headers),
    )


def _money(value: Any, currency: str) -> Money:
    return Money(amount=Decimal(str(value if value not in (None, "") else 0)), currency=currency)


def credit_standing_from_row(row: Mapping[str, Any], currency: str) -> CreditStanding:
    """A SuiteQL customer row (values are strings) as the customer's credit standing."""
    return CreditStanding(
        erp_customer_id=str(row["id"]),
        credit_limit=_money(row.get("creditlimit"), currency),
        balance=_money(row.get("balancesearch"), currency),
        overdue_balance=_money(row.get("overduebalancesearch"), currency),
        unbilled_orders=_money(row.get("unbilledorderssearch"), currency),
        on_credit_hold=str(row.get("oncredithold", "F")).upper() in ("T", "ON", "TRUE"),
    )


# Item weight units: SuiteQL gives the select's internal id, the record API its name.
_OUNCES_PER_UNIT = {
    "1": Decimal(16), "lb": Decimal(16),
    "2": Decimal(1), "oz": Decimal(1),
    "3": Decimal("35.27396195"), "kg": Decimal("35.27396195"),
    "4": Decimal("0.03527396195"), "g": Decimal("0.03527396195"),
}  # fmt: skip
CUSTOMER_COLUMNS = "id, externalid, companyname, firstname, lastname, email, isperson, creditlimit, currency"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def weight_in_ounces(weight: Any, unit: Any) -> Decimal | None:
    """An item's shipping weight in ounces, or None when the ERP has none (or an unknown unit)."""
    factor = _OUNCES_PER_UNIT.get(str(unit or "").strip().lower())
    try:
        value = Decimal(str(weight))
    except (ArithmeticError, ValueError):
        return None
    if factor is None or not value.is_finite() or value <= 0:
        return None
    return (value * factor).quantize(Decimal("0.01"))


def customer_from_row(row: Mapping[str, Any], currency: str) -> Customer:
    """A SuiteQL customer row as a canonical customer.

    The rule for terms: a company (not `isperson`) with a credit limit above zero buys on terms and
    is credit-checked; everyone else (people, companies without a credit line) is prepaid.
    """
    is_company = str(row.get("isperson", "F")).upper() != "T"
    limit = _money(row.get("creditlimit"), currency)
    if is_company and row.get("companyname"):
        name = str(row["companyname"])
    else:
        name = " ".join(str(row[k]) for k in ("firstname", "lastname") if row.get(k)) or f"customer {row['id']}"
    email = row.get("email")
    on_terms = is_company and limit.amount > 0
    return Customer(
        channel_customer_id=None,
        erp_customer_id=str(row["id"]),
        name=name,
        email=email if isinstance(email, str) and _EMAIL.match(email) else None,
        terms=PaymentTerms.TERMS if on_terms else PaymentTerms.PREPAID,
        credit_limit=limit if on_terms else None,
    )


def _sku(value: Any) -> str | None:
    return value if isinstance(value, str) and _SKU.match(value) and len(value) <= 64 else None


def _lines(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    item = record.get("item") or {}
    return [ln for ln in item.get("items", []) if isinstance(ln, dict)]


def _status_code(
    record: Mapping[str, Any], known: Mapping[str, Any], by_name: Mapping[str, str], *, default: str
) -> str:
    # The status letter (`orderStatus.id`); a record read without it names its status in words instead.
    code = (record.get("orderStatus") or {}).get("id")
    if code in known:
        return str(code)
    return by_name.get(str((record.get("status") or {}).get("refName", "")).lower(), default)


def sales_order_from_record(record: Mapping[str, Any], currency: str) -> SalesOrder:
    """An expanded salesOrder record as the canonical sales order."""
    code = _status_code(record, _ORDER_STATUS, _STATUS_NAMES, default="A")
    lines = [
        SalesOrderLine(
            line_number=int(ln["line"]),
            sku=_sku((ln.get("item") or {}).get("refName")),
            erp_item_id=str((ln.get("item") or {}).get("id")),
            quantity=int(ln.get("quantity", 0)),
            quantity_fulfilled=int(ln.get("quantityFulfilled") or 0),
            quantity_billed=int(ln.get("quantityBilled") or 0),
            rate=_money(ln.get("rate"), currency),
            is_closed=bool(ln.get("isClosed", False)),
        )
        for ln in _lines(record)
    ]
    return SalesOrder(
        erp_order_id=str(record["id"]),
        external_id=record.get("externalId"),
        erp_customer_id=str((record.get("entity") or {}).get("id")),
        status=_ORDER_STATUS[code],
        lines=lines,
        total=_money(record.get("total"), currency),
        memo=record.get("memo"),
    )


def invoice_from_record(record: Mapping[str, Any], currency: str) -> Invoice:
    """An expanded invoice (or cash sale) record as the canonical invoice."""
    return Invoice(
        erp_invoice_id=str(record["id"]),
        erp_order_id=str((record.get("createdFrom") or {}).get("id", "")),
        external_id=record.get("externalId"),
        issued_on=date.fromisoformat(str(record["tranDate"])[:10]),
        lines=[
            InvoiceLine(
                sku=_sku((ln.get("item") or {}).get("refName")),
                erp_item_id=str((ln.get("item") or {}).get("id")),
                quantity=int(ln["quantity"]),
                amount=_money(ln.get("amount"), currency),
            )
            for ln in _lines(record)
        ],
        total=_money(record.get("total"), currency),
    )


def return_authorization_from_record(record: Mapping[str, Any], currency: str) -> ReturnAuthorization:
    """An expanded returnAuthorization record as the canonical return authorization."""
    code = _status_code(record, _RETURN_STATUS, _RETURN_STATUS_NAMES, default="B")
    lines = [
        ReturnAuthorizationLine(
            line_number=int(ln["line"]),
            sku=_sku((ln.get("item") or {}).get("refName")),
            erp_item_id=str((ln.get("item") or {}).get("id")),
            quantity=int(ln.get("quantity", 0)),
            quantity_received=int(ln.get("quantityReceived") or 0),
            # On a return authorization NetSuite reports what was credited or refunded as "billed".
            quantity_credited=int(ln.get("quantityBilled") or 0),
            rate=_money(ln.get("rate"), currency),
            is_closed=bool(ln.get("isClosed", False)),
        )
        for ln in _lines(record)
    ]
    return ReturnAuthorization(
        erp_return_authorization_id=str(record["id"]),
        erp_order_id=str((record.get("createdFrom") or {}).get("id", "")),
        external_id=record.get("externalId"),
        status=_RETURN_STATUS[code],
        lines=lines,
        total=_money(record.get("total"), currency),
    )


def credit_memo_from_record(record: Mapping[str, Any], currency: str, record_type: str = "creditMemo") -> CreditMemo:
    """An expanded creditMemo (or cashRefund) record as the canonical credit memo."""
    tax = record.get("taxTotal")
    return CreditMemo(
        erp_credit_memo_id=str(record["id"]),
        external_id=record.get("externalId"),
        created_from_id=str((record.get("createdFrom") or {}).get("id")) if record.get("createdFrom") else None,
        lines=[
            InvoiceLine(
                sku=_sku((ln.get("item") or {}).get("refName")),
                erp_item_id=str((ln.get("item") or {}).get("id")),
                quantity=int(ln["quantity"]),
                amount=_money(ln.get("amount"), currency),
            )
            for ln in _lines(record)
        ],
        total=_money(record.get("total"), currency),
        record_type=record_type,
        tax_total=_money(tax, currency) if tax not in (None, "") else None,
        memo=record.get("memo"),
    )


def credit_adjustments(
    *,
    currency: str,
    tax: Money | None = None,
    shipping: Money | None = None,
    restocking_fee: Money | None = None,
    restocking_fee_item_id: str = DEFAULT_RESTOCKING_FEE_ITEM_ID,
) -> dict[str, Any]:
    """Header money on a credit memo or cash refund: channel tax, shipping, a restocking fee (a discount)."""
    body: dict[str, Any] = {}
    for name, value in (("tax", tax), ("shipping", shipping), ("restocking_fee", restocking_fee)):
        if value is None:
            continue
        if value.currency != currency:
            raise ValidationRejectedError(
                f"{name} is in {value.currency} but the document is in {currency}", system=SYSTEM
            )
        if value.amount < 0:
            raise ValidationRejectedError(f"{name} cannot be negative ({value})", system=SYSTEM)
    if tax is not None and tax.amount:
        # Sales orders and invoices carry no tax in this integration (the channel collects it), so
        # refunded tax is posted as an explicit override rather than computed by the ERP.
        body["taxDetailsOverride"] = True
        body["taxDetails"] = {"items": [{"taxDetailsReference": CHANNEL_TAX_REFERENCE,
                                         "taxAmount": tax.rounded().amount}]}  # fmt: skip
    if shipping is not None and shipping.amount:
        body["shippingCost"] = shipping.rounded().amount
    if restocking_fee is not None and restocking_fee.amount:
        body["discountItem"] = {"id": restocking_fee_item_id}
        body["discountRate"] = -restocking_fee.rounded().amount
    return body


def customer_payload(customer: Customer, subsidiary_id: str) -> dict[str, Any]:
    """A canonical customer as a NetSuite customer body: a company on terms, a person when prepaid."""
    body: dict[str, Any] = {"subsidiary": {"id": subsidiary_id}}
    if customer.terms is PaymentTerms.TERMS:
        body.update(isPerson=False, companyName=customer.name)
    else:
        first, _, last = customer.name.rpartition(" ")
        body.update(isPerson=True, firstName=first or last, lastName=last)
    if customer.email:
        body["email"] = customer.email
    if customer.credit_limit is not None:
        body["creditLimit"] = customer.credit_limit.amount
    return body


def sales_order_payload(
    order: Order,
    *,
    erp_customer_id: str,
    item_ids: Mapping[str, str],
    subsidiary_id: str,
    currency_id: str | None,
    location_id: str | None,
) -> dict[str, Any]:
    """A canonical order as a salesOrder body (without `externalId`, which the upsert URL carries)."""
    missing = sorted({line.sku for line in order.lines if line.sku not in item_ids})
    if missing:
        raise ValidationRejectedError(f"no NetSuite item for SKU(s) {', '.join(missing)}", system=SYSTEM)
    ship_to = order.ship_to
    body: dict[str, Any] = {
        "entity": {"id": erp_customer_id},
        "subsidiary": {"id": subsidiary_id},
        "tranDate": order.placed_at.date().isoformat(),
        "otherRefNum": order.order_number,
        "memo": f"{order.channel.value} {order.order_number}",
        "item": {
            "items": [
                {
                    "item": {"id": item_ids[line.sku]},
                    "quantity": line.quantity,
                    "rate": line.unit_price.amount,
                    "amount": line.net.amount,
                }
                for line in order.lines
            ]
        },
        "shippingAddress": {
            k: v
            for k, v in {
                "addressee": ship_to.name,
                "attention": ship_to.company,
                "addr1": ship_to.line1,
                "addr2": ship_to.line2,
                "city": ship_to.city,
                "state": ship_to.region,
                "zip": ship_to.postal_code,
                "country": ship_to.country,
                "addrPhone": ship_to.phone,
            }.items()
            if v
        },
        "shippingCost": order.shipping_total.amount,
    }
    if currency_id is not None:
        body["currency"] = {"id": currency_id}
    if location_id is not None:
        body["location"] = {"id": location_id}
    return body


def _json_default(value: Any) -> Any:
    # Record JSON takes numbers; a Decimal's shortest float repr keeps the cents as written.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _id_from_location(response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    last = location.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else None


def _suiteql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _check_external_id(external_id: str) -> str:
    if not _EXTERNAL_ID.match(external_id):
        raise ValidationRejectedError(
            f"external id {external_id!r} may hold only letters, digits, '_' and '-'", system=SYSTEM
        )
    return external_id


# -------------------------------------------------------------------- client


class NetSuiteClient:
    """The ERP: customers, credit, sales orders, fulfillments, invoices and returns in NetSuite."""

    def __init__(self, http: httpx.AsyncClient, settings: NetSuiteSettings) -> None:
        self._http = http
        self._settings = settings
        self._base = settings.base_url.rstrip("/")
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self._private_key: bytes | None = None
        self._last_throttled_at = -1e9
        self._in_flight = 0
        self._currencies: dict[str, str] | None = None  # internal id -> ISO code

    # ----------------------------------------------------------- transport

    async def _bearer(self, *, renew: bool = False) -> str:
        async with self._token_lock:
            if renew or self._token is None or time.monotonic() >= self._token_expires_at:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    async def _fetch_token(self) -> None:
        settings = self._settings
        if self._private_key is None:
            try:
                self._private_key = settings.private_key_file.read_bytes()
            except OSError as exc:
                raise AuthenticationError(
                    f"cannot read the M2M private key file {settings.private_key_file}: {exc.strerror}", system=SYSTEM
                ) from None
        token_url = self._base + TOKEN_PATH
        assertion = client_assertion(settings, token_url=token_url, now=int(time.time()), private_key=self._private_key)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        try:
            response = await self._http.post(token_url, data=form, timeout=settings.timeout_seconds)
        except httpx.TransportError as exc:
            raise transport_error(exc, system=SYSTEM) from exc
        if response.status_code != 200:
            raise error_from_response(response)
        body = response.json()
        self._token = str(body["access_token"])
        lifetime = float(body.get("expires_in") or 3600)
        self._token_expires_at = time.monotonic() + max(0.0, lifetime - TOKEN_REFRESH_MARGIN_SECONDS)

    def _tba_header(self, method: str, url: str) -> str:
        s = self._settings
        return tba_authorization_header(
            method,
            url,
            realm=s.account_id,
            consumer_key=s.consumer_key,
            consumer_secret=s.consumer_secret.get_secret_value(),
            token_id=s.token_id,
            token_secret=s.token_secret.get_secret_value(),
            timestamp=int(time.time()),
            nonce=secrets.token_hex(16),
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One REST call with auth, the concurrency cap, throttle retries and error classification."""
        url = str(httpx.URL(self._base + REST + path, params=dict(params) if params else None))
        content = None if body is None else json.dumps(body, default=_json_default).encode()
        renewed = False
        max_wait = getattr(self._settings, "max_throttle_wait_seconds", MAX_THROTTLE_WAIT_SECONDS)
        waited = 0.0
        for attempt in range(1, THROTTLE_ATTEMPTS + 1):
            request_headers = {"Accept": "application/json", **(headers or {})}
            if content is not None:
                request_headers["Content-Type"] = "application/json"
            async with self._slots:
                if self._settings.auth_method == "tba":
                    request_headers["Authorization"] = self._tba_header(method, url)
                else:
                    request_headers["Authorization"] = "Bearer " + await self._bearer()
                self._in_flight += 1
                parallel = self._in_flight
                try:
                    response = await self._http.request(
                        method, url, content=content, headers=request_headers, timeout=self._settings.timeout_seconds
                    )
                except httpx.TransportError as exc:
                    raise transport_error(exc, system=SYSTEM) from exc
                finally:
                    self._in_flight -= 1
            if response.status_code < 400:
                return response
            error = error_from_response(response)
            throttled = response.status_code == 429
            if response.status_code == 401:
                recently_throttled = time.monotonic() - self._last_throttled_at < BURST_WINDOW_SECONDS
                if recently_throttled or parallel >= BURST_PARALLEL_CALLS:
                    # Over the concurrency limit NetSuite may answer 401 INVALID_LOGIN; not a bad login.
                    throttled = True
                elif self._settings.auth_method == "oauth2" and not renewed:
                    renewed = True
                    await self._bearer(renew=True)
                    continue
            if not throttled:
                raise error
            self._last_throttled_at = time.monotonic()
            delay = THROTTLE_BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())
            if attempt == THROTTLE_ATTEMPTS or waited + delay > max_wait:
                if response.status_code == 429:
                    raise RateLimitedError(
                        error.message, retry_after=max(1.0, delay), system=SYSTEM, status_code=429,
                        vendor_code=error.vendor_code, details=error.details,
                    )  # fmt: skip
                raise TransientError(
                    f"refused while over the concurrency limit: {error.message}", system=SYSTEM,
                    status_code=response.status_code, vendor_code=error.vendor_code, details=error.details,
                )  # fmt: skip
            waited += delay
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_record(self, record_type: str, ref: str, *, expand: bool = True) -> dict[str, Any]:
        params = {"expandSubResources": "true"} if expand else None
        response = await self._call("GET", f"/record/v1/{record_type}/{quote(ref, safe=':')}", params=params)
        body = response.json()
        assert isinstance(body, dict)
        return body

    async def _id_by_external_id(self, record_type: str, external_id: str) -> str | None:
        """The internal id of the record with this external id, or None if there is none."""
        try:
            record = await self._get_record(record_type, f"eid:{external_id}", expand=False)
        except NotFoundError:
            return None
        return str(record["id"])

    async def _suiteql(self, query: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = await self._call(
                "POST",
                "/query/v1/suiteql",
                params={"limit": SUITEQL_PAGE, "offset": offset},
                body={"q": query},
                headers={"Prefer": "transient"},
            )
            page = response.json()
            rows += [{k: v for k, v in row.items() if k != "links"} for row in page.get("items", [])]
            if not page.get("hasMore"):
                return rows
            offset += SUITEQL_PAGE

    async def _currency_codes(self) -> dict[str, str]:
        if self._currencies is None:
            rows = await self._suiteql("SELECT id, symbol FROM currency")
            self._currencies = {str(r["id"]): str(r["symbol"]).upper() for r in rows if r.get("symbol")}
        return self._currencies

    async def _currency_of(self, record: Mapping[str, Any]) -> str:
        currency_id = str((record.get("currency") or {}).get("id", ""))
        codes = await self._currency_codes()
        if currency_id not in codes:
            raise ValidationRejectedError(f"NetSuite currency {currency_id!r} has no ISO code", system=SYSTEM)
        return codes[currency_id]

    # ---------------------------------------------------------- customers

    async def upsert_customer(self, customer: Customer, *, external_id: str) -> str:
        """Create or update the customer under our external id; returns NetSuite's internal id."""
        _check_external_id(external_id)
        body = customer_payload(customer, self._settings.subsidiary_id)
        response = await self._call("PUT", f"/record/v1/customer/eid:{external_id}", body=body)
        found = _id_from_location(response) or await self._id_by_external_id("customer", external_id)
        if found is None:
            raise TransientError(f"customer {external_id} was upserted but cannot be read back yet", system=SYSTEM)
        return found

    async def find_customer(self, external_id: str) -> Customer | None:
        """The customer filed under our external id, as the ERP knows them, or None if there is none."""
        _check_external_id(external_id)
        rows = await self._suiteql(
            f"SELECT {CUSTOMER_COLUMNS} FROM customer WHERE externalid = {_suiteql_literal(external_id)}"  # noqa: S608
        )
        return await self._customer_from_rows(rows)

    async def get_customer(self, erp_customer_id: str) -> Customer:
        """A customer by NetSuite internal id, with the payment terms orderflow gives them."""
        if not erp_customer_id.isdigit():
            raise NotFoundError(f"customer id {erp_customer_id!r} is not a NetSuite internal id", system=SYSTEM)
        # The id was checked to be digits above, so it cannot carry SQL.
        rows = await self._suiteql(f"SELECT {CUSTOMER_COLUMNS} FROM customer WHERE id = {erp_customer_id}")  # noqa: S608
        customer = await self._customer_from_rows(rows)
        if customer is None:
            raise NotFoundError(f"no customer {erp_customer_id}", system=SYSTEM)
        return customer

    async def _customer_from_rows(self, rows: list[dict[str, Any]]) -> Customer | None:
        if not rows:
            return None
        codes = await self._currency_codes()
        return customer_from_row(rows[0], codes.get(str(rows[0].get("currency")), "USD"))

    async def get_customer_credit(self, erp_customer_id: str) -> CreditStanding:
        """A customer's credit limit, balance, overdue balance, unbilled orders and hold, from SuiteQL."""
        if not erp_customer_id.isdigit():
            raise NotFoundError(f"customer id {erp_customer_id!r} is not a NetSuite internal id", system=SYSTEM)
        columns = "id, creditlimit, balancesearch, overduebalancesearch, unbilledorderssearch, oncredithold, currency"
        # The id was checked to be digits above, so it cannot carry SQL.
        rows = await self._suiteql(f"SELECT {columns} FROM customer WHERE id = {erp_customer_id}")  # noqa: S608
        if not rows:
            raise NotFoundError(f"no customer {erp_customer_id}", system=SYSTEM)
        codes = await self._currency_codes()
        currency = codes.get(str(rows[0].get("currency")), "USD")
        return credit_standing_from_row(rows[0], currency)

    # --------------------------------------------------------------- items

    async def find_items_by_sku(self, skus: Sequence[str]) -> dict[str, ErpItem]:
        """The item records whose item id is one of these SKUs; unknown SKUs are simply absent."""
        wanted = sorted(set(skus))
        found: dict[str, ErpItem] = {}
        for start in range(0, len(wanted), SUITEQL_PAGE):
            chunk = wanted[start : start + SUITEQL_PAGE]
            literals = ", ".join(_suiteql_literal(s) for s in chunk)
            # Every SKU goes in as a quoted literal with its quotes doubled.
            columns = "id, itemid, displayname, isinactive, weight, weightunit"
            query = f"SELECT {columns} FROM item WHERE itemid IN ({literals})"  # noqa: S608
            rows = await self._suiteql(query)
            for row in rows:
                sku = row.get("itemid")
                if sku in chunk:
                    try:
                        found[sku] = ErpItem(
                            erp_item_id=str(row["id"]), sku=sku, name=str(row.get("displayname") or sku),
                            is_inactive=str(row.get("isinactive", "F")).upper() == "T",
                            weight_oz=weight_in_ounces(row.get("weight"), row.get("weightunit")),
                        )  # fmt: skip
                    except ValidationError:
                        continue  # an item id that is not a usable SKU cannot match an order line
        return found

    # -------------------------------------------------------- sales orders

    async def upsert_sales_order(
        self,
        order: Order,
        *,
        external_id: str,
        erp_customer_id: str,
        item_ids: Mapping[str, str],
        location_id: str | None = None,
    ) -> SalesOrderRef:
        """Create or update the sales order under our external id (`PUT .../eid:`), then read its id."""
        _check_external_id(external_id)
        codes = await self._currency_codes()
        currency_id = next((k for k, v in codes.items() if v == order.currency), None)
        if currency_id is None:
            raise ValidationRejectedError(f"currency {order.currency} is not set up in NetSuite", system=SYSTEM)
        body = sales_order_payload(
            order,
            erp_customer_id=erp_customer_id,
            item_ids=item_ids,
            subsidiary_id=self._settings.subsidiary_id,
            currency_id=currency_id,
            location_id=location_id,
        )
        response = await self._call("PUT", f"/record/v1/salesOrder/eid:{external_id}", body=body)
        found = _id_from_location(response) or await self._id_by_external_id("salesOrder", external_id)
        if found is None:
            raise TransientError(f"sales order {external_id} was upserted but cannot be read back yet", system=SYSTEM)
        return SalesOrderRef(erp_order_id=found, external_id=external_id)

    async def get_sales_order(self, erp_order_id: str | None = None, *, external_id: str | None = None) -> SalesOrder:
        """A sales order with its lines, by internal id or by our external id."""
        if (erp_order_id is None) == (external_id is None):
            raise ValueError("give exactly one of erp_order_id and external_id")
        ref = erp_order_id if erp_order_id is not None else f"eid:{external_id}"
        record = await self._get_record("salesOrder", ref)
        return sales_order_from_record(record, await self._currency_of(record))

    async def close_sales_order(self, erp_order_id: str) -> SalesOrder:
        """Close every open line, which closes the order; an order already closed or billed is left as is."""
        order = await self.get_sales_order(erp_order_id)
        done = {SalesOrderStatus.CLOSED, SalesOrderStatus.CANCELLED, SalesOrderStatus.BILLED}
        open_lines = [line.line_number for line in order.lines if not line.is_closed]
        if order.status in done or not open_lines:
            return order
        body = {"item": {"items": [{"line": n, "isClosed": True} for n in open_lines]}}
        await self._call("PATCH", f"/record/v1/salesOrder/{erp_order_id}", body=body)
        return await self.get_sales_order(erp_order_id)

    # ------------------------------------------------- transformed documents

    async def _transform_once(
        self, source_type: str, source_id: str, target: str, body: dict[str, Any], external_id: str
    ) -> ErpDocumentRef:
        """Transform a record unless a document with our external id already exists."""
        _check_external_id(external_id)
        existing = await self._id_by_external_id(target, external_id)
        if existing is None:
            try:
                response = await self._call(
                    "POST", f"/record/v1/{source_type}/{source_id}/!transform/{target}",
                    body={"externalId": external_id, **body},
                )  # fmt: skip
                existing = _id_from_location(response)
            except ConflictError:
                existing = None  # a concurrent retry made it first; read it back below
            if existing is None:
                existing = await self._id_by_external_id(target, external_id)
            if existing is None:
                raise TransientError(f"{target} {external_id} was created but cannot be read back yet", system=SYSTEM)
        return ErpDocumentRef(record_type=target, erp_id=existing, external_id=external_id)

    async def _plan_lines(
        self,
        source: Mapping[str, Any],
        wanted: Mapping[str, int],
        remaining_field: str | None,
        *,
        item_ids: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Spread SKU quantities over the source's lines; every other line is left out explicitly."""
        ids = {sku: item_id for sku, item_id in (item_ids or {}).items() if sku in wanted}
        by_name = [sku for sku in wanted if sku not in ids]
        if by_name:
            ids.update({sku: item.erp_item_id for sku, item in (await self.find_items_by_sku(by_name)).items()})
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            raise ValidationRejectedError(f"SKU(s) {', '.join(unknown)} are not NetSuite items", system=SYSTEM)
        left = dict(wanted)
        plan: list[dict[str, Any]] = []
        for line in _lines(source):
            item_id = str((line.get("item") or {}).get("id"))
            sku = next((s for s, i in ids.items() if i == item_id and left[s] > 0), None)
            room = int(line.get("quantity", 0))
            if remaining_field is not None:
                room = room - int(line.get(remaining_field) or 0)
            if line.get("isClosed"):
                room = 0
            take = min(room, left[sku]) if sku is not None else 0
            if take > 0:
                assert sku is not None
                left[sku] -= take
                plan.append({"orderLine": line["line"], "quantity": take, "itemReceive": True})
            else:
                plan.append({"orderLine": line["line"], "itemReceive": False})
        short = {s: q for s, q in left.items() if q > 0}
        if short:
            raise ValidationRejectedError(
                "more than the record has left for " + ", ".join(f"{s} ({q} over)" for s, q in sorted(short.items())),
                system=SYSTEM,
            )
        return plan

    async def fulfill_sales_order(
        self,
        erp_order_id: str,
        shipment: Shipment,
        *,
        external_id: str,
        item_ids: Mapping[str, str] | None = None,
    ) -> ErpDocumentRef:
        """Record a shipment as an item fulfillment of the sales order, with its tracking.

        `item_ids` maps the shipment's SKUs to ERP item ids where the caller knows them (master-data
        cross-references); the others are found by item name.
        """
        _check_external_id(external_id)
        existing = await self._id_by_external_id("itemFulfillment", external_id)
        if existing is not None:
            return ErpDocumentRef(record_type="itemFulfillment", erp_id=existing, external_id=external_id)
        order = await self._get_record("salesOrder", erp_order_id)
        wanted: dict[str, int] = {}
        for line in shipment.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        tracking = shipment.tracking
        body = {
            "shipStatus": {"id": "C"},
            "memo": f"{tracking.carrier} {tracking.number}",
            # Field names of the package sublist depend on the account's shipping setup.
            "package": {"items": [{"packageTrackingNumber": tracking.number, "packageDescr": tracking.carrier}]},
            "item": {"items": await self._plan_lines(order, wanted, "quantityFulfilled", item_ids=item_ids)},
        }
        return await self._transform_once("salesOrder", erp_order_id, "itemFulfillment", body, external_id)

    async def invoice_sales_order(self, erp_order_id: str, *, external_id: str) -> Invoice:
        """Bill everything shipped and not yet billed on the sales order (one invoice per external id)."""
        ref = await self._transform_once("salesOrder", erp_order_id, "invoice", {}, external_id)
        record = await self._get_record("invoice", ref.erp_id)
        return invoice_from_record(record, await self._currency_of(record))

    async def close_sales_order_lines(self, erp_order_id: str, quantities: Mapping[str, int]) -> SalesOrder:
        """Cancel unshipped units of a sales order, per SKU, for a partial cancellation.

        `quantities` is how many units of each SKU are cancelled on this order in all, counted
        from what was ordered, so a repeat (a retry after a lost answer) cuts nothing more. A line
        never drops below what was fulfilled or billed; a line with nothing fulfilled that loses
        every unit is closed instead, since a line cannot hold zero. Units that have shipped
        meanwhile cannot be cancelled and are left as they are: compare the result.
        """
        wanted = {sku: qty for sku, qty in quantities.items() if qty > 0}
        record = await self._get_record("salesOrder", erp_order_id)
        lines = _lines(record)
        skus = {id(ln): _sku((ln.get("item") or {}).get("refName")) for ln in lines}
        unknown = sorted(set(wanted) - set(skus.values()))
        if unknown:
            raise ValidationRejectedError(
                f"SKU(s) {', '.join(unknown)} are not on sales order {erp_order_id}", system=SYSTEM
            )
        edits: list[dict[str, Any]] = []
        for sku, total_cancel in sorted(wanted.items()):
            own = [ln for ln in lines if skus[id(ln)] == sku]
            already = 0
            for ln in own:
                ordered = int(ln.get(ORDERED_QUANTITY_FIELD) or ln.get("quantity") or 0)
                kept = int(ln.get("quantityFulfilled") or 0) if ln.get("isClosed") else int(ln.get("quantity") or 0)
                already += max(0, ordered - kept)
            need = total_cancel - already
            # The last lines give up their units first: earlier lines are the likelier to have shipped.
            for ln in reversed(own):
                if need <= 0:
                    break
                if ln.get("isClosed"):
                    continue
                quantity = int(ln.get("quantity") or 0)
                floor = max(int(ln.get("quantityFulfilled") or 0), int(ln.get("quantityBilled") or 0))
                take = min(need, quantity - floor)
                if take <= 0:
                    continue
                need -= take
                edit: dict[str, Any] = {"line": ln["line"], ORDERED_QUANTITY_FIELD: int(ln.get(ORDERED_QUANTITY_FIELD)
                                                                                       or quantity)}  # fmt: skip
                left = quantity - take
                if left == 0:
                    edit["isClosed"] = True
                else:
                    amount = Decimal(str(ln.get("amount") or 0))
                    edit["quantity"] = left
                    edit["amount"] = (amount * left / quantity).quantize(Decimal("0.01"))
                edits.append(edit)
        if edits:
            await self._call("PATCH", f"/record/v1/salesOrder/{erp_order_id}", body={"item": {"items": edits}})
        return await self.get_sales_order(erp_order_id)

    async def find_invoice(self, external_id: str) -> Invoice | None:
        """The invoice filed under our external id (as `invoice_sales_order` made it), or None if there is none."""
        _check_external_id(external_id)
        try:
            record = await self._get_record("invoice", f"eid:{external_id}")
        except NotFoundError:
            return None
        return invoice_from_record(record, await self._currency_of(record))

    async def create_return_authorization(
        self, erp_order_id: str, lines: Sequence[ReturnLine], *, external_id: str
    ) -> ErpDocumentRef:
        """Authorize the return of shipped units of a sales order, net of earlier authorizations."""
        _check_external_id(external_id)
        existing = await self._id_by_external_id("returnAuthorization", external_id)
        if existing is not None:
            return ErpDocumentRef(record_type="returnAuthorization", erp_id=existing, external_id=external_id)
        order = await self._get_record("salesOrder", erp_order_id)
        authorized = await self._authorized_per_order_line(erp_order_id)
        # Only shipped units can come back, and not twice: plan against what is shipped and not
        # authorized already (a closed authorization keeps only what it received).
        shipped_lines = [
            {**ln, "quantity": max(0, int(ln.get("quantityFulfilled") or 0) - authorized.get(int(ln["line"]), 0)),
             "isClosed": False}
            for ln in _lines(order)
        ]  # fmt: skip
        shipped = {**order, "item": {"items": shipped_lines}}
        body = {"item": {"items": await self._plan_lines(shipped, _by_sku(lines), None)}}
        return await self._transform_once("salesOrder", erp_order_id, "returnAuthorization", body, external_id)

    async def _authorized_per_order_line(self, erp_order_id: str) -> dict[int, int]:
        """Units per sales order line that return authorizations made from it still stand for."""
        authorized: dict[int, int] = {}
        for ra_id in await self._return_authorization_ids(erp_order_id, direct_only=True):
            record = await self._get_record("returnAuthorization", ra_id)
            for ln in _lines(record):
                received = int(ln.get("quantityReceived") or 0)
                kept = received if ln.get("isClosed") else max(int(ln.get("quantity") or 0), received)
                order_line = int(ln.get("orderLine") or 0)
                authorized[order_line] = authorized.get(order_line, 0) + kept
        return authorized

    async def _return_authorization_ids(self, erp_order_id: str, *, direct_only: bool = False) -> list[str]:
        if not erp_order_id.isdigit():
            raise NotFoundError(f"sales order id {erp_order_id!r} is not a NetSuite internal id", system=SYSTEM)
        sources = [erp_order_id]
        if not direct_only:
            # A return can also be authorized from the order's invoice or cash sale.
            billed = await self._suiteql(
                "SELECT id FROM transaction WHERE type IN ('CustInvc', 'CashSale') "  # noqa: S608 - digits only
                f"AND createdfrom = {erp_order_id}"
            )
            sources += [str(row["id"]) for row in billed]
        literals = ", ".join(sources)
        rows = await self._suiteql(
            f"SELECT id FROM transaction WHERE type = 'RtnAuth' AND createdfrom IN ({literals}) ORDER BY id"  # noqa: S608
        )
        return [str(row["id"]) for row in rows]

    async def get_return_authorization(self, erp_return_authorization_id: str) -> ReturnAuthorization:
        """A return authorization with what has been received and credited on each line."""
        record = await self._get_record("returnAuthorization", erp_return_authorization_id)
        return return_authorization_from_record(record, await self._currency_of(record))

    async def list_return_authorizations(self, erp_order_id: str) -> list[ReturnAuthorization]:
        """Every return authorization made from the sales order (or its invoice), in any status, oldest first."""
        return [
            await self.get_return_authorization(ra_id) for ra_id in await self._return_authorization_ids(erp_order_id)
        ]

    async def close_return_authorization(self, erp_return_authorization_id: str) -> ReturnAuthorization:
        """Close every open line, so nothing more can be received or credited (expiry, cancel); idempotent."""
        authorization = await self.get_return_authorization(erp_return_authorization_id)
        open_lines = [line.line_number for line in authorization.lines if not line.is_closed]
        if not open_lines:
            return authorization
        body = {"item": {"items": [{"line": n, "isClosed": True} for n in open_lines]}}
        await self._call("PATCH", f"/record/v1/returnAuthorization/{erp_return_authorization_id}", body=body)
        return await self.get_return_authorization(erp_return_authorization_id)

    async def receive_return(
        self,
        erp_return_authorization_id: str,
        lines: Sequence[ReturnLine],
        *,
        external_id: str,
        location_id: str | None = None,
    ) -> ErpDocumentRef:
        """Record units that arrived back against a return authorization (an item receipt).

        `location_id` is the ERP location they go into, such as a write-off location for damaged
        units; without it they go where the authorization's order shipped from.
        """
        _check_external_id(external_id)
        existing = await self._id_by_external_id("itemReceipt", external_id)
        if existing is not None:
            return ErpDocumentRef(record_type="itemReceipt", erp_id=existing, external_id=external_id)
        authorization = await self._get_record("returnAuthorization", erp_return_authorization_id)
        plan = await self._plan_lines(authorization, _by_sku(lines), "quantityReceived")
        body: dict[str, Any] = {"item": {"items": plan}}
        if location_id is not None:
            for line in plan:
                if line.get("itemReceive"):
                    line["location"] = {"id": location_id}
        return await self._transform_once(
            "returnAuthorization", erp_return_authorization_id, "itemReceipt", body, external_id
        )

    async def create_credit_memo(
        self,
        erp_return_authorization_id: str,
        *,
        external_id: str,
        tax: Money | None = None,
        restocking_fee: Money | None = None,
    ) -> ErpDocumentRef:
        """Credit the customer for everything received and not yet credited on a return authorization.

        Lines are credited at the rate they were sold at (net of tax, as the sales order was).
        `tax` is the tax refunded on the channel for these units, posted as an override so the
        memo's total matches the channel's refund; `restocking_fee` is kept back as a discount.
        """
        body = await self._credit_body(erp_return_authorization_id, tax=tax, restocking_fee=restocking_fee)
        return await self._transform_once(
            "returnAuthorization", erp_return_authorization_id, "creditMemo", body, external_id
        )

    async def create_cash_refund(
        self,
        erp_return_authorization_id: str,
        *,
        external_id: str,
        tax: Money | None = None,
        restocking_fee: Money | None = None,
    ) -> ErpDocumentRef:
        """Refund the customer in cash for everything received and not yet credited (as `create_credit_memo`)."""
        body = await self._credit_body(erp_return_authorization_id, tax=tax, restocking_fee=restocking_fee)
        return await self._transform_once(
            "returnAuthorization", erp_return_authorization_id, "cashRefund", body, external_id
        )

    async def _credit_body(
        self, erp_return_authorization_id: str, *, tax: Money | None, restocking_fee: Money | None
    ) -> dict[str, Any]:
        if tax is None and restocking_fee is None:
            return {}
        record = await self._get_record("returnAuthorization", erp_return_authorization_id, expand=False)
        return credit_adjustments(
            currency=await self._currency_of(record), tax=tax, restocking_fee=restocking_fee,
            restocking_fee_item_id=self._restocking_fee_item_id,
        )  # fmt: skip

    @property
    def _restocking_fee_item_id(self) -> str:
        return self._settings.restocking_fee_item_id or DEFAULT_RESTOCKING_FEE_ITEM_ID

    async def get_credit_memo(self, erp_credit_memo_id: str) -> CreditMemo:
        """A credit memo with its lines and total."""
        record = await self._get_record("creditMemo", erp_credit_memo_id)
        return credit_memo_from_record(record, await self._currency_of(record), "creditMemo")

    async def get_cash_refund(self, erp_id: str) -> CreditMemo:
        """A cash refund with its lines and total (in the credit memo's shape)."""
        record = await self._get_record("cashRefund", erp_id)
        return credit_memo_from_record(record, await self._currency_of(record), "cashRefund")

    async def find_credit_memo(self, external_id: str) -> CreditMemo | None:
        """The credit memo filed under our external id, or None if there is none."""
        _check_external_id(external_id)
        try:
            record = await self._get_record("creditMemo", f"eid:{external_id}")
        except NotFoundError:
            return None
        return credit_memo_from_record(record, await self._currency_of(record), "creditMemo")

    async def credit_invoice(
        self,
        erp_invoice_id: str,
        lines: Sequence[RefundLine],
        *,
        external_id: str,
        memo: str | None = None,
        tax: Money | None = None,
        shipping: Money | None = None,
    ) -> ErpDocumentRef:
        """Credit an invoice for a refund made outside orderflow (say, by a person in Shopify admin).

        Each line is credited at exactly the refund line's amount (a Shopify refund line's amount
        already includes its tax); `tax` and `shipping` add header amounts the lines do not carry.
        One credit memo per external id. A refund without any line (money only) cannot be a credit
        memo, which needs an item line, and is refused for an operator to book.
        """
        _check_external_id(external_id)
        existing = await self._id_by_external_id("creditMemo", external_id)
        if existing is not None:
            return ErpDocumentRef(record_type="creditMemo", erp_id=existing, external_id=external_id)
        invoice = await self._get_record("invoice", erp_invoice_id)
        currency = await self._currency_of(invoice)
        wanted: dict[str, int] = {}
        amounts: dict[str, Money] = {}
        for line in lines:
            if line.amount.currency != currency:
                raise ValidationRejectedError(
                    f"refund line {line.line_id} is in {line.amount.currency}; invoice {erp_invoice_id} is in "
                    f"{currency}", system=SYSTEM,
                )  # fmt: skip
            if line.quantity == 0:
                if line.amount.amount:
                    raise ValidationRejectedError(
                        f"refund line {line.line_id} ({line.sku}) refunds money without units; a credit memo line "
                        "needs a quantity", system=SYSTEM,
                    )  # fmt: skip
                continue
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
            amounts[line.sku] = amounts.get(line.sku, Money.zero(currency)) + line.amount
        if not wanted:
            raise ValidationRejectedError(
                f"a refund without item lines cannot be credited against invoice {erp_invoice_id}", system=SYSTEM
            )
        plan = await self._plan_lines(invoice, wanted, None)
        _spread_amounts(plan, invoice, wanted, amounts)
        body: dict[str, Any] = {
            "item": {"items": plan},
            **credit_adjustments(currency=currency, tax=tax, shipping=shipping),
        }
        if memo:
            body["memo"] = memo
        return await self._transform_once("invoice", erp_invoice_id, "creditMemo", body, external_id)

    # --------------------------------------------------------------- async

    async def submit_async(
        self,
        method: Literal["POST", "PUT", "PATCH", "DELETE"],
        record_path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotency_key: str,
    ) -> str:
        """Send a record request for NetSuite to run in the background; returns the job id.

        A repeated idempotency key raises ConflictError whose details' `location` names the
        original job, so a caller that lost the first answer can follow that job instead.
        """
        response = await self._call(
            method,
            "/record/v1/" + record_path.lstrip("/"),
            body=dict(body) if body is not None else None,
            headers={"Prefer": "respond-async", "X-NetSuite-Idempotency-Key": idempotency_key},
        )
        return response.headers["location"].rstrip("/").rsplit("/", 1)[-1]

    async def get_async_job(self, job_id: str) -> AsyncJob:
        """How far a background job has got and, once it succeeded, the record it wrote."""
        job = (await self._call("GET", f"/async/v1/job/{job_id}")).json()
        record_id = None
        if job.get("completed") and job.get("progress") == "succeeded":
            result = await self._call("GET", f"/async/v1/job/{job_id}/task/1/result")
            record_id = _id_from_location(result)
        return AsyncJob(job_id=job_id, completed=bool(job.get("completed")), progress=str(job.get("progress")),
                        record_id=record_id)  # fmt: skip

    async def get_concurrency_limit(self) -> int:
        """The account's concurrency limit (for sizing `max_concurrency`); needs an administrator role."""
        limits = (await self._call("GET", "/system/v1/governanceLimits")).json()
        return int(limits.get("integrationConcurrencyLimit") or limits["accountConcurrencyLimit"])


def _spread_amounts(
    plan: list[dict[str, Any]], source: Mapping[str, Any], wanted: Mapping[str, int], amounts: Mapping[str, Money]
) -> None:
    """Give each planned line its share of its SKU's amount, by quantity, the last line taking the cents left."""
    sku_of = {int(ln["line"]): _sku((ln.get("item") or {}).get("refName")) for ln in _lines(source)}
    left = {sku: amounts[sku].amount for sku in wanted}
    units = dict(wanted)
    for line in plan:
        sku = sku_of.get(int(line["orderLine"]))
        if not line.get("itemReceive") or sku not in left:
            continue
        quantity = int(line["quantity"])
        share = left[sku] if quantity == units[sku] else (left[sku] * quantity / units[sku]).quantize(Decimal("0.01"))
        line["amount"] = share
        left[sku] -= share
        units[sku] -= quantity


def _by_sku(lines: Sequence[ReturnLine]) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    return wanted
