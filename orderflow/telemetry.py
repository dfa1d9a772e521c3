"""Tracing: one trace per order, from the webhook through the inbox relay and the saga to each vendor call.

`configure_tracing` turns tracing on for a process from the standard `OTEL_*` variables:

- `OTEL_TRACES_EXPORTER`: `console` (spans printed as JSON on stdout), `otlp` (OTLP over HTTP/protobuf,
  to `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or `none`. Unset, tracing
  is on only when an OTLP endpoint is configured: a process with no `OTEL_*` variables stays untraced
  and pays nothing (the OTel spec's default of `otlp` would make every test and demo export to a
  collector that is not there).
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and the
  exporter's own `OTEL_EXPORTER_OTLP_*` variables are read by the SDK itself.

The order's identity reaches every span as attributes (`orderflow.order_key`, `orderflow.channel`,
`temporal.workflow_id`): the gateway that starts or signals a saga puts them in the context's
baggage, the Temporal tracing interceptor carries the baggage in the workflow's and each activity's
headers, and `OrderAttributes`, a span processor, copies them onto every span started below.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    import httpx
    import temporalio.client
    import temporalio.worker
    from fastapi import FastAPI

ORDER_KEY = "orderflow.order_key"
CHANNEL = "orderflow.channel"
WORKFLOW_ID = "temporal.workflow_id"
# The vendor an adapter call went to (netsuite, wms, carrier, shopify, amazon).
SYSTEM = "orderflow.system"
# What names the order on every span of its trace, in this order of precedence.
ORDER_ATTRIBUTES = (ORDER_KEY, CHANNEL, WORKFLOW_ID)
# Spans of these paths would be noise: the dev stack and load balancers poll them every second.
UNTRACED_PATHS = "healthz,readyz,metrics,openapi.json"
# A log format for processes that configure no logging themselves: every line names its trace.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
SCOPE = "orderflow"

_W3C = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None

log = logging.getLogger(__name__)


class TracingConfigError(ValueError):
    """The `OTEL_*` variables ask for tracing orderflow cannot do (an unknown exporter or protocol)."""


class OrderAttributes(SpanProcessor):
    """Copies the order's key, channel and workflow ID onto every span started below the saga's context.

    They come from the context's baggage (set by `order_context`, carried across Temporal by its
    interceptor), else from a local parent span that has them (a span annotated after its children
    were planned, such as the inbox dispatch).
    """

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        """Set the order's attributes on a span as it starts."""
        ctx = parent_context if parent_context is not None else context.get_current()
        found: dict[str, str] = {}
        for name in ORDER_ATTRIBUTES:
            value = baggage.get_baggage(name, ctx)
            if isinstance(value, str) and value:
                found[name] = value
        parent = trace.get_current_span(ctx)
        if isinstance(parent, ReadableSpan) and parent.attributes:
            for name in ORDER_ATTRIBUTES:
                value = parent.attributes.get(name)
                if name not in found and isinstance(value, str):
                    found[name] = value
        if found:
            span.set_attributes(found)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True


class TraceIdFilter(logging.Filter):
    """Puts the current trace and span id on every log record, so a log line leads to its order's trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record (never drops one)."""
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = format(span_context.trace_id, "032x")
        record.span_id = format(span_context.span_id, "016x")
        return True


def configure_tracing(
    service_name: str, *, exporter: SpanExporter | None = None, global_provider: bool = True
) -> TracerProvider | None:
    """Turn tracing on for this process as the `OTEL_*` variables say (or to `exporter`); None while it stays off.

    Called once at a service's start; later calls keep the first configuration. `exporter` (a
    test's in-memory exporter) receives each span as it ends. With `global_provider=False`,
    OpenTelemetry's process-wide provider is left alone, so only orderflow's own instrumentation
    traces: FastAPI traces every app natively once a global provider is set, which a test must not
    leave behind for the rest of its session (a global provider cannot be unset).
    """
    global _provider
    if _provider is not None:
        return _provider
    processors: list[SpanProcessor] = [SimpleSpanProcessor(exporter)] if exporter is not None else _from_environment()
    if not processors:
        return None
    provider = TracerProvider(resource=_resource(service_name))
    provider.add_span_processor(OrderAttributes())
    for processor in processors:
        provider.add_span_processor(processor)
    # orderflow's own instrumentation is handed this provider explicitly; the global one is for
    # any other library that asks for it. It can be set only once per process.
    if global_provider and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    if "OTEL_PROPAGATORS" not in os.environ:
        # Outgoing vendor calls carry `traceparent` only: the order attributes travel as baggage
        # between our own services (Temporal headers), and are not for NetSuite or Shopify to see.
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    install_log_correlation()
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush the spans and turn tracing off: workers, clients and apps built afterwards are untraced."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


def tracing_enabled() -> bool:
    """Whether this process traces (`configure_tracing` found something to export to)."""
    return _provider is not None


def _from_environment() -> list[SpanProcessor]:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not names and (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        names = ["otlp"]
    if "none" in names:
        return []
    processors: list[SpanProcessor] = []
    for name in names:
        if name == "console":
            # Printed as each span ends, so `orderflow dev`'s logs show a trace as it happens.
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            processors.append(BatchSpanProcessor(_otlp_exporter()))
        else:
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name!r}: orderflow exports to console, otlp or none")
    return processors


