"""Placeholder for the Wms simulator; replaced by the real one."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from orderflow.sandbox.core import Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule


class WmsSimulator(Simulator):
    """The Wms simulator."""

    name = "wms"

    def router(self) -> APIRouter:
        """Routes."""
        return APIRouter()

    def reset(self) -> None:
        """Reset."""

    def snapshot(self) -> dict[str, Any]:
        """State."""
        return {}

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """Fault."""
        return rule.status, {}, json.dumps({"error": kind.value}).encode()
