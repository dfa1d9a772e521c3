"""How the demo drives the sandbox: its control API, where a refusal or silence is a `DemoError`."""

from __future__ import annotations

from typing import Any

import httpx


class DemoError(Exception):
    """The demo could not do what it set out to (the sandbox refused, or did not answer)."""


async def control(sandbox: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """Call the sandbox's control API; a refusal or an unreachable sandbox is a DemoError."""
    try:
        response = await sandbox.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise DemoError(f"the sandbox at {sandbox.base_url} did not answer {method} {path}: {exc!r}") from exc
    if response.status_code >= 400:
        raise DemoError(f"the sandbox refused {method} {path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None