def _otlp_exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol not in ("", "http/protobuf"):
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: orderflow ships the OTLP HTTP/protobuf exporter; "
            "use http/protobuf and the collector's HTTP port (4318)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, timeout, compression and certificates come from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()


def _resource(service_name: str) -> Resource:
    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over the process's own name.
    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    return Resource.create({} if named else {SERVICE_NAME: service_name})


def install_log_correlation() -> None:
    """Put the trace id on every record the root logger's handlers emit; a handler naming it if there is none."""
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(stream)
    for handler in root.handlers:
        if not any(isinstance(existing, TraceIdFilter) for existing in handler.filters):
            handler.addFilter(TraceIdFilter())


def tracer() -> trace.Tracer:
    """orderflow's tracer (a no-op one while tracing is off)."""
    return _provider.get_tracer(SCOPE) if _provider is not None else trace.NoOpTracer()


def _channel_of(key: str) -> str | None:
    # Business keys are `{kind}:{channel}:{id}` (order:shopify:1042, return:amazon:...).
    parts = key.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[1] else None


def order_attributes(
    *, order_key: str | None, workflow_id: str | None = None, channel: str | None = None
) -> dict[str, str]:
    """The attributes that name an order on a span: its key, its channel, its saga's workflow ID (an order's key)."""
    found: dict[str, str] = {}
    if order_key:
        found[ORDER_KEY] = order_key
    if workflow_id or order_key:
        found[WORKFLOW_ID] = workflow_id or order_key or ""
    channel = channel or _channel_of(order_key or workflow_id or "")
    if channel:
        found[CHANNEL] = channel
    return found


def annotate_order(*, order_key: str | None, workflow_id: str | None = None, channel: str | None = None) -> None:
    """Name the order on the current span (a webhook's, once the edge has mapped its body)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(order_attributes(order_key=order_key, workflow_id=workflow_id, channel=channel))


@contextmanager
def order_context(
    *, order_key: str | None, workflow_id: str | None = None, channel: str | None = None
) -> Iterator[None]:
    """Name the order on the current span and on every span started inside, here and across Temporal."""
    if _provider is None:
        yield
        return
    attributes = order_attributes(order_key=order_key, workflow_id=workflow_id, channel=channel)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
    ctx = context.get_current()
    for name, value in attributes.items():
        ctx = baggage.set_baggage(name, value, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to continue its trace later; None outside a trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continued_span(
    name: str,
    *,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[trace.Span]:
    """A span that continues the trace named by `traceparent` (stored earlier), linked to it as well.

    The span is a child of the stored context, so the order keeps one trace however late the work
    runs; the link marks the hop (the parent ended long before) for backends that draw links.
    """
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    parent = _W3C.extract({"traceparent": traceparent}) if traceparent else context.Context()
    parent_span = trace.get_current_span(parent).get_span_context()
    links = [Link(parent_span, {"orderflow.link": "stored trace context"})] if parent_span.is_valid else []
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {}), links=links
    ) as span:
        yield span


def client_interceptors() -> list[temporalio.client.Interceptor]:
    """What a Temporal client needs so its starts and signals carry the order's trace (nothing while off)."""
    if _provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_provider.get_tracer("orderflow.temporal"))]


def _traces(client: temporalio.client.Client) -> bool:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return any(isinstance(interceptor, TracingInterceptor) for interceptor in client.config()["interceptors"])


def worker_interceptors(client: temporalio.client.Client) -> list[temporalio.worker.Interceptor]:
    """What a worker needs to trace its workflows and activities, unless its client brings it already."""
    if _provider is None or _traces(client):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_provider.get_tracer("orderflow.temporal"))]


def traced_client(client: temporalio.client.Client) -> temporalio.client.Client:
    """`client` with tracing on its calls (same connection and converter); itself when it traces or tracing is off."""
    if _provider is None or _traces(client):
        return client
    from temporalio.client import Client

    config = client.config()
    config["interceptors"] = [*config["interceptors"], *client_interceptors()]
    return Client(**config)


def instrument_http_client(http: httpx.AsyncClient, *, systems: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """Make every request of this client a span (an adapter's call to its vendor); as is while tracing is off.

    `systems` maps each vendor's base URL to its name: a call under it is named `{METHOD} {system}`
    and carries `orderflow.system`, so a trace says which system each call went to.
    """
    if _provider is None or getattr(http, "_is_instrumented_by_opentelemetry", False):
        return http
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # Longest first: a token URL below a base URL names the same system.
    prefixes = sorted(((url.rstrip("/"), name) for url, name in (systems or {}).items()), key=lambda p: -len(p[0]))

    async def name_the_system(span: trace.Span, request: Any) -> None:
        url = str(request.url)
        for prefix, system in prefixes:
            if url == prefix or url.startswith(prefix + "/"):
                method = request.method.decode() if isinstance(request.method, bytes) else str(request.method)
                span.set_attribute(SYSTEM, system)
                span.update_name(f"{method} {system}")
                return

    HTTPXClientInstrumentor.instrument_client(http, tracer_provider=_provider, request_hook=name_the_system)
    return http


def instrument_app(app: FastAPI) -> None:
    """Make every request to the app a server span, the root of a webhook's trace (nothing while off)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # The ASGI receive/send sub-spans say nothing an operator needs.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_provider, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"]
    )
