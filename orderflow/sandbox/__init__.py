"""Local simulators of Shopify, NetSuite, the WMS and the carrier, with fault injection.

`create_app()` builds the whole sandbox as one ASGI app; `orderflow sandbox` serves it on :8700.
"""

from orderflow.sandbox.app import Sandbox, create_app
from orderflow.sandbox.core import DemoConfig, SandboxConfig, SandboxContext, Simulator

__all__ = ["DemoConfig", "Sandbox", "SandboxConfig", "SandboxContext", "Simulator", "create_app"]
