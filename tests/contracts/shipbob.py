"""ShipBob's OpenAPI (2026-01) as JSON Schema, and test helpers for talking to the WMS sandbox.

The spec in `specs/shipbob-openapi.json` is a third-party mirror of ShipBob's published reference
(api-evangelist/shipbob). OpenAPI 3.1 schemas are JSON Schema 2020-12, so a response is checked by
validating it against `#/components/schemas/<name>` inside the spec document.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "specs" / "shipbob-openapi.json"
SPEC_URI = "urn:shipbob:openapi:2026-01"


@cache
def spec() -> dict[str, Any]:
    """The ShipBob OpenAPI document."""
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return document


@cache
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec(), default_specification=DRAFT202012))


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the named component schema (empty when it conforms)."""
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"the ShipBob spec has no schema {schema_name!r}")
    validator = Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(instance)]


def assert_conforms(schema_name: str, instance: Any) -> None:
    """Fail with the list of violations unless `instance` matches ShipBob's schema."""
    errors = schema_errors(schema_name, instance)
    assert not errors, f"{schema_name} violations:\n" + "\n".join(errors[:20])


def response_schema(path: str, method: str, status: int) -> str:
    """The component schema the spec names for one operation's answer, e.g. ('/2026-01/order', 'post', 201)."""
    content = spec()["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    ref: str = content["$ref"]
    return ref.rsplit("/", 1)[-1]
