"""Schemathesis over the whole OpenAPI document, against a real server on SQLite: every
operation, called with bodies and parameters drawn from what the document says (with the
key its security scheme names), answers no 5xx, and nothing the document does not say
(a status it does not list, a JSON body outside the schema of that status).

Bounded in time: a few examples per operation (`EXAMPLES`), no shrinking; the whole module
takes well under a minute."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import ADMIN_KEY, START, WRITE_KEY, LiveServer
from tests.test_openapi_document import ROUTES_IN_DOCUMENT

EXAMPLES = int(os.environ.get("PARCOURS_FUZZ_EXAMPLES", "6"))
# What the document allows, and what it does not (which must be refused with a 4xx).
# Calls that carry their own proof (a metrics token, Shopify's HMAC): always refused here.
SIGNED_ELSEWHERE = ["GET /metrics", "POST /webhooks/shopify"]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
KEYS = {
    "adminKey": f"Bearer {ADMIN_KEY}",
    "writeKey": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("fuzz")
    opened = Services.open(
        Settings(
            data_dir=Path(data),
            write_key=WRITE_KEY,
            admin_key=ADMIN_KEY,
            shopify_webhook_secret="fuzz-shopify-secret",  # configured: its checks are reached
            shopify_shops=["brand.myshopify.com"],
        ),
        clock=SimulatedClock(START),
    )
    try:
        with LiveServer(opened) as live:
            yield live
    finally:
        opened.close()


def test_every_operation_answers_as_the_document_says(server: LiveServer) -> None:
    described = httpx.get(f"{server.url}/api/schema/openapi.json", timeout=10).json()
    failures: dict[str, str] = {}
    answered: dict[str, set[int]] = {}
    operations = 0
    for loaded in schemathesis.openapi.from_dict(described).get_all_operations():
        operation = loaded.ok()
        operations += 1
        try:
            answered[operation.label] = _fuzz(operation, server.url)
        except (Exception, BaseExceptionGroup) as exc:  # every failing operation is told
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:2000]
    assert operations == len(ROUTES_IN_DOCUMENT)
    assert not failures, "\n\n".join(f"{label}\n{said}" for label, said in failures.items())
    # The keys are right: calls get past the guards, and many are accepted.
    refused = [label for label, seen in answered.items() if seen == {401}]
    assert sorted(refused) == sorted(SIGNED_ELSEWHERE)
    succeeded = [label for label, seen in answered.items() if any(s < 300 for s in seen)]
    print(f"{len(succeeded)} of {operations} operations answered a 2xx:", sorted(answered.items()))
    assert len(succeeded) >= 15  # 20 of 67 today: most need data no fuzzer can guess


def _fuzz(operation: Any, base_url: str) -> set[int]:
    """Call the operation with drawn cases; the statuses it answered."""
    headers = {}
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            headers["Authorization"] = KEYS[scheme]

    @given(case=st.one_of([operation.as_strategy(mode) for mode in MODES]))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), **headers}  # the key, even in a negative case
        response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=10)
        statuses.add(response.status_code)

    statuses: set[int] = set()
    call()
    return statuses
