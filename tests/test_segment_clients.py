"""The official Segment and RudderStack Python libraries, unchanged, against a real server."""

from __future__ import annotations

from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError
from sqlalchemy import select

from parcours.customers import profiles as customers
from parcours.log import events
from parcours.services import Services
from tests.conftest import WRITE_KEY, LiveServer


def stored_ids(services: Services) -> set[str]:
    with services.db.read() as conn:
        return set(conn.execute(select(events.c.message_id)).scalars())


def drive(client: Any) -> list[str]:
    """Every call of the spec; returns the messageIds the library generated."""
    calls = [
        client.identify(
            "u-42", {"email": "Lou@Example.com", "first_name": "Lou"}, anonymous_id="anon-42"
        ),
        client.track("u-42", "Product Viewed", {"product_id": "p-1", "price": 12.5}),
        client.page("u-42", "Shop", "Home", {"url": "https://shop.example/"}),
        client.screen("u-42", "App", "Cart", {"items": 2}),
        client.group("u-42", "company-7", {"name": "Acme"}),
        client.alias("anon-old", "u-42"),
        client.track(anonymous_id="anon-99", event="Cart Viewed", properties={"cart_id": "c"}),
    ]
    for success, _ in calls:
        assert success
    client.flush()
    return [message["messageId"] for _, message in calls]


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_library_lands_every_call(
    live_server: LiveServer, services: Services, gzip: bool
) -> None:
    errors: list[Any] = []
    client = SegmentClient(
        write_key=WRITE_KEY,
        host=live_server.url,
        sync_mode=True,
        gzip=gzip,
        max_retries=0,
        on_error=lambda e, b: errors.append(e),
    )
    sent = drive(client)
    assert errors == []
    assert set(sent) <= stored_ids(services)
    with services.db.read() as conn:
        person = customers.resolve(conn, "lou@example.com", "FR")
        assert customers.resolve(conn, "anon-42", "FR") == person
        assert customers.resolve(conn, "anon-old", "FR") == person
        traits = customers.profile(conn, person).traits
    assert traits["first_name"] == "Lou"


def test_rudderstack_library_lands_every_call(live_server: LiveServer, services: Services) -> None:
    errors: list[Any] = []
    client = RudderClient(
        write_key=WRITE_KEY,
        host=live_server.url,
        sync_mode=True,
        on_error=lambda e, b: errors.append(e),
        max_retries=0,
    )
    sent = drive(client)  # RudderStack gzips by default
    assert errors == []
    assert set(sent) <= stored_ids(services)


def test_a_wrong_write_key_is_reported_to_the_library(
    live_server: LiveServer, services: Services
) -> None:
    client = SegmentClient(write_key="wrong", host=live_server.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as caught:
        client.track("u-1", "Product Viewed")
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    assert caught.value.message == "unknown or revoked write key"
    assert stored_ids(services) == set()
