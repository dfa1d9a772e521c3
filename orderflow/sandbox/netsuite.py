"""The NetSuite simulator: SuiteTalk REST records, transforms, SuiteQL, async jobs and both logins.

It serves the paths a real account serves under `https://{account}.suitetalk.api.netsuite.com`,
below this system's prefix: `/services/rest/record/v1/...`, `/query/v1/suiteql`,
`/auth/oauth2/v1/token`, `/async/v1/job/...` and `/system/v1/governanceLimits`.

Both logins are checked for real and independently of the adapter: a TBA header's HMAC-SHA256
signature is recomputed from the URL the client called, and an M2M client assertion is verified
against the public key of the certificate mapping. Refusals carry NetSuite's generic
`INVALID_LOGIN`; the actual reason goes to the login audit trail in `snapshot()`, as it does in
the real account's UI.

Quantities that NetSuite derives (fulfilled, billed, received, credited) are computed from the
documents transformed from a record, so deleting a fulfillment gives its quantity back, and a
sales order's status always agrees with its documents.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, quote, unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from orderflow.sandbox import seed
from orderflow.sandbox.core import Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule
from orderflow.sandbox.netsuite_suiteql import SuiteQLError, execute, parse

REST = "/services/rest"
TBA_WINDOW_SECONDS = 300  # modeled: how far an oauth_timestamp may be from the server's clock
JWT_MAX_LIFETIME_SECONDS = 3600
JWT_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
INVALID_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)
_TYPE_URL = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"
_TYPE_FRAGMENT = {400: "#sec10.4.1", 404: "#sec10.4.5", 405: "#sec10.4.6", 500: "#sec10.5.1", 503: "#sec10.5.4"}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# Record type ids are case-insensitive in the URL; these are the spellings NetSuite returns.
RECORD_TYPES = {
    t.lower(): t
    for t in (
        "customer",
        "inventoryItem",
        "salesOrder",
        "itemFulfillment",
        "invoice",
        "cashSale",
        "returnAuthorization",
        "itemReceipt",
        "creditMemo",
        "cashRefund",
    )
}
TRANSACTION_TYPES = set(RECORD_TYPES.values()) - {"customer", "inventoryItem"}
# SuiteScript's record.transform pairs that a distributor's integration uses.
TRANSFORMS: dict[str, set[str]] = {
    "salesOrder": {"itemFulfillment", "invoice", "cashSale", "returnAuthorization"},
    "cashSale": {"returnAuthorization"},
    "invoice": {"returnAuthorization", "creditMemo"},
    "returnAuthorization": {"itemReceipt", "creditMemo", "cashRefund"},
}
# SuiteQL's `transaction.type` codes.
TRAN_TYPE_CODES = {
    "salesOrder": "SalesOrd",
    "itemFulfillment": "ItemShip",
    "invoice": "CustInvc",
    "cashSale": "CashSale",
    "returnAuthorization": "RtnAuth",
    "itemReceipt": "ItemRcpt",
    "creditMemo": "CustCred",
    "cashRefund": "CashRfnd",
}
SALES_ORDER_STATUSES = {
    "A": "Pending Approval",
    "B": "Pending Fulfillment",
    "C": "Cancelled",
    "D": "Partially Fulfilled",
    "E": "Pending Billing/Partially Fulfilled",
    "F": "Pending Billing",
    "G": "Billed",
    "H": "Closed",
}
RETURN_STATUSES = {
    "B": "Pending Receipt",
    "D": "Partially Received",
    "E": "Pending Refund/Partially Received",
    "F": "Pending Refund",
    "G": "Refunded",
    "H": "Closed",
}
CURRENCIES = {"1": ("USD", "US Dollar"), "2": ("GBP", "British pound"), "3": ("CAD", "Canadian Dollar"),
              "4": ("EUR", "Euro")}  # fmt: skip
SUBSIDIARIES = {"1": "Orderflow Distribution Inc."}
LOCATIONS = {w.erp_location_id: w.name for w in seed.WAREHOUSES} | dict([seed.RETURNS_WRITE_OFF_LOCATION])
# Discount items a transaction's header discount (`discountItem`) may name.
DISCOUNT_ITEMS = dict([seed.RESTOCKING_FEE_ITEM])
# Documents that give money back; their lines may carry the amount credited, not just the quantity.
CREDIT_TYPES = frozenset({"creditMemo", "cashRefund"})
# SuiteQL returns a select field's internal id; the item weight unit's ids (modelled on the order of
# the SOAP ItemWeightUnit enumeration: lb, oz, kg, g).
WEIGHT_UNIT_IDS = {"lb": "1", "oz": "2", "kg": "3", "g": "4"}


class NetSuiteError(Exception):
    """A request NetSuite refuses, answered in the `o:errorDetails` shape."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        path: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.path = path
        self.title = title
        self.headers = headers or {}
        self.extra = dict(extra or {})


