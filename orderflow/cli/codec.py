"""`orderflow codec-server` and `orderflow codec-key`: let the Temporal UI and CLI read encrypted payloads.

The codec server implements Temporal's remote codec protocol: `POST /encode` and `POST /decode` take
`{"payloads": [...]}` (the proto3 JSON of `temporal.api.common.v1.Payloads`: base64 `data` and base64
metadata values) and answer the same shape, run through orderflow's payload codec with the keys from
settings. The UI (browser) names the namespace in an `X-Namespace` header; the `temporal` CLI may put
it in the path (`--codec-endpoint 'http://127.0.0.1:8888/{namespace}'`), so both are served.

Anyone who can reach the codec server can decrypt payloads, so it listens on loopback by default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from orderflow.cli.connection import fail
from orderflow.codec import (
    CodecKeyError,
    EncryptionCodec,
    PayloadDecryptionError,
    UnknownEncryptionKeyError,
    codec_from_settings,
    describe_keys,
    new_key,
)

DEFAULT_PORT = 8888
# The dev server's UI; the browser's origin is whichever host the operator typed, so both spellings.
DEFAULT_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
# What the UI sends: JSON, the namespace, and (with "pass access token" on) the user's bearer token.
ALLOWED_HEADERS = ("content-type", "x-namespace", "authorization")
# A codec server's self-description at /healthz, so `orderflow dev` can tell it from anything else on the port.
SERVICE_NAME = "orderflow-codec-server"

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORT", "DEFAULT_UI_ORIGINS", "SERVICE_NAME", "codec_key", "codec_server", "create_codec_app"]


def create_codec_app(codec: EncryptionCodec, *, ui_origins: Sequence[str] = DEFAULT_UI_ORIGINS) -> FastAPI:
    """The remote codec HTTP app: /encode and /decode through `codec`, CORS open to the UI origins only."""
    app = FastAPI(title="orderflow codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[origin.rstrip("/") for origin in ui_origins],
        allow_methods=["POST"],
        allow_headers=list(ALLOWED_HEADERS),
        # The UI's "include cross-origin credentials" setting sends cookies; allowed only for the listed origins.
        allow_credentials=True,
        max_age=600,
    )

    async def apply(request: Request, transform: Callable[[Sequence[Payload]], Awaitable[list[Payload]]]) -> Response:
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except json_format.ParseError as exc:
            return JSONResponse({"error": f'body is not {{"payloads": [...]}} of Temporal payloads: {exc}'}, 400)
        try:
            result = await transform(payloads.payloads)
        except (UnknownEncryptionKeyError, PayloadDecryptionError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        body = json_format.MessageToJson(Payloads(payloads=result))
        return Response(body, media_type="application/json")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        """The payloads encrypted with the current key (the UI and CLI encode what they start or signal)."""
        return await apply(request, codec.encode)

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        """The payloads decrypted, for display in the UI or the CLI."""
        return await apply(request, codec.decode)

    @app.post("/{namespace}/encode")
    async def encode_in_namespace(namespace: str, request: Request) -> Response:
        """/encode under the `{namespace}` path segment the CLI's codec endpoint may template."""
        return await apply(request, codec.encode)

    @app.post("/{namespace}/decode")
    async def decode_in_namespace(namespace: str, request: Request) -> Response:
        """/decode under the `{namespace}` path segment the CLI's codec endpoint may template."""
        return await apply(request, codec.decode)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness, and which key encrypts (its id only), so a stack can tell whether it may reuse this server."""
        return {"status": "ok", "service": SERVICE_NAME, "key_id": codec.key_id}

    return app


def codec_server(
    host: Annotated[str, typer.Option(help="Interface to listen on; keep loopback unless fronted by auth.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    ui_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--ui-origin",
            help="A Temporal UI origin allowed to call this server (repeatable); "
            "default http://localhost:8233 and http://127.0.0.1:8233.",
        ),
    ] = None,
) -> None:
    """Serve Temporal's remote codec protocol with orderflow's payload keys, for the Web UI and `temporal` CLI."""
    import uvicorn

    from orderflow.settings import get_settings

    try:
        codec = codec_from_settings(get_settings().codec)
    except (CodecKeyError, ValueError) as exc:
        fail(f"the payload encryption keys are not usable: {exc}", 2)
    if codec is None:
        fail(
            "no payload encryption key is configured: set ORDERFLOW_CODEC__KEY or ORDERFLOW_CODEC__KEY_FILE "
            "(create a key with `orderflow codec-key`)",
            2,
        )
    origins = tuple(ui_origin) if ui_origin else DEFAULT_UI_ORIGINS
    typer.echo(
        f"codec server on http://{host}:{port} (keys: {dict(describe_keys(codec))}; UI origins: {', '.join(origins)})"
    )
    uvicorn.run(create_codec_app(codec, ui_origins=origins), host=host, port=port, log_level="info")


def codec_key(
    out: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Write the key to this file (mode 600) instead of printing it."),
    ] = None,
) -> None:
    """Print a new payload encryption key (32 random bytes, base64) for ORDERFLOW_CODEC__KEY or a key file."""
    key = new_key()
    if out is None:
        typer.echo(key)
        return
    try:
        # O_EXCL: never overwrite a key that may still be the only way to read existing histories.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{out} exists; an existing key is never overwritten (it may be needed to read old histories)", 2)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    typer.echo(f"wrote a new key to {out}; set ORDERFLOW_CODEC__KEY_FILE={out}")
