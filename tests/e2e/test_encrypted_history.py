"""With payload encryption on, a real saga's raw history holds no customer email or street address.

The saga runs on the Temporal dev server in the real worker (`build_worker`: real activities and
adapters against the sandbox), its client built by `connect` from settings that configure a key, as
every orderflow process builds its client. The assertions read the history's raw protobuf bytes, as
the Temporal server stores them, then decrypt every payload in it to show the data was there all along.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf.message import Message
from integration.test_shopify_contract import create_order
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import OrderSagaState, OrderStatus, OrderToCashInput
from orderflow.codec import ENCRYPTED_ENCODING, CodecKey, EncryptionCodec, UnknownEncryptionKeyError, new_key
from orderflow.settings import Settings, get_settings
from orderflow.temporal import connect, data_converter, initial_search_attributes
from orderflow.worker import build_worker
from orderflow.workflows.order_to_cash import OrderToCash

pytestmark = pytest.mark.integration

# What the sandbox store's order carries (tests/integration/test_shopify_contract.py `order_input`).
EMAIL = b"grace@example.com"
STREET = b"2 Navy Way"


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere in a protobuf message, with the field path that leads to it."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            # A map field (memo, header, search attributes): the payloads are its values.
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    yield from payloads_in(item, f"{where}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{index}]")
        else:
            yield from payloads_in(value, where)


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A key configured as an operator would (ORDERFLOW_CODEC__KEY_FILE), read through fresh settings."""
    path = tmp_path / "codec.key"
    path.write_text(new_key() + "\n")
    monkeypatch.setenv("ORDERFLOW_CODEC__KEY_FILE", str(path))
    monkeypatch.setenv("ORDERFLOW_CODEC__KEY_ID", "e2e-current")
    get_settings.cache_clear()
    yield path
    monkeypatch.undo()
    # No other test may see these settings.
    get_settings.cache_clear()


async def test_with_the_codec_on_no_customer_email_or_street_is_in_the_raw_history(
    dev_server: WorkflowEnvironment, settings: Settings, http: httpx.AsyncClient, key_file: Path
) -> None:
    target = dev_server.client.service_client.config.target_host
    # No codec passed: `connect` takes it from the settings, as the worker and the webhook service do.
    client = await connect(target, dev_server.client.namespace)
    codec = client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec) and codec.key_id == "e2e-current"

    order = await ShopifyClient(http, settings.shopify).get_order(
        await create_order(ShopifyClient(http, settings.shopify), [("BOLT-M8-S", 2), ("NUT-M8-M", 1)])
    )
    assert order.customer.email == EMAIL.decode() and order.ship_to.line1 == STREET.decode()
    queue = f"codec-e2e-{uuid.uuid4()}"
    async with build_worker(client, settings, http, task_queue=queue):
        handle = await client.start_workflow(
            OrderToCash.run,
            OrderToCashInput(order=order),
            id=f"{order.key}-encrypted-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            search_attributes=initial_search_attributes(order),
        )
        # Released: the order has been accepted, posted to the ERP and labelled, each step with the address.
        state: OrderSagaState | None = None
        for _ in range(300):
            state = await handle.query(OrderToCash.state)
            if state.status is OrderStatus.RELEASED or state.needs_attention:
                break
            await asyncio.sleep(0.05)
        assert state is not None and state.status is OrderStatus.RELEASED, state
        # A client rotated to a new key, keeping the worker's as old, still reads what the worker wrote.
        rotated_codec_key = CodecKey.from_base64(new_key(), "e2e-next")
        rotated_codec = EncryptionCodec(rotated_codec_key, old_keys=[_current(key_file)])
        rotated = await connect(target, dev_server.client.namespace, codec=rotated_codec)
        seen = await rotated.get_workflow_handle(handle.id).query(OrderToCash.state)
        assert seen.key == order.key and seen.ids == state.ids
        # Without the old key the same answer is unreadable, and says which key it needs.
        forgetful = await connect(target, dev_server.client.namespace, codec=EncryptionCodec(rotated_codec_key))
        with pytest.raises(UnknownEncryptionKeyError, match="e2e-current"):
            await forgetful.get_workflow_handle(handle.id).query(OrderToCash.state)
        history = await handle.fetch_history()
        await handle.terminate(reason="test over")

    raw = History(events=history.events).SerializeToString()
    assert EMAIL not in raw and STREET not in raw
    found = list(payloads_in(History(events=history.events)))
    # Left plaintext by design: search attributes (the server indexes them, so they must hold no PII
    # themselves), headers (trace context; the SDK does not run headers through the codec by default)
    # and the SDK's own marker bookkeeping (patch ids, a local activity's seq and timing).
    bookkeeping = (
        ".search_attributes.",
        ".header.fields[",
        "marker_recorded_event_attributes.details[data]",
        "details[patch-data]",
    )
    ours = [(path, p) for path, p in found if not any(part in path for part in bookkeeping)]
    assert len(ours) > 10, [path for path, _ in found]
    assert [(path, p.data) for path, p in ours if p.metadata.get("encoding") != ENCRYPTED_ENCODING] == []

    # Decrypting the very same bytes gives the customer's data back.
    decoded = History()
    decoded.CopyFrom(History(events=history.events))
    for _, payload in payloads_in(decoded):
        [plain] = await codec.decode([payload])
        payload.CopyFrom(plain)
    plain_bytes = decoded.SerializeToString()
    assert EMAIL in plain_bytes and STREET in plain_bytes
    started = decoded.events[0].workflow_execution_started_event_attributes
    [start] = await data_converter(None).decode(started.input.payloads, [OrderToCashInput])
    assert start == OrderToCashInput(order=order)


def _current(key_file: Path) -> CodecKey:
    return CodecKey.from_base64(key_file.read_text(), "e2e-current")