def error_body(status: int, code: str, detail: str, *, path: str | None = None, title: str | None = None,
               type_url: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The body NetSuite REST returns for a failed request."""
    item: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    if path:
        item["o:errorPath"] = path
    item.update(extra or {})
    if type_url is None:
        type_url = (
            "https://tools.ietf.org/html/rfc6585#section-4"
            if status == 429
            # Oracle's idempotency conflict is a 400 whose type points at 409's section.
            else _TYPE_URL + ("#sec10.4.10" if title == "Conflict" else _TYPE_FRAGMENT.get(status, ""))
        )
    return {
        "type": type_url,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "o:errorDetails": [item],
    }


@dataclass
class Answer:
    """A response before it is rendered: kept whole so an async job can replay it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class AsyncJob:
    """A request accepted with `Prefer: respond-async`, run by the engine on its next tick."""

    job_id: str
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    base_url: str
    idempotency_key: str | None
    submitted_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    answer: Answer | None = None

    @property
    def progress(self) -> str:
        """`pending` until run, then `succeeded` or `failed` by the outcome's status."""
        if self.answer is None:
            return "pending"
        return "failed" if self.answer.status >= 400 else "succeeded"


class GovernanceSettings(BaseModel):
    """Sandbox-only knobs for concurrency governance (`PUT /netsuite/sandbox/governance`)."""

    model_config = ConfigDict(extra="forbid")

    # Real requests take hundreds of milliseconds; without some service time, requests on one
    # event loop never overlap and the concurrency limit could not be observed.
    service_seconds: float = Field(default=0.01, ge=0, le=30)
    # "throttle": 429 as Oracle documents for REST; "slow_login": the slow 401 INVALID_LOGIN
    # that people report seeing when an account is over its limit.
    over_limit_answer: Literal["throttle", "slow_login"] = "throttle"
    slow_login_seconds: float = Field(default=0.5, ge=0, le=30)


def _enc(value: str) -> str:
    """RFC 3986 percent-encoding, as RFC 5849 §3.6 requires."""
    return quote(value, safe="~-._")


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(value) from None


def _num(value: Decimal | int) -> float | int:
    """A JSON number: record JSON carries numbers, not strings."""
    if isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


def _ref(value: Any) -> str | None:
    """The id of a `{"id": ...}` reference (NetSuite also accepts a bare id)."""
    if isinstance(value, dict):
        raw = value.get("id")
        return None if raw is None else str(raw)
    if isinstance(value, str | int):
        return str(value)
    return None


class NetSuiteSimulator(Simulator):
    """A NetSuite account speaking SuiteTalk REST: records, transforms, SuiteQL, async, governance."""

    name = "netsuite"
    read_only_posts = ("/services/rest/query/v1/suiteql", "/services/rest/auth/oauth2/v1/token")

    def reset(self) -> None:
        """Back to the seed: the catalogue's items, the seed customers, no transactions, no sessions."""
        self.records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in RECORD_TYPES.values()}
        self.credit_seed: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        self.next_entity_id = 4001
        self.next_transaction_id = 10001
        self.tran_numbers: dict[str, int] = {}
        self.nonces: dict[tuple[str, str, str], float] = {}
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.login_audit_trail: list[dict[str, str]] = []
        self.jobs: dict[str, AsyncJob] = {}
        self.idempotency_keys: dict[str, str] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        self.rejected_over_limit = 0
        self.governance = GovernanceSettings()
        self._public_key: Any = None
        for item in seed.CATALOG:
            self.records["inventoryItem"][item.erp_item_id] = {
                "id": item.erp_item_id,
                "itemId": item.sku,
                "displayName": item.name,
                "isInactive": False,
                "basePrice": item.price,
                "weight": item.weight_oz,
                "weightUnit": "oz",
            }
        for c in seed.CUSTOMERS:
            is_person = c.terms == "prepaid"
            first, _, last = c.name.partition(" ")
            record: dict[str, Any] = {
                "id": c.erp_customer_id,
                "entityId": c.entity_id,
                "isPerson": is_person,
                "email": c.email,
                "subsidiary": {"id": "1"},
                "currency": {"id": "1"},
                "creditLimit": c.credit_limit,
                "creditHoldOverride": {"id": "ON" if c.on_credit_hold else "AUTO"},
                "terms": {"id": "2", "refName": "Net 30"} if c.terms == "terms" else None,
                "defaultAddress": f"{c.street1}\n{c.city} {c.state} {c.zip}",
            }
            if is_person:
                record.update(firstName=first, lastName=last)
            else:
                record["companyName"] = c.name
            if c.external_id:
                record["externalId"] = c.external_id
            self.records["customer"][c.erp_customer_id] = {k: v for k, v in record.items() if v is not None}
            self.credit_seed[c.erp_customer_id] = (c.balance, c.overdue_balance, c.unbilled_orders)

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.reset()

    # ------------------------------------------------------------------ routes

    def router(self) -> APIRouter:
        """SuiteTalk REST under `/services/rest`, plus the sandbox's governance knob."""
        router = APIRouter(tags=["netsuite"])

        @router.api_route(REST + "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def services(request: Request, rest: str) -> Response:
            return await self._serve(request, rest)

        @router.get("/sandbox/governance")
        async def get_governance() -> GovernanceSettings:
            return self.governance

        @router.put("/sandbox/governance")
        async def set_governance(body: GovernanceSettings) -> GovernanceSettings:
            self.governance = body
            return body

        return router

    async def _serve(self, request: Request, rest: str) -> Response:
        base_url = self._base_url(request)
        if rest == "auth/oauth2/v1/token":
            return self._render(await self._token_endpoint(request, base_url))
        # Concurrency governance counts every request to the account, authenticated or not.
        if self.in_flight >= self.ctx.config.netsuite_max_concurrency:
            self.rejected_over_limit += 1
            if self.governance.over_limit_answer == "slow_login":
                await asyncio.sleep(self.governance.slow_login_seconds)
                return self._render(Answer(401, body=error_body(401, "INVALID_LOGIN", INVALID_LOGIN_DETAIL,
                                                                type_url=_TYPE_URL)))  # fmt: skip
            return self._render(Answer(429, body=error_body(
                429, "CONCURRENCY_LIMIT_EXCEEDED",
                "Concurrent request limit exceeded. Request blocked.")))  # fmt: skip
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.governance.service_seconds:
                await asyncio.sleep(self.governance.service_seconds)
            refusal = self._authenticate(request)
            if refusal is not None:
                self.login_audit_trail.append({"at": self.ctx.clock.now().isoformat(), "path": rest, "reason": refusal})
                return self._render(Answer(401, body=error_body(401, "INVALID_LOGIN", INVALID_LOGIN_DETAIL,
                                                                type_url=_TYPE_URL)))  # fmt: skip
            body = await request.body()
            query = dict(parse_qsl(request.url.query, keep_blank_values=True))
            prefer = request.headers.get("prefer", "").lower()
            key = request.headers.get("x-netsuite-idempotency-key")
            try:
                if "respond-async" in prefer and rest.startswith("record/"):
                    return self._render(self._submit_job(request.method, rest, query, body, base_url, key))
                if key is not None:
                    raise NetSuiteError(
                        400,
                        "INVALID_HEADER",
                        "The X-NetSuite-Idempotency-Key header is supported only with Prefer: respond-async.",
                        extra={"o:errorHeader": "X-NetSuite-Idempotency-Key"},
                    )
                answer = self._dispatch(request.method, rest, query, body, base_url, prefer)
            except NetSuiteError as exc:
                answer = self._error_answer(exc)
            return self._render(answer)
        finally:
            self.in_flight -= 1

    @staticmethod
    def _base_url(request: Request) -> str:
        """The URL of this account's REST root as the client addressed it (prefix included)."""
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1")
        root = path[: path.index(REST)] if REST in path else ""
        return f"{request.url.scheme}://{request.url.netloc}{root}"

    @staticmethod
    def _error_answer(exc: NetSuiteError) -> Answer:
        return Answer(
            exc.status,
            exc.headers,
            error_body(exc.status, exc.code, exc.detail, path=exc.path, title=exc.title, extra=exc.extra),
        )

    @staticmethod
    def _render(answer: Answer) -> Response:
        if answer.body is None:
            return Response(status_code=answer.status, headers=answer.headers)
        media = "application/vnd.oracle.resource+json; type=error" if answer.status >= 400 else "application/json"
        content = json.dumps(answer.body, default=_json_default).encode()
        return Response(content=content, status_code=answer.status, headers=answer.headers, media_type=media)

    def _dispatch(
        self, method: str, rest: str, query: dict[str, str], body: bytes, base_url: str, prefer: str
    ) -> Answer:
        parts = rest.strip("/").split("/")
        if parts[:2] == ["record", "v1"] and len(parts) >= 3:
            return self._record_route(method, parts[2:], query, body, base_url)
        if rest == "query/v1/suiteql" and method == "POST":
            return self._suiteql(query, body, base_url, prefer)
        if parts[:3] == ["async", "v1", "job"] and len(parts) >= 4 and method == "GET":
            return self._job_route(parts[3:], base_url)
        if rest == "system/v1/governanceLimits" and method == "GET":
            limit = self.ctx.config.netsuite_max_concurrency
            return Answer(200, body={"accountConcurrencyLimit": limit, "accountUnallocatedConcurrencyLimit": limit,
                                     "integrationLimitType": "accountLimit"})  # fmt: skip
        raise NetSuiteError(404, "INVALID_URL", f"The requested URL {REST}/{rest} was not found.")

    # ------------------------------------------------------------ authentication

    def _authenticate(self, request: Request) -> str | None:
        """None when the request is signed in; otherwise why not (for the login audit trail)."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            expires = self.tokens.get(credentials.strip())
            if expires is None:
                return "unknown bearer token"
            if self.ctx.clock.timestamp() >= expires:
                return "bearer token expired"
            return None
        if scheme.lower() == "oauth":
            return self._check_tba(request, credentials)
        return "no Authorization header"

    def _check_tba(self, request: Request, credentials: str) -> str | None:
        config = self.ctx.config
        params = {k: unquote(v) for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', credentials)}
        if params.get("realm", "").upper().replace("-", "_") != config.netsuite_account_id.upper():
            return "wrong realm"
        if params.get("oauth_signature_method") != "HMAC-SHA256":
            return "signature method must be HMAC-SHA256"
        if params.get("oauth_version", "1.0") != "1.0":
            return "oauth_version must be 1.0"
        if params.get("oauth_consumer_key") != config.netsuite_consumer_key:
            return "unknown consumer key"
        if params.get("oauth_token") != config.netsuite_token_id:
            return "unknown token"
        nonce = params.get("oauth_nonce", "")
        if not nonce:
            return "missing nonce"
        try:
            timestamp = int(params.get("oauth_timestamp", ""))
        except ValueError:
            return "missing or malformed timestamp"
        now = self.ctx.clock.timestamp()
        if abs(now - timestamp) > TBA_WINDOW_SECONDS:
            return f"timestamp {timestamp} is outside the window around the server clock {int(now)}"
        signature = params.get("oauth_signature", "")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        expected = tba_signature(
            request.method,
            f"{request.url.scheme}://{request.url.netloc}{raw_path.decode('latin-1')}",
            request.url.query,
            {k: v for k, v in params.items() if k.startswith("oauth_") and k != "oauth_signature"},
            config.netsuite_consumer_secret,
            config.netsuite_token_secret,
        )
        if not hmac.compare_digest(signature, expected):
            return "signature does not match"
        seen = (params["oauth_consumer_key"], params["oauth_token"], nonce)
        # Forget nonces once their timestamps are outside the window: replays of those fail anyway.
        self.nonces = {k: t for k, t in self.nonces.items() if t >= now - 2 * TBA_WINDOW_SECONDS}
        if seen in self.nonces:
            return "nonce already used"
        self.nonces[seen] = float(timestamp)
        return None

    async def _token_endpoint(self, request: Request, base_url: str) -> Answer:
        """`POST /auth/oauth2/v1/token`: client credentials with a JWT assertion, answered with a bearer."""
        if request.method != "POST":
            return Answer(405, body={"error": "invalid_request", "error_description": "POST only"})
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self._oauth_error("invalid_request", "client_assertion_type must be jwt-bearer")
        token_url = base_url + REST + "/auth/oauth2/v1/token"
        refusal = self._check_assertion(form.get("client_assertion", ""), token_url)
        if refusal is not None:
            self.login_audit_trail.append({"at": self.ctx.clock.now().isoformat(), "path": "token",
                                           "reason": refusal})  # fmt: skip
            return self._oauth_error("invalid_grant", "The client assertion is not valid.")
        token = "ns-m2m-" + "".join(f"{self.ctx.random.getrandbits(32):08x}" for _ in range(6))
        ttl = self.ctx.config.netsuite_token_ttl_seconds
        self.tokens[token] = self.ctx.clock.timestamp() + ttl
        self.tokens_issued += 1
        return Answer(200, body={"access_token": token, "expires_in": str(ttl), "token_type": "Bearer"})

    @staticmethod
    def _oauth_error(code: str, description: str) -> Answer:
        return Answer(400, body={"error": code, "error_description": description})

    def _check_assertion(self, assertion: str, token_url: str) -> str | None:
        config = self.ctx.config
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            return f"malformed assertion: {exc}"
        algorithm = header.get("alg")
        if algorithm not in JWT_ALGORITHMS:
            return f"algorithm {algorithm!r} not allowed"
        if header.get("kid") != config.netsuite_certificate_id:
            return "unknown certificate id (kid)"
        key = self._certificate_key()
        if key is None:
            return "no certificate is mapped (netsuite_public_key_file is not set)"
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],
                audience=token_url,
                issuer=config.netsuite_client_id,
                # Time is judged on the sandbox clock below, not the host's.
                options={"require": ["iss", "aud", "exp", "iat", "scope"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            return f"assertion rejected: {exc}"
        scope = claims["scope"]
        scopes = scope if isinstance(scope, list) else str(scope).split(",")
        if "rest_webservices" not in [s.strip() for s in scopes]:
            return "scope lacks rest_webservices"
        issued, expires = int(claims["iat"]), int(claims["exp"])
        if expires - issued > JWT_MAX_LIFETIME_SECONDS:
            return "exp is more than 60 minutes after iat"
        now = self.ctx.clock.timestamp()
        if expires <= now:
            return "assertion expired"
        if issued > now + TBA_WINDOW_SECONDS:
            return "assertion issued in the future"
        return None

    def _certificate_key(self) -> Any:
        path: Path | None = self.ctx.config.netsuite_public_key_file
        if path is None:
            return None
        if self._public_key is None:
            pem = path.read_bytes()
            if b"BEGIN CERTIFICATE" in pem:
                self._public_key = x509.load_pem_x509_certificate(pem).public_key()
            else:
                self._public_key = serialization.load_pem_public_key(pem)
        return self._public_key

    # ------------------------------------------------------------------ async

    def _submit_job(
        self, method: str, rest: str, query: dict[str, str], body: bytes, base_url: str, key: str | None
    ) -> Answer:
        if key is not None and key in self.idempotency_keys:
            original = self.idempotency_keys[key]
            raise NetSuiteError(
                400,
                "IDEMPOTENCY_ERROR",
                'A request with the same idempotency key is already submitted. See the "Location" header '
                "for a link to the previously submitted job",
                title="Conflict",
                headers={"Location": f"{base_url}{REST}/async/v1/job/{original}",
                         "Preference-Applied": "respond-async"},
            )  # fmt: skip
        job_id = str(len(self.jobs) + 1)
        self.jobs[job_id] = AsyncJob(job_id, method, rest, query, body, base_url, key, self.ctx.clock.now())
        if key is not None:
            self.idempotency_keys[key] = job_id
        return Answer(202, {"Location": f"{base_url}{REST}/async/v1/job/{job_id}",
                            "Preference-Applied": "respond-async"})  # fmt: skip

    async def tick(self, now: datetime) -> None:
        """Run the async jobs waiting in the queue, oldest first."""
        for job in self.jobs.values():
            if job.answer is not None:
                continue
            job.started_at = now
            try:
                job.answer = self._dispatch(job.method, job.path, job.query, job.body, job.base_url, "")
            except NetSuiteError as exc:
                job.answer = self._error_answer(exc)
            job.ended_at = self.ctx.clock.now()

    def _job_route(self, parts: list[str], base_url: str) -> Answer:
        job = self.jobs.get(parts[0])
        if job is None:
            raise NetSuiteError(404, "NONEXISTENT_ID", f"The async job {parts[0]} does not exist.")
        job_url = f"{base_url}{REST}/async/v1/job/{job.job_id}"
        completed = job.answer is not None
        if len(parts) == 1:
            return Answer(200, body={
                "links": [{"rel": "self", "href": job_url}], "id": job.job_id, "completed": completed,
                "progress": job.progress,
                "task": {"links": [{"rel": "related", "href": job_url + "/task"}]}})  # fmt: skip
        if parts[1:] == ["task"]:
            return Answer(200, body={
                "links": [{"rel": "self", "href": job_url + "/task"}], "count": 1, "hasMore": False, "offset": 0,
                "totalResults": 1, "items": [{"links": [{"rel": "self", "href": job_url + "/task/1"}]}]})  # fmt: skip
        if len(parts) >= 3 and parts[1] == "task" and parts[2] == "1":
            if len(parts) == 3:
                task: dict[str, Any] = {"links": [{"rel": "self", "href": job_url + "/task/1"}], "id": "1",
                                        "completed": completed, "progress": job.progress}  # fmt: skip
                if job.started_at:
                    task["startTime"] = job.started_at.isoformat()
                if job.ended_at:
                    task["endTime"] = job.ended_at.isoformat()
                    task["result"] = {"links": [{"rel": "related", "href": job_url + "/task/1/result"}]}
                return Answer(200, body=task)
            if parts[3:] == ["result"]:
                if job.answer is None:
                    raise NetSuiteError(404, "NONEXISTENT_ID", "The task has no result yet.")
                return job.answer
        raise NetSuiteError(404, "INVALID_URL", "No such async resource.")

    # ----------------------------------------------------------------- records

    def _record_route(self, method: str, parts: list[str], query: dict[str, str], body: bytes, base_url: str) -> Answer:
        record_type = RECORD_TYPES.get(parts[0].lower())
        if record_type is None:
            raise NetSuiteError(404, "INVALID_RCRD_TYPE", f"Record type '{parts[0]}' does not exist.")
        payload = self._json(body) if method in ("POST", "PUT", "PATCH") else {}
        if len(parts) == 1:
            if method == "POST":
                record = self._create(record_type, payload, external_id=None)
                return self._located(base_url, record_type, record["id"])
            if method == "GET":
                return self._list(record_type, query, base_url)
            raise NetSuiteError(405, "INVALID_REQUEST", f"{method} is not allowed on a record collection.")
        ref = unquote(parts[1])
        if len(parts) == 4 and parts[2] == "!transform" and method == "POST":
            source = self._find(record_type, ref)
            return self._transform(record_type, source, parts[3], payload, base_url)
        if len(parts) == 3 and parts[2] == "item" and method == "GET":
            record = self._find(record_type, ref)
            return Answer(200, body=self._render_sublist(record, base_url, record_type))
        if len(parts) != 2:
            raise NetSuiteError(404, "INVALID_URL", "No such record resource.")
        if method == "GET":
            record = self._find(record_type, ref)
            return Answer(200, body=self._present(record_type, record, query, base_url))
        if method == "PUT":
            if not ref.startswith("eid:"):
                raise NetSuiteError(405, "INVALID_REQUEST", "PUT (upsert) requires an external id: eid:{externalId}.")
            existing = self._by_external_id(record_type, ref[4:])
            if existing is None:
                record = self._create(record_type, payload, external_id=ref[4:])
            else:
                record = self._update(record_type, existing, payload, replace_lines=True)
            return self._located(base_url, record_type, record["id"])
        if method == "PATCH":
            record = self._find(record_type, ref)
            self._update(record_type, record, payload, replace_lines=query.get("replace") == "item")
            return Answer(204)
        if method == "DELETE":
            record = self._find(record_type, ref)
            if self._children(record_type, record["id"]):
                raise NetSuiteError(
                    400, "USER_ERROR", "This record cannot be deleted because it has dependent records."
                )
            del self.records[record_type][record["id"]]
            return Answer(204)
        raise NetSuiteError(405, "INVALID_REQUEST", f"{method} is not allowed here.")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise NetSuiteError(400, "INVALID_CONTENT", f"The request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise NetSuiteError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        return payload

    @staticmethod
    def _located(base_url: str, record_type: str, record_id: str) -> Answer:
        return Answer(204, {"Location": f"{base_url}{REST}/record/v1/{record_type}/{record_id}"})

    def _by_external_id(self, record_type: str, external_id: str) -> dict[str, Any] | None:
        for record in self.records[record_type].values():
            if record.get("externalId") == external_id:
                return record
        return None

    def _find(self, record_type: str, ref: str) -> dict[str, Any]:
        record = (
            self._by_external_id(record_type, ref[4:]) if ref.startswith("eid:") else self.records[record_type].get(ref)
        )
        if record is None:
            raise NetSuiteError(
                404, "NONEXISTENT_ID", "The record instance does not exist. Provide a valid record instance ID.",
                extra={"o:urlPath": f"{record_type}/{ref}"},
            )  # fmt: skip
        return record

    def _list(self, record_type: str, query: dict[str, str], base_url: str) -> Answer:
        ids = list(self.records[record_type])
        limit, offset = self._paging(query)
        page = ids[offset : offset + limit]
        url = f"{base_url}{REST}/record/v1/{record_type}"
        return Answer(200, body={
            "links": [{"rel": "self", "href": url}], "count": len(page), "hasMore": offset + limit < len(ids),
            "offset": offset, "totalResults": len(ids),
            "items": [{"links": [{"rel": "self", "href": f"{url}/{i}"}], "id": i} for i in page]})  # fmt: skip

    @staticmethod
    def _paging(query: Mapping[str, str]) -> tuple[int, int]:
        try:
            limit = int(query.get("limit", "1000"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            raise NetSuiteError(400, "INVALID_PARAMETER", "limit and offset must be integers.") from None
        if not 1 <= limit <= 1000 or offset < 0:
            raise NetSuiteError(400, "INVALID_PARAMETER", "limit must be 1..1000 and offset not negative.",
                                extra={"o:errorQueryParam": "limit"})  # fmt: skip
        return limit, offset

    def _new_id(self, record_type: str) -> str:
        if record_type in TRANSACTION_TYPES:
            self.next_transaction_id += 1
            return str(self.next_transaction_id - 1)
        self.next_entity_id += 1
        return str(self.next_entity_id - 1)

    def _create(self, record_type: str, payload: dict[str, Any], *, external_id: str | None) -> dict[str, Any]:
        if external_id is None:
            external_id = payload.get("externalId")
        elif "externalId" in payload and payload["externalId"] != external_id:
            raise NetSuiteError(400, "INVALID_CONTENT", "externalId in the body differs from the one in the URL.",
                                path="externalId")  # fmt: skip
        self._check_external_id(record_type, external_id)
        if record_type == "customer":
            record = self._customer_fields({}, payload, creating=True)
        elif record_type == "salesOrder":
            record = self._sales_order_fields({}, payload, replace_lines=True)
        elif record_type == "inventoryItem":
            record = {k: v for k, v in payload.items() if k not in ("id", "externalId")}
            if not record.get("itemId"):
                raise NetSuiteError(400, "INVALID_CONTENT", "Please enter value(s) for: Item Name/Number",
                                    path="itemId")  # fmt: skip
        else:
            raise NetSuiteError(400, "USER_ERROR",
                                f"A {record_type} is created by transforming its source record.")  # fmt: skip
        record["id"] = self._new_id(record_type)
        if external_id:
            record["externalId"] = external_id
        now = self.ctx.clock.now().isoformat()
        record.setdefault("createdDate", now)
        record["lastModifiedDate"] = now
        if record_type in TRANSACTION_TYPES:
            record["tranId"] = self._tran_number(record_type)
        self.records[record_type][record["id"]] = record
        return record

    def _check_external_id(self, record_type: str, external_id: Any) -> None:
        if external_id is None:
            return
        if not isinstance(external_id, str) or not re.fullmatch(r"[A-Za-z0-9_\-.:]{1,255}", external_id):
            raise NetSuiteError(400, "INVALID_CONTENT", f"Invalid external ID {external_id!r}.", path="externalId")
        if self._by_external_id(record_type, external_id) is not None:
            raise NetSuiteError(400, "USER_ERROR", "Error while accessing a resource. This record already exists.",
                                path="externalId")  # fmt: skip

    def _tran_number(self, record_type: str) -> str:
        self.tran_numbers[record_type] = self.tran_numbers.get(record_type, 0) + 1
        prefix = {"salesOrder": "SO", "itemFulfillment": "IF", "invoice": "INV", "cashSale": "CS",
                  "returnAuthorization": "RMA", "itemReceipt": "IR", "creditMemo": "CM",
                  "cashRefund": "CR"}  # fmt: skip
        return f"{prefix[record_type]}{self.tran_numbers[record_type]:05d}"

    def _update(
        self, record_type: str, record: dict[str, Any], payload: dict[str, Any], *, replace_lines: bool
    ) -> dict[str, Any]:
        if "externalId" in payload and payload["externalId"] != record.get("externalId"):
            self._check_external_id(record_type, payload["externalId"])
            record["externalId"] = payload["externalId"]
        if record_type == "customer":
            self._customer_fields(record, payload, creating=False)
        elif record_type == "salesOrder":
            self._sales_order_fields(record, payload, replace_lines=replace_lines)
        elif record_type == "inventoryItem":
            record.update({k: v for k, v in payload.items() if k not in ("id", "externalId")})
        else:
            lines = payload.pop("item", None)
            if lines is not None and record_type == "returnAuthorization":
                self._close_return_lines(record, lines)
            elif lines is not None:
                raise NetSuiteError(400, "USER_ERROR", "Lines of a transformed record cannot be edited here.",
                                    path="item")  # fmt: skip
            record.update({k: v for k, v in payload.items() if k not in ("id", "externalId", "createdFrom")})
        record["lastModifiedDate"] = self.ctx.clock.now().isoformat()
        return record

    @staticmethod
    def _close_return_lines(record: dict[str, Any], items: Any) -> None:
        """A return authorization's lines may be closed (or reopened); nothing else on them may change."""
        edits = items.get("items") if isinstance(items, dict) else None
        if not isinstance(edits, list):
            raise NetSuiteError(400, "INVALID_CONTENT", "item.items must be a list.", path="item.items")
        current = {line["line"]: line for line in record["item"]["items"]}
        for index, raw in enumerate(edits):
            where = f"item.items[{index}]"
            if not isinstance(raw, dict) or raw.get("line") not in current:
                raise NetSuiteError(400, "INVALID_CONTENT", "Name an existing line in `line`.", path=f"{where}.line")
            other = set(raw) - {"line", "isClosed"}
            if other:
                raise NetSuiteError(400, "USER_ERROR", f"Only isClosed can change on a return authorization line, "
                                    f"not {', '.join(sorted(other))}.", path=where)  # fmt: skip
            if "isClosed" in raw:
                current[raw["line"]]["isClosed"] = bool(raw["isClosed"])

    def _customer_fields(self, record: dict[str, Any], payload: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        simple = ("entityId", "companyName", "firstName", "lastName", "email", "phone", "isPerson", "comments",
                  "defaultAddress")  # fmt: skip
        for name in simple:
            if name in payload:
                record[name] = payload[name]
        if "subsidiary" in payload:
            if _ref(payload["subsidiary"]) not in SUBSIDIARIES:
                raise self._invalid_reference(_ref(payload["subsidiary"]), "subsidiary", "subsidiary")
            record["subsidiary"] = {"id": _ref(payload["subsidiary"])}
        if "currency" in payload:
            if _ref(payload["currency"]) not in CURRENCIES:
                raise self._invalid_reference(_ref(payload["currency"]), "currency", "currency")
            record["currency"] = {"id": _ref(payload["currency"])}
        if "creditLimit" in payload:
            try:
                record["creditLimit"] = _money(payload["creditLimit"])
            except ValueError:
                raise NetSuiteError(400, "INVALID_CONTENT", "creditLimit must be a number.",
                                    path="creditLimit") from None  # fmt: skip
        if "creditHoldOverride" in payload:
            hold = _ref(payload["creditHoldOverride"])
            if hold not in ("AUTO", "ON", "OFF"):
                raise self._invalid_reference(hold, "creditHoldOverride", "creditHoldOverride")
            record["creditHoldOverride"] = {"id": hold}
        if creating:
            record.setdefault("subsidiary", {"id": "1"})
            record.setdefault("currency", {"id": "1"})
            record.setdefault("isPerson", "companyName" not in record)
            record.setdefault("creditHoldOverride", {"id": "AUTO"})
            if record["isPerson"] and not record.get("lastName"):
                raise NetSuiteError(400, "INVALID_CONTENT", "Please enter value(s) for: Last Name", path="lastName")
            if not record["isPerson"] and not record.get("companyName"):
                raise NetSuiteError(400, "INVALID_CONTENT", "Please enter value(s) for: Company Name",
                                    path="companyName")  # fmt: skip
        return record

    @staticmethod
    def _invalid_reference(value: Any, field_name: str, path: str) -> NetSuiteError:
        return NetSuiteError(
            400, "INVALID_CONTENT",
            f"Error while accessing resource: You have entered an Invalid Field Value {value} for the following "
            f"field: {field_name}", path=path,
        )  # fmt: skip

    def _sales_order_fields(
        self, record: dict[str, Any], payload: dict[str, Any], *, replace_lines: bool
    ) -> dict[str, Any]:
        creating = "id" not in record
        if creating or "entity" in payload:
            entity = _ref(payload.get("entity"))
            if entity is None:
                raise NetSuiteError(400, "INVALID_CONTENT", "Please enter value(s) for: Customer", path="entity")
            customer = self.records["customer"].get(entity)
            if customer is None:
                raise self._invalid_reference(entity, "entity", "entity")
            if not creating and entity != record["entity"]["id"] and self._children("salesOrder", record["id"]):
                raise NetSuiteError(400, "USER_ERROR", "The customer of an order with fulfillments cannot change.",
                                    path="entity")  # fmt: skip
            record["entity"] = {"id": entity, "refName": self._customer_name(customer)}
            record.setdefault("currency", dict(customer.get("currency", {"id": "1"})))
        if "subsidiary" in payload or creating:
            subsidiary = _ref(payload.get("subsidiary")) or "1"
            if subsidiary not in SUBSIDIARIES:
                raise self._invalid_reference(subsidiary, "subsidiary", "subsidiary")
            record["subsidiary"] = {"id": subsidiary, "refName": SUBSIDIARIES[subsidiary]}
        if "location" in payload:
            location = _ref(payload["location"])
            if location not in LOCATIONS:
                raise self._invalid_reference(location, "location", "location")
            record["location"] = {"id": location, "refName": LOCATIONS[location]}
        if "currency" in payload:
            currency = _ref(payload["currency"])
            if currency not in CURRENCIES:
                raise self._invalid_reference(currency, "currency", "currency")
            record["currency"] = {"id": currency, "refName": CURRENCIES[currency][1]}
        if "tranDate" in payload:
            try:
                datetime.strptime(str(payload["tranDate"]), "%Y-%m-%d")
            except ValueError:
                raise NetSuiteError(400, "INVALID_CONTENT", "tranDate must be YYYY-MM-DD.", path="tranDate") from None
            record["tranDate"] = payload["tranDate"]
        record.setdefault("tranDate", self.ctx.clock.now().date().isoformat())
        for name in ("memo", "otherRefNum", "shippingAddress", "billingAddress", "shipMethod", "email"):
            if name in payload:
                record[name] = payload[name]
        if "shippingCost" in payload:
            record["shippingCost"] = self._amount(payload["shippingCost"], "shippingCost")
        if "orderStatus" in payload:
            status = _ref(payload["orderStatus"])
            if status not in ("A", "B"):
                raise NetSuiteError(400, "INVALID_CONTENT", "orderStatus may be set to A or B only.",
                                    path="orderStatus")  # fmt: skip
            record["approval"] = status
        if "item" in payload or creating:
            items = (payload.get("item") or {}).get("items")
            if not isinstance(items, list) or (creating and not items):
                raise NetSuiteError(400, "INVALID_CONTENT",
                                    "You must enter at least one line item for this transaction.",
                                    path="item")  # fmt: skip
            record["item"] = {"items": self._merge_lines(record, items, replace=replace_lines)}
        record.setdefault("approval", "B")
        return record

    def _merge_lines(self, record: dict[str, Any], items: list[Any], *, replace: bool) -> list[dict[str, Any]]:
        """Apply a sublist edit: lines with `line` are updated, others added; `replace` drops the rest."""
        current = {line["line"]: line for line in record.get("item", {}).get("items", [])}
        done = self._line_progress("salesOrder", record["id"]) if "id" in record else {}
        merged: dict[int, dict[str, Any]] = {} if replace else dict(current)
        next_line = max(current, default=0) + 1
        for index, raw in enumerate(items):
            where = f"item.items[{index}]"
            if not isinstance(raw, dict):
                raise NetSuiteError(400, "INVALID_CONTENT", "A line must be an object.", path=where)
            # A replacing edit matches lines by position when it does not name them, as an upsert resends them.
            line_no = raw.get("line", index + 1 if replace and (index + 1) in current else None)
            if line_no is not None and line_no not in current:
                raise NetSuiteError(400, "INVALID_CONTENT", f"Line {line_no} does not exist.", path=f"{where}.line")
            line: dict[str, Any] = (
                dict(current[line_no]) if line_no is not None else {"line": next_line, "isClosed": False}
            )
            if line_no is None:
                next_line += 1
            if "item" in raw or line_no is None:
                item_id = _ref(raw.get("item"))
                item = self.records["inventoryItem"].get(item_id or "")
                if item is None:
                    raise self._invalid_reference(item_id, "item", f"{where}.item")
                if line_no is not None and item_id != line["item"]["id"] and done.get(line_no, {}).get("fulfilled"):
                    raise NetSuiteError(400, "USER_ERROR", "The item of a fulfilled line cannot change.",
                                        path=f"{where}.item")  # fmt: skip
                line["item"] = {"id": item_id, "refName": item["itemId"]}
                line.setdefault("description", item["displayName"])
                line.setdefault("rate", item["basePrice"])
            if "quantity" in raw or line_no is None:
                quantity = raw.get("quantity", 1)
                if not isinstance(quantity, int | float) or quantity <= 0 or int(quantity) != quantity:
                    raise NetSuiteError(400, "INVALID_CONTENT", "quantity must be a positive whole number.",
                                        path=f"{where}.quantity")  # fmt: skip
                floor = max(done.get(line["line"], {}).values(), default=0)
                if quantity < floor:
                    raise NetSuiteError(400, "USER_ERROR", f"quantity cannot be less than the {floor} already "
                                        "fulfilled or billed.", path=f"{where}.quantity")  # fmt: skip
                line["quantity"] = int(quantity)
            if "rate" in raw:
                line["rate"] = self._amount(raw["rate"], f"{where}.rate")
            if "amount" in raw:
                line["amount"] = self._amount(raw["amount"], f"{where}.amount")
            elif "rate" in raw or "quantity" in raw or "amount" not in line:
                line["amount"] = (line["rate"] * line["quantity"]).quantize(Decimal("0.01"))
            if "isClosed" in raw:
                line["isClosed"] = bool(raw["isClosed"])
            for name in ("description", "location"):
                if name in raw:
                    line[name] = raw[name]
            # Custom transaction column fields (`custcol_...`) are stored as sent, as an account
            # that defines them would.
            line.update({k: v for k, v in raw.items() if k.startswith("custcol")})
            merged[line["line"]] = line
        return [merged[k] for k in sorted(merged)]

    @staticmethod
    def _amount(value: Any, path: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise NetSuiteError(400, "INVALID_CONTENT", f"{path} must be a number.", path=path)
        try:
            return _money(value)
        except ValueError:
            raise NetSuiteError(400, "INVALID_CONTENT", f"{path} must be a number.", path=path) from None

    @staticmethod
    def _customer_name(customer: dict[str, Any]) -> str:
        if customer.get("companyName"):
            return str(customer["companyName"])
        return f"{customer.get('firstName', '')} {customer.get('lastName', '')}".strip()

    # ------------------------------------------------------ derived quantities

    def _children(self, record_type: str, record_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Documents transformed from a record, oldest first."""
        found = []
        for target in sorted(TRANSFORMS.get(record_type, ())):
            for child in self.records[target].values():
                created_from = child.get("createdFrom") or {}
                if created_from.get("id") == record_id and created_from.get("type") == record_type:
                    found.append((target, child))
        return sorted(found, key=lambda pair: int(pair[1]["id"]))

    def _line_progress(self, record_type: str, record_id: str) -> dict[int, dict[str, int]]:
        """Per source line: quantities fulfilled, billed, authorized for return, received, credited."""
        kinds = {"itemFulfillment": "fulfilled", "invoice": "billed", "cashSale": "billed",
                 "returnAuthorization": "returned", "itemReceipt": "received", "creditMemo": "credited",
                 "cashRefund": "credited"}  # fmt: skip
        progress: dict[int, dict[str, int]] = {}
        for target, child in self._children(record_type, record_id):
            received = self._line_progress(target, child["id"]) if target == "returnAuthorization" else {}
            for line in child.get("item", {}).get("items", []):
                slot = progress.setdefault(line["orderLine"], {})
                quantity = line["quantity"]
                if line.get("isClosed"):
                    # A closed return line gives back what never arrived: the units may be returned again.
                    quantity = received.get(line["line"], {}).get("received", 0)
                slot[kinds[target]] = slot.get(kinds[target], 0) + quantity
        return progress

    def _status(self, record_type: str, record: dict[str, Any]) -> tuple[str, str] | None:
        lines = record.get("item", {}).get("items", [])
        progress = self._line_progress(record_type, record["id"])
        if record_type == "salesOrder":
            if record.get("approval") == "A":
                return "A", SALES_ORDER_STATUSES["A"]
            open_lines = [ln for ln in lines if not ln["isClosed"]]
            fulfilled = {ln["line"]: progress.get(ln["line"], {}).get("fulfilled", 0) for ln in lines}
            billed = {ln["line"]: progress.get(ln["line"], {}).get("billed", 0) for ln in lines}
            any_fulfilled = any(fulfilled.values())
            all_fulfilled = all(fulfilled[ln["line"]] >= ln["quantity"] for ln in open_lines)
            all_billed = all(billed[ln["line"]] >= fulfilled[ln["line"]] for ln in lines)
            if not open_lines:
                code = "G" if any(billed.values()) and all_billed else "H"
            elif not any_fulfilled:
                code = "B"
            elif not all_fulfilled:
                code = "D" if all_billed else "E"
            else:
                code = "G" if all_billed else "F"
            return code, SALES_ORDER_STATUSES[code]
        if record_type == "returnAuthorization":
            received = {ln["line"]: progress.get(ln["line"], {}).get("received", 0) for ln in lines}
            credited = {ln["line"]: progress.get(ln["line"], {}).get("credited", 0) for ln in lines}
            open_lines = [ln for ln in lines if not ln.get("isClosed")]
            all_credited = all(credited[k] >= received[k] for k in received)
            if not open_lines:
                code = "H"
            elif not any(received.values()):
                code = "B"
            elif any(received[ln["line"]] < ln["quantity"] for ln in open_lines):
                code = "D" if all_credited else "E"
            else:
                code = "G" if all_credited else "F"
            return code, RETURN_STATUSES[code]
        if record_type == "itemFulfillment":
            code = _ref(record.get("shipStatus")) or "C"
            return code, {"A": "Picked", "B": "Packed", "C": "Shipped"}.get(code, "Shipped")
        if record_type == "invoice":
            return "A", "Open"
        return None

    def _transaction_total(self, record: dict[str, Any]) -> Decimal:
        """Lines, plus shipping, plus the header discount (negative), plus tax."""
        lines = record.get("item", {}).get("items", [])
        subtotal = sum((Decimal(ln.get("amount", 0)) for ln in lines), Decimal(0))
        extras = (Decimal(record.get(name, 0)) for name in ("shippingCost", "discountTotal", "taxTotal"))
        return subtotal + sum(extras, Decimal(0))

    # -------------------------------------------------------------- transforms

    def _transform(
        self, source_type: str, source: dict[str, Any], target_raw: str, payload: dict[str, Any], base_url: str
    ) -> Answer:
        target = RECORD_TYPES.get(target_raw.lower())
        if target is None or target not in TRANSFORMS.get(source_type, set()):
            raise NetSuiteError(400, "INVALID_TRANSFORM",
                                f"Transformation of {source_type} to {target_raw} is not supported.")  # fmt: skip
        external_id = payload.get("externalId")
        self._check_external_id(target, external_id)
        available = self._available(source_type, source, target)
        chosen: dict[int, int] = {line: qty for line, qty in available.items() if qty > 0}
        overrides: dict[int, dict[str, Any]] = {}
        items = (payload.get("item") or {}).get("items")
        if items is not None:
            if not isinstance(items, list):
                raise NetSuiteError(400, "INVALID_CONTENT", "item.items must be a list.", path="item.items")
            for index, raw in enumerate(items):
                where = f"item.items[{index}]"
                order_line = raw.get("orderLine") if isinstance(raw, dict) else None
                if order_line not in available:
                    raise NetSuiteError(400, "INVALID_CONTENT", f"orderLine {order_line} is not a line of the "
                                        f"{source_type}.", path=f"{where}.orderLine")  # fmt: skip
                if raw.get("itemReceive") is False:
                    chosen.pop(order_line, None)
                    continue
                quantity = raw.get("quantity", available[order_line])
                if not isinstance(quantity, int | float) or quantity <= 0 or int(quantity) != quantity:
                    raise NetSuiteError(400, "INVALID_CONTENT", "quantity must be a positive whole number.",
                                        path=f"{where}.quantity")  # fmt: skip
                if quantity > available[order_line]:
                    raise NetSuiteError(
                        400, "USER_ERROR",
                        f"You cannot {_VERBS[target]} more than the remaining quantity ({available[order_line]}) "
                        f"of line {order_line}.", path=f"{where}.quantity",
                    )  # fmt: skip
                chosen[order_line] = int(quantity)
                overrides[order_line] = self._line_overrides(target, raw, where)
        if not chosen:
            raise NetSuiteError(400, "USER_ERROR", f"There is nothing left to {_VERBS[target]} on this {source_type}.")
        header_fields = self._header_amounts(target, payload)
        source_lines = {ln["line"]: ln for ln in source.get("item", {}).get("items", [])}
        lines = []
        for n, (order_line, quantity) in enumerate(sorted(chosen.items()), start=1):
            src = source_lines[order_line]
            rate = Decimal(src["amount"]) / src["quantity"] if src["quantity"] else Decimal(src.get("rate", 0))
            line: dict[str, Any] = {"line": n, "orderLine": order_line, "item": dict(src["item"]),
                                    "quantity": quantity, "description": src.get("description")}  # fmt: skip
            if target not in ("itemFulfillment", "itemReceipt"):
                line["rate"] = rate.quantize(Decimal("0.0001")).normalize()
                line["amount"] = (rate * quantity).quantize(Decimal("0.01"))
            if target in ("itemFulfillment", "itemReceipt"):
                line["itemReceive"] = True
            if target == "returnAuthorization":
                line["isClosed"] = False
            extra = overrides.get(order_line, {})
            if "amount" in extra and "rate" not in extra:
                extra["rate"] = (extra["amount"] / quantity).quantize(Decimal("0.0001")).normalize()
            elif "rate" in extra and "amount" not in extra:
                extra["amount"] = (extra["rate"] * quantity).quantize(Decimal("0.01"))
            line.update(extra)
            lines.append({k: v for k, v in line.items() if v is not None})
        now = self.ctx.clock.now()
        record: dict[str, Any] = {
            "id": self._new_id(target),
            "tranId": self._tran_number(target),
            "createdFrom": {"id": source["id"], "type": source_type, "refName": source.get("tranId")},
            "entity": dict(source["entity"]),
            "subsidiary": dict(source.get("subsidiary", {"id": "1"})),
            "currency": dict(source.get("currency", {"id": "1"})),
            "tranDate": now.date().isoformat(),
            "createdDate": now.isoformat(),
            "lastModifiedDate": now.isoformat(),
            "item": {"items": lines},
        }
        if "location" in source:
            record["location"] = dict(source["location"])
        header = ("item", "externalId", "id", "createdFrom", "entity", "location", "shippingCost", "discountItem",
                  "discountRate", "taxDetailsOverride", "taxDetails", "taxTotal", "discountTotal", "total")  # fmt: skip
        for name, value in payload.items():
            if name not in header:
                record[name] = value
        record.update(header_fields)
        if external_id:
            record["externalId"] = external_id
        if target == "itemFulfillment":
            record.setdefault("shipStatus", {"id": "C"})
        if target not in ("itemFulfillment", "itemReceipt"):
            record["total"] = self._transaction_total(record)
        self.records[target][record["id"]] = record
        return self._located(base_url, target, record["id"])

    def _line_overrides(self, target: str, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """What a transform line may set besides its quantity: a receiving location, a credited amount."""
        extra: dict[str, Any] = {}
        if "location" in raw and target in ("itemFulfillment", "itemReceipt"):
            location = _ref(raw["location"])
            if location not in LOCATIONS:
                raise self._invalid_reference(location, "location", f"{where}.location")
            extra["location"] = {"id": location, "refName": LOCATIONS[location]}
        for name in ("rate", "amount"):
            if name in raw:
                if target not in CREDIT_TYPES:
                    raise NetSuiteError(400, "USER_ERROR", f"The {name} of a {target} line comes from its source.",
                                        path=f"{where}.{name}")  # fmt: skip
                value = self._amount(raw[name], f"{where}.{name}")
                if value < 0:
                    raise NetSuiteError(400, "INVALID_CONTENT", f"{name} cannot be negative.", path=f"{where}.{name}")
                extra[name] = value.quantize(Decimal("0.01")) if name == "amount" else value
        return extra

    def _header_amounts(self, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Header fields with money in them: location, shipping, a header discount and overridden tax.

        Sales orders and invoices in this account carry no tax (the channel collects and remits it),
        so tax exists only where a document says so: SuiteTax's `taxDetailsOverride` with explicit
        `taxDetails` amounts, which is how an integration posts tax that another system computed.
        """
        fields: dict[str, Any] = {}
        if "location" in payload:
            location = _ref(payload["location"])
            if location not in LOCATIONS:
                raise self._invalid_reference(location, "location", "location")
            fields["location"] = {"id": location, "refName": LOCATIONS[location]}
        if "shippingCost" in payload:
            fields["shippingCost"] = self._amount(payload["shippingCost"], "shippingCost").quantize(Decimal("0.01"))
        if "discountRate" in payload or "discountItem" in payload:
            item = _ref(payload.get("discountItem"))
            if item not in DISCOUNT_ITEMS:
                raise self._invalid_reference(item, "discountItem", "discountItem")
            rate = self._amount(payload.get("discountRate", 0), "discountRate")
            if rate > 0:
                raise NetSuiteError(400, "INVALID_CONTENT", "A discount rate is negative.", path="discountRate")
            fields.update(discountItem={"id": item, "refName": DISCOUNT_ITEMS[item]}, discountRate=rate,
                          discountTotal=rate.quantize(Decimal("0.01")))  # fmt: skip
        if payload.get("taxDetailsOverride"):
            if target not in CREDIT_TYPES:
                raise NetSuiteError(400, "USER_ERROR", f"Tax cannot be overridden on a {target}.",
                                    path="taxDetailsOverride")  # fmt: skip
            details = (payload.get("taxDetails") or {}).get("items")
            if not isinstance(details, list):
                raise NetSuiteError(400, "INVALID_CONTENT", "taxDetails.items must be a list.", path="taxDetails")
            shown, tax = [], Decimal(0)
            for index, raw in enumerate(details):
                where = f"taxDetails.items[{index}]"
                if not isinstance(raw, dict):
                    raise NetSuiteError(400, "INVALID_CONTENT", "A tax detail must be an object.", path=where)
                amount = self._amount(raw.get("taxAmount"), f"{where}.taxAmount").quantize(Decimal("0.01"))
                tax += amount
                shown.append({**{k: v for k, v in raw.items() if k != "taxAmount"}, "taxAmount": amount})
            fields.update(taxDetailsOverride=True, taxDetails={"items": shown}, taxTotal=tax)
        return fields

    def _available(self, source_type: str, source: dict[str, Any], target: str) -> dict[int, int]:
        """Per source line, how much the target document may still take."""
        progress = self._line_progress(source_type, source["id"])
        result: dict[int, int] = {}
        for line in source.get("item", {}).get("items", []):
            done = progress.get(line["line"], {})
            quantity = line["quantity"]
            if source_type == "salesOrder":
                if target == "itemFulfillment":
                    left = 0 if line["isClosed"] else quantity - done.get("fulfilled", 0)
                elif target == "returnAuthorization":
                    left = done.get("fulfilled", 0) - done.get("returned", 0)
                else:  # Advanced Shipping is on: bill what has shipped and is not billed yet.
                    left = done.get("fulfilled", 0) - done.get("billed", 0)
            elif source_type == "returnAuthorization":
                if line.get("isClosed"):
                    left = 0
                elif target == "itemReceipt":
                    left = quantity - done.get("received", 0)
                else:
                    left = done.get("received", 0) - done.get("credited", 0)
            elif target == "creditMemo":  # an invoice credited directly, without a return
                left = quantity - done.get("credited", 0)
            else:
                left = quantity - done.get("returned", 0)
            result[line["line"]] = max(0, left)
        return result

    # ------------------------------------------------------------ presentation

    def _present(
        self, record_type: str, record: dict[str, Any], query: Mapping[str, str], base_url: str
    ) -> dict[str, Any]:
        url = f"{base_url}{REST}/record/v1/{record_type}/{record['id']}"
        shown: dict[str, Any] = {"links": [{"rel": "self", "href": url}]}
        for name, value in record.items():
            if name in ("approval", "closed"):
                continue
            if name == "item" and record_type != "inventoryItem":
                if query.get("expandSubResources", "").lower() == "true":
                    shown["item"] = self._render_sublist(record, base_url, record_type)
                else:
                    shown["item"] = {"links": [{"rel": "self", "href": f"{url}/item"}]}
                continue
            if name == "createdFrom":
                value = {k: v for k, v in value.items() if k != "type"}
            shown[name] = value
        status = self._status(record_type, record)
        if status is not None:
            shown["status"] = {"id": status[1], "refName": status[1]}
            if record_type == "salesOrder":
                shown["orderStatus"] = {"id": status[0], "refName": status[1]}
                shown["total"] = self._transaction_total(record)
            if record_type == "returnAuthorization":
                shown["orderStatus"] = {"id": status[0], "refName": status[1]}
                shown["total"] = self._transaction_total(record)
        if "currency" in shown and shown["currency"].get("id") in CURRENCIES:
            shown["currency"] = {"id": shown["currency"]["id"], "refName": CURRENCIES[shown["currency"]["id"]][1]}
        if record_type == "customer":
            balance, overdue, unbilled = self._credit(record["id"])
            shown.update(balance=balance, overdueBalance=overdue, unbilledOrders=unbilled)
        wanted = query.get("fields")
        if wanted:
            keep = {"links", "id", *(f.strip() for f in wanted.split(","))}
            shown = {k: v for k, v in shown.items() if k in keep}
        return shown

    def _render_sublist(self, record: dict[str, Any], base_url: str, record_type: str) -> dict[str, Any]:
        url = f"{base_url}{REST}/record/v1/{record_type}/{record['id']}/item"
        progress = self._line_progress(record_type, record["id"])
        items = []
        for line in record.get("item", {}).get("items", []):
            shown = {"links": [{"rel": "self", "href": f"{url}/{line['line']}"}], **line}
            done = progress.get(line["line"], {})
            if record_type == "salesOrder":
                shown.update(quantityFulfilled=done.get("fulfilled", 0), quantityBilled=done.get("billed", 0))
            if record_type == "returnAuthorization":
                shown.update(quantityReceived=done.get("received", 0), quantityBilled=done.get("credited", 0))
            items.append(shown)
        return {"links": [{"rel": "self", "href": url}], "items": items, "totalResults": len(items)}

    def _credit(self, customer_id: str) -> tuple[Decimal, Decimal, Decimal]:
        """Balance, overdue balance and unbilled orders, from the seed plus this sandbox's documents."""
        balance, overdue, unbilled = self.credit_seed.get(customer_id, (Decimal(0), Decimal(0), Decimal(0)))
        for invoice in self.records["invoice"].values():
            if invoice["entity"]["id"] == customer_id:
                balance += Decimal(invoice["total"])
        for memo in self.records["creditMemo"].values():
            if memo["entity"]["id"] == customer_id:
                balance -= Decimal(memo["total"])
        for order in self.records["salesOrder"].values():
            if order["entity"]["id"] != customer_id:
                continue
            progress = self._line_progress("salesOrder", order["id"])
            for line in order["item"]["items"]:
                if line["isClosed"]:
                    continue
                open_quantity = line["quantity"] - progress.get(line["line"], {}).get("billed", 0)
                if line["quantity"]:
                    unbilled += Decimal(line["amount"]) * open_quantity / line["quantity"]
        return balance, overdue, unbilled.quantize(Decimal("0.01"))

    # ----------------------------------------------------------------- SuiteQL

    def _suiteql(self, query: dict[str, str], body: bytes, base_url: str, prefer: str) -> Answer:
        if "transient" not in prefer:
            raise NetSuiteError(400, "INVALID_HEADER", "The Prefer header must contain the value 'transient'.",
                                extra={"o:errorHeader": "Prefer"})  # fmt: skip
        text = self._json(body).get("q")
        if not isinstance(text, str) or not text.strip():
            raise NetSuiteError(400, "INVALID_CONTENT", "The request body must contain the query in 'q'.", path="q")
        limit, offset = self._paging(query)
        try:
            parsed = parse(text)
            table, columns = self._suiteql_table(parsed.table)
            rows = execute(parsed, table, columns)
        except SuiteQLError as exc:
            raise NetSuiteError(400, "INVALID_PARAMETER", str(exc), path="q") from None
        page = rows[offset : offset + limit]
        url = f"{base_url}{REST}/query/v1/suiteql"
        links = [{"rel": "self", "href": f"{url}?limit={limit}&offset={offset}"}]
        if offset + limit < len(rows):
            links.append({"rel": "next", "href": f"{url}?limit={limit}&offset={offset + limit}"})
        if offset > 0:
            links.append({"rel": "previous", "href": f"{url}?limit={limit}&offset={max(0, offset - limit)}"})
        return Answer(200, body={
            "links": links, "count": len(page), "hasMore": offset + limit < len(rows), "offset": offset,
            "totalResults": len(rows), "items": [{"links": [], **row} for row in page]})  # fmt: skip

    def _suiteql_table(self, table: str) -> tuple[list[dict[str, str | None]], set[str]]:
        tables: dict[str, Callable[[], list[dict[str, str | None]]]] = {
            "customer": self._customer_rows,
            "item": self._item_rows,
            "transaction": self._transaction_rows,
            "currency": lambda: [{"id": k, "symbol": s, "name": n} for k, (s, n) in CURRENCIES.items()],
        }
        columns = {
            "customer": {"id", "entityid", "externalid", "companyname", "firstname", "lastname", "email", "isperson",
                         "currency", "subsidiary", "creditlimit", "balancesearch", "overduebalancesearch",
                         "unbilledorderssearch", "oncredithold", "creditholdoverride", "terms"},
            "item": {"id", "itemid", "displayname", "isinactive", "itemtype", "externalid", "weight", "weightunit"},
            "transaction": {"id", "tranid", "type", "entity", "externalid", "status", "trandate", "createdfrom",
                            "foreigntotal", "currency", "memo", "otherrefnum"},
            "currency": {"id", "symbol", "name"},
        }  # fmt: skip
        if table not in tables:
            raise SuiteQLError(
                "Invalid search query. Detailed unprocessed description follows. Search error occurred: "
                f"Record '{table}' was not found."
            )
        return tables[table](), columns[table]

    def _customer_rows(self) -> list[dict[str, str | None]]:
        rows = []
        for c in self.records["customer"].values():
            balance, overdue, unbilled = self._credit(c["id"])
            hold = c.get("creditHoldOverride", {}).get("id", "AUTO")
            rows.append({
                "id": c["id"], "entityid": c.get("entityId") or c["id"], "externalid": c.get("externalId"),
                "companyname": c.get("companyName"), "firstname": c.get("firstName"), "lastname": c.get("lastName"),
                "email": c.get("email"), "isperson": "T" if c.get("isPerson") else "F",
                "currency": _ref(c.get("currency")), "subsidiary": _ref(c.get("subsidiary")),
                "creditlimit": _text(c.get("creditLimit")), "balancesearch": _text(balance),
                "overduebalancesearch": _text(overdue), "unbilledorderssearch": _text(unbilled),
                "oncredithold": "T" if hold == "ON" else "F", "creditholdoverride": hold,
                "terms": _ref(c.get("terms")),
            })  # fmt: skip
        return rows

    def _item_rows(self) -> list[dict[str, str | None]]:
        return [
            {"id": i["id"], "itemid": i["itemId"], "displayname": i.get("displayName"),
             "isinactive": "T" if i.get("isInactive") else "F", "itemtype": "InvtPart",
             "externalid": i.get("externalId"), "weight": _text(i.get("weight")),
             "weightunit": WEIGHT_UNIT_IDS.get(str(i.get("weightUnit") or ""))}
            for i in self.records["inventoryItem"].values()
        ]  # fmt: skip

    def _transaction_rows(self) -> list[dict[str, str | None]]:
        rows = []
        for record_type in sorted(TRANSACTION_TYPES):
            for t in self.records[record_type].values():
                status = self._status(record_type, t)
                total = t.get("total") if "total" in t else self._transaction_total(t)
                rows.append({
                    "id": t["id"], "tranid": t.get("tranId"), "type": TRAN_TYPE_CODES[record_type],
                    "entity": _ref(t.get("entity")), "externalid": t.get("externalId"),
                    "status": status[0] if status else None, "trandate": t.get("tranDate"),
                    "createdfrom": _ref(t.get("createdFrom")), "foreigntotal": _text(total),
                    "currency": _ref(t.get("currency")), "memo": t.get("memo"), "otherrefnum": t.get("otherRefNum"),
                })  # fmt: skip
        return rows

    # ------------------------------------------------------------ inspection

    def snapshot(self) -> dict[str, Any]:
        """Records by type (external ids, lines, statuses), customers' credit, sessions and governance."""
        records: dict[str, list[dict[str, Any]]] = {}
        for record_type, table in self.records.items():
            if record_type == "inventoryItem":
                continue
            shown = []
            for record in table.values():
                entry = self._present(record_type, record, {"expandSubResources": "true"}, "")
                entry.pop("links", None)
                if "item" in entry:
                    entry["item"] = [{k: v for k, v in ln.items() if k != "links"} for ln in entry["item"]["items"]]
                shown.append(entry)
            records[record_type] = shown
        credit = {}
        for customer_id, customer in self.records["customer"].items():
            balance, overdue, unbilled = self._credit(customer_id)
            credit[customer_id] = {
                "externalId": customer.get("externalId"),
                "creditLimit": _text(customer.get("creditLimit")),
                "balance": _text(balance),
                "overdueBalance": _text(overdue),
                "unbilledOrders": _text(unbilled),
                "onCreditHold": customer.get("creditHoldOverride", {}).get("id") == "ON",
            }
        return json.loads(json.dumps({
            "records": records,
            "items": len(self.records["inventoryItem"]),
            "credit": credit,
            "auth": {"tokens_issued": self.tokens_issued, "active_tokens": sum(
                1 for t in self.tokens.values() if t > self.ctx.clock.timestamp()),
                "nonces_seen": len(self.nonces), "login_audit_trail": self.login_audit_trail[-50:]},
            "async_jobs": [{"id": j.job_id, "method": j.method, "path": j.path, "progress": j.progress,
                            "idempotency_key": j.idempotency_key} for j in self.jobs.values()],
            "governance": {"limit": self.ctx.config.netsuite_max_concurrency, "in_flight": self.in_flight,
                           "peak_in_flight": self.peak_in_flight, "rejected_over_limit": self.rejected_over_limit,
                           **self.governance.model_dump()},
        }, default=_json_default))  # fmt: skip

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """An injected failure as NetSuite answers it: 429 for a throttle, `o:errorDetails` for errors."""
        if kind is FaultKind.THROTTLE:
            body = error_body(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
            return 429, {}, json.dumps(body).encode()
        code = {500: "UNEXPECTED_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}
        body = error_body(rule.status, code.get(rule.status, "UNEXPECTED_ERROR"),
                          "An unexpected error occurred. Try the request again later.")  # fmt: skip
        return rule.status, {}, json.dumps(body).encode()


_VERBS = {"itemFulfillment": "fulfill", "invoice": "bill", "cashSale": "bill", "returnAuthorization": "return",
          "itemReceipt": "receive", "creditMemo": "credit", "cashRefund": "refund"}  # fmt: skip


def _text(value: Any) -> str | None:
    """A SuiteQL value: numbers as plain strings, nothing for empty."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _num(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def tba_signature(
    method: str, url: str, query: str, oauth_params: Mapping[str, str], consumer_secret: str, token_secret: str
) -> str:
    """The HMAC-SHA256 signature (RFC 5849 §3.4) of a request, as the server recomputes it."""
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    host = host.lower()
    # RFC 5849 §3.4.1.2: the default port of the scheme is left out.
    if (scheme.lower(), host.rpartition(":")[2]) in (("http", "80"), ("https", "443")):
        host = host.rpartition(":")[0]
    base_url = f"{scheme.lower()}://{host}{slash}{path.split('?', 1)[0]}"
    pairs = [(_enc(k), _enc(v)) for k, v in oauth_params.items()]
    pairs += [(_enc(k), _enc(v)) for k, v in parse_qsl(query, keep_blank_values=True)]
    normalized = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    base_string = "&".join((method.upper(), _enc(base_url), _enc(normalized)))
    key = f"{_enc(consumer_secret)}&{_enc(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()
