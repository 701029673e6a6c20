"""The routes and the OpenAPI document, pinned: a change to either shows in a review as a
change to this file or to `tests/openapi.json`.

To regenerate both after a deliberate change to the API:

    PARCOURS_UPDATE_OPENAPI=1 pytest -n 0 -s tests/test_openapi_document.py

then read the diff of `tests/openapi.json` and copy the printed route list into
ROUTES_IN_DOCUMENT."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

SNAPSHOT = Path(__file__).parent / "openapi.json"
UPDATE = os.environ.get("PARCOURS_UPDATE_OPENAPI") == "1"

# (method, path, the statuses documented, the key it needs)
ROUTES_IN_DOCUMENT: list[tuple[str, str, list[str], str]] = [
    ("GET", "/api/bounces", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/commerce/carrier-webhook", ["200", "400", "default"], "none"),
    ("GET", "/api/commerce/orders/{order_id}", ["200", "400", "401", "default"], "adminKey"),
    (
        "POST",
        "/api/commerce/orders/{order_id}/refunds",
        ["200", "400", "401", "default"],
        "adminKey",
    ),
    ("GET", "/api/customers/{ref}", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/customers/{ref}/consents", ["201", "400", "401", "default"], "adminKey"),
    ("GET", "/api/customers/{ref}/events", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/customers/{ref}/journeys", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/inbound-email", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/journeys", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/journeys", ["201", "400", "401", "default"], "adminKey"),
    ("POST", "/api/journeys/simulate", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/journeys/{journey_id}", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/journeys/{journey_id}/runs", ["202", "400", "401", "default"], "adminKey"),
    (
        "GET",
        "/api/journeys/{journey_id}/versions/{version}",
        ["200", "400", "401", "default"],
        "adminKey",
    ),
    (
        "GET",
        "/api/journeys/{journey_id}/versions/{version}/stats",
        ["200", "400", "401", "default"],
        "adminKey",
    ),
    (
        "POST",
        "/api/journeys/{journey_id}/versions/{version}/{move}",
        ["200", "400", "401", "default"],
        "adminKey",
    ),
    ("GET", "/api/outbox", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/segments", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/segments", ["201", "400", "401", "default"], "adminKey"),
    ("GET", "/api/segments/{segment_id}", ["200", "400", "401", "default"], "adminKey"),
    ("PUT", "/api/segments/{segment_id}", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/segments/{segment_id}/members", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/suppressions", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/suppressions/lift", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/templates", ["200", "400", "401", "default"], "adminKey"),
    ("GET", "/api/templates/{template_id}", ["200", "400", "401", "default"], "adminKey"),
    ("PUT", "/api/templates/{template_id}", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/templates/{template_id}/preview", ["200", "400", "401", "default"], "adminKey"),
    (
        "POST",
        "/api/templates/{template_id}/test-send",
        ["202", "400", "401", "default"],
        "adminKey",
    ),
    ("GET", "/api/wallet/orders/{order_id}", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/api/wallet/passes", ["201", "400", "401", "default"], "adminKey"),
    ("PATCH", "/api/wallet/passes/{serial}", ["200", "400", "401", "default"], "adminKey"),
    ("POST", "/chat/session", ["200", "400", "401", "default"], "writeKey"),
    ("GET", "/chat/widget.js", ["200", "400", "default"], "none"),
    ("GET", "/healthz", ["200", "400", "default"], "none"),
    ("GET", "/metrics", ["200", "400", "401", "default"], "metricsToken"),
    ("GET", "/push/sw.js", ["200", "400", "default"], "none"),
    ("GET", "/push/vapid-public-key", ["200", "400", "default"], "none"),
    ("GET", "/readyz", ["200", "400", "503", "default"], "none"),
    ("GET", "/t/c/{token}", ["302", "400", "404", "default"], "none"),
    ("GET", "/t/o/{token}", ["200", "400", "default"], "none"),
    ("GET", "/u/{token}", ["200", "400", "404", "default"], "none"),
    ("POST", "/u/{token}", ["200", "400", "404", "default"], "none"),
    ("POST", "/v1/alias", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/back-in-stock", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/batch", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/group", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/identify", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/page", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/push/subscribe", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/screen", ["200", "400", "401", "default"], "writeKey"),
    ("POST", "/v1/track", ["200", "400", "401", "default"], "writeKey"),
    ("GET", "/wallet/download/{token}", ["200", "400", "default"], "none"),
    ("GET", "/wallet/orders/add/{token}", ["200", "400", "404", "default"], "none"),
    (
        "GET",
        "/wallet/orders/v1/devices/{device}/registrations/{kind}",
        ["200", "204", "400", "default"],
        "none",
    ),
    (
        "DELETE",
        "/wallet/orders/v1/devices/{device}/registrations/{kind}/{identifier}",
        ["200", "400", "default"],
        "none",
    ),
    (
        "POST",
        "/wallet/orders/v1/devices/{device}/registrations/{kind}/{identifier}",
        ["200", "201", "400", "default"],
        "none",
    ),
    ("POST", "/wallet/orders/v1/log", ["200", "400", "default"], "none"),
    (
        "GET",
        "/wallet/orders/v1/orders/{kind}/{identifier}",
        ["200", "304", "400", "default"],
        "none",
    ),
    (
        "GET",
        "/wallet/v1/devices/{device}/registrations/{kind}",
        ["200", "204", "400", "default"],
        "none",
    ),
    (
        "DELETE",
        "/wallet/v1/devices/{device}/registrations/{kind}/{identifier}",
        ["200", "400", "default"],
        "none",
    ),
    (
        "POST",
        "/wallet/v1/devices/{device}/registrations/{kind}/{identifier}",
        ["200", "201", "400", "default"],
        "none",
    ),
    ("POST", "/wallet/v1/log", ["200", "400", "default"], "none"),
    ("GET", "/wallet/v1/passes/{kind}/{identifier}", ["200", "304", "400", "default"], "none"),
    ("POST", "/webhooks/postmark", ["200", "400", "default"], "none"),
    ("POST", "/webhooks/shopify", ["200", "400", "default"], "none"),
    ("POST", "/webhooks/twilio/inbound", ["200", "400", "default"], "none"),
    ("POST", "/webhooks/twilio/status", ["204", "400", "default"], "none"),
    ("GET", "/webhooks/whatsapp", ["200", "400", "default"], "none"),
    ("POST", "/webhooks/whatsapp", ["200", "400", "default"], "none"),
]


def routes_of(document: dict[str, Any]) -> list[tuple[str, str, list[str], str]]:
    found = []
    for path, item in sorted(document["paths"].items()):
        for method, operation in sorted(item.items()):
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            keys = [name for need in operation.get("security", []) for name in need]
            statuses = sorted(operation.get("responses", {}))
            found.append((method.upper(), path, statuses, ",".join(keys) or "none"))
    return found


def test_the_routes_are_the_pinned_ones(client: TestClient[Any]) -> None:
    document = client.get("/api/schema/openapi.json").json()
    found = routes_of(document)
    if UPDATE:
        print("ROUTES_IN_DOCUMENT = [")
        for route in found:
            print(f"    {route!r},")
        print("]")
    assert found == ROUTES_IN_DOCUMENT


def test_the_document_is_the_pinned_one(client: TestClient[Any]) -> None:
    document = client.get("/api/schema/openapi.json").json()
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE:
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8"), (
        "the OpenAPI document changed: see this module's docstring to regenerate it"
    )
