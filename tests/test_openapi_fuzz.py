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
# Calls that carry their own proof (Shopify's HMAC, the carriers'): always refused here.
SIGNED_ELSEWHERE = ["POST /api/commerce/carrier-webhook", "POST /webhooks/shopify"]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
METRICS_TOKEN = "fuzz-metrics-token"
KEYS = {
    "metricsToken": f"Bearer {METRICS_TOKEN}",
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
            carrier_webhook_secret="fuzz-carrier-secret",  # the same for the carriers
            shopify_shops=["brand.myshopify.com"],
            metrics_token=METRICS_TOKEN,
        ),
        clock=SimulatedClock(START),
    )
    try:
        with LiveServer(opened) as live:
            _seed(live.url)
            yield live
    finally:
        opened.close()


def _seed(url: str) -> None:
    """What the known path parameters name: a customer, a segment, a journey (live, with
    API entries), so that calls also reach the answers of things that exist."""
    admin = {"Authorization": KEYS["adminKey"]}
    write = {"Authorization": KEYS["writeKey"]}
    with httpx.Client(base_url=url, timeout=10) as client:
        person = {"userId": "ana", "traits": {"email": "ana@example.com", "locale": "fr"}}
        assert client.post("/v1/identify", json=person, headers=write).status_code == 200
        order = {"userId": "ana", "event": "Order Completed", "properties": {"order_id": "o-1"}}
        assert client.post("/v1/track", json=order, headers=write).status_code == 200
        segment = "id: vip\nname: VIP\nconditions:\n  - profile.traits.tier: {eq: gold}\n"
        assert client.post("/api/segments", content=segment, headers=admin).status_code == 201
        journey = (
            "id: welcome\nname: Welcome\nentry: {api: true}\nsteps:\n"
            "  - send: {channel: email, template: order-confirmation}\n"
        )
        assert client.post("/api/journeys", content=journey, headers=admin).status_code == 201
        moves = "/api/journeys/welcome/versions/1/"
        assert client.post(moves + "submit", headers=admin).status_code == 200


# Path parameters that name what `_seed` made (the others are drawn at random).
KNOWN = {
    "ref": "ana",
    "segment_id": "vip",
    "journey_id": "welcome",
    "version": 1,
    "template_id": "order-confirmation",
}


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
    assert len(succeeded) >= 20  # most of the others need data no fuzzer can guess


def _fuzz(operation: Any, base_url: str) -> set[int]:
    """Call the operation with drawn cases; the statuses it answered."""
    headers = {}
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            headers["Authorization"] = KEYS[scheme]

    names = {p.name for p in operation.path_parameters}
    known = {name: value for name, value in KNOWN.items() if name in names}
    strategies = [operation.as_strategy(mode) for mode in MODES]
    if known:
        strategies.append(operation.as_strategy(path_parameters=known))

    @given(case=st.one_of(strategies))
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
