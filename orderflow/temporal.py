"""How orderflow connects to Temporal: the client, the data converter and the search attributes."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig

from orderflow.canonical.order import Order
from orderflow.canonical.return_saga import ReturnStatus
from orderflow.canonical.returns import Return
from orderflow.canonical.saga import TASK_QUEUE, OrderStatus

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CHANNEL = SearchAttributeKey.for_keyword("Channel")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
NEEDS_ATTENTION = SearchAttributeKey.for_bool("NeedsAttention")
ORDER_TOTAL = SearchAttributeKey.for_float("OrderTotal")
# Lets a carrier event, which names only a tracking number, find its saga through visibility.
TRACKING_NUMBERS = SearchAttributeKey.for_keyword_list("TrackingNumbers")
# Where a return saga is (ReturnStatus); returns share Channel, CustomerId and NeedsAttention with orders.
RETURN_STATUS = SearchAttributeKey.for_keyword("ReturnStatus")

# Every search attribute orderflow's sagas publish; a namespace must have them registered.
SEARCH_ATTRIBUTE_KEYS: tuple[SearchAttributeKey[Any], ...] = (
    ORDER_STATUS,
    CHANNEL,
    CUSTOMER_ID,
    NEEDS_ATTENTION,
    ORDER_TOTAL,
    TRACKING_NUMBERS,
    RETURN_STATUS,
)
_TYPE_NAMES = {2: "Keyword", 4: "Double", 5: "Bool", 7: "KeywordList"}
# name -> the type `temporal operator search-attribute create` and `start-dev --search-attribute` take.
SEARCH_ATTRIBUTES: dict[str, str] = {
    key.name: _TYPE_NAMES[int(key.indexed_value_type)] for key in SEARCH_ATTRIBUTE_KEYS
}

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
# How long a worker may take to finish in-flight activities when asked to stop.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)

__all__ = [
    "CHANNEL",
    "CUSTOMER_ID",
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "FROM_SETTINGS",
    "NEEDS_ATTENTION",
    "ORDER_STATUS",
    "ORDER_TOTAL",
    "RETURN_STATUS",
    "SEARCH_ATTRIBUTES",
    "SEARCH_ATTRIBUTE_KEYS",
    "TASK_QUEUE",
    "TRACKING_NUMBERS",
    "client_connect_config",
    "connect",
    "data_converter",
    "initial_return_search_attributes",
    "initial_search_attributes",
]


def initial_search_attributes(order: Order, *, hide_emails: bool | None = None) -> TypedSearchAttributes:
    """The search attributes a saga starts with, so it is findable in the Temporal UI from its first moment.

    Search attributes are stored in plaintext even when payloads are encrypted, so with encryption
    on (`hide_emails` defaults to it) a customer known only by email (a guest, an Amazon buyer's
    anonymised address) gets no CustomerId until accept sets the ERP customer's id.
    """
    if hide_emails is None:
        from orderflow.settings import get_settings

        hide_emails = get_settings().codec.enabled
    pairs: list[SearchAttributePair[str] | SearchAttributePair[bool] | SearchAttributePair[float]] = [
        SearchAttributePair(ORDER_STATUS, OrderStatus.RECEIVED.value),
        SearchAttributePair(CHANNEL, order.channel.value),
        SearchAttributePair(NEEDS_ATTENTION, False),
        # A float only for filtering and sorting in the UI; the saga itself keeps Decimal money.
        SearchAttributePair(ORDER_TOTAL, float(order.total.amount)),
    ]
    customer_id = order.customer.channel_customer_id or order.customer.email
    if customer_id and not (hide_emails and "@" in customer_id):
        pairs.append(SearchAttributePair(CUSTOMER_ID, customer_id))
    return TypedSearchAttributes(pairs)


def initial_return_search_attributes(return_request: Return) -> TypedSearchAttributes:
    """The search attributes a return saga starts with; CustomerId follows once the ERP names the customer."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(RETURN_STATUS, ReturnStatus.REQUESTED.value),
            SearchAttributePair(CHANNEL, return_request.channel.value),
            SearchAttributePair(NEEDS_ATTENTION, False),
        ]
    )


class _FromSettings(enum.Enum):
    """Marks "take the payload codec from orderflow's settings" apart from an explicit None (no codec)."""

    FROM_SETTINGS = enum.auto()


FROM_SETTINGS = _FromSettings.FROM_SETTINGS


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """The data converter for orderflow's pydantic models, encrypting payloads when a codec is given."""
    if codec is None:
        return pydantic_data_converter
    # Failure messages and stack traces are not payloads; without this they would stay plaintext in
    # history, and an adapter error may quote an address. Encoded, they move into the encrypted payload.
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def client_connect_config(address: str | None = None, namespace: str | None = None) -> ClientConnectConfig:
    """Where and how to reach Temporal: the envconfig profile, with an explicit address or namespace winning.

    The profile is Temporal's own client configuration (`temporalio.envconfig`): the TOML file
    (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE) overridden by TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY, TEMPORAL_TLS (on/off), TEMPORAL_TLS_CLIENT_CERT_PATH / _KEY_PATH,
    TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_SERVER_NAME and TEMPORAL_GRPC_META_*; so Temporal
    Cloud (an API key, or mTLS) needs configuration only. Unset, the local dev server.
    """
    config = ClientConfigProfile.load().to_client_connect_config()
    config["target_host"] = address or config.get("target_host") or DEFAULT_ADDRESS
    config["namespace"] = namespace or config.get("namespace") or DEFAULT_NAMESPACE
    return config


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    *,
    interceptors: Sequence[Interceptor] = (),
    codec: PayloadCodec | _FromSettings | None = FROM_SETTINGS,
) -> Client:
    """A Temporal client that (de)serialises orderflow's pydantic models exactly (Decimal, datetime).

    The connection (TLS, API key, and the address and namespace unless given) comes from
    `client_connect_config`. Payloads are encrypted when the settings configure a codec key (or a
    codec is passed explicitly).
    """
    if isinstance(codec, _FromSettings):
        codec = _codec_from_settings()
    return await Client.connect(
        **client_connect_config(address, namespace),
        data_converter=data_converter(codec),
        interceptors=list(interceptors),
    )


def _codec_from_settings() -> PayloadCodec | None:
    # Imported here so a plain `import orderflow.temporal` (workflow sandbox, tests) never reads the environment.
    from orderflow.codec import codec_from_settings
    from orderflow.settings import get_settings

    return codec_from_settings(get_settings().codec)
