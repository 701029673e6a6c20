"""Back in stock (docs/commerce.md, "Back in stock"), on SQLite and PostgreSQL: the public
"notify me" endpoint records a request with its consent; a variant's stock returning
announces `Back In Stock` once per request, in the order they came, at most the stock
returned when the brand says so; a repeat is one request; bad input names its field;
merges and erasure follow; the ready-made journey sends the notice asked for on the
channel asked for: the email, or an SMS through Twilio's and a WhatsApp message through
Meta's loopback stand-ins, none once that channel's consent is withdrawn."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from litestar.testing import TestClient
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select

from parcours import commerce
from parcours.app import create_app
from parcours.commerce.tables import commerce_stock_requests
from parcours.customers import profiles as customers
from parcours.log import Event
from parcours.log import queries as log_queries
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import START, WRITE_KEY, make_event
from tests.peers import MetaPeer, TwilioPeer
from tests.test_channels import CERTAIN, events_named, outbox
from tests.test_journeys_engine import HOUR, advance, publish, sent

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
WORDING = "Email me once when this item is back in stock."
TEXT_WORDING = "Text me once when this item is back in stock."
JOURNEY = (
    Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates/back-in-stock.yaml"
).read_text(encoding="utf-8")


def append(services: Services, *events: Event) -> None:
    services.writer.append_sync(list(events))


def stock(services: Services, at: int, **variants: int) -> None:
    """The catalog's report: product p-tee with these variants' stock."""
    append(
        services,
        make_event(
            event="Product Updated",
            at=at,
            identity_required=False,
            properties={
                "product_id": "p-tee",
                "name": "Linen tee",
                "url": "https://shop.example/tee",
                "variants": [
                    {"variant_id": v, "variant": v.upper(), "stock": n, "sku": f"SKU-{v}"}
                    for v, n in variants.items()
                ],
            },
        ),
    )


def ask(client: TestClient[Any], **body: Any) -> Any:
    return client.post(
        "/v1/back-in-stock",
        json={"variantId": "v-m", "consentWording": WORDING, **body},
        headers=BASIC,
    )


def announced(services: Services) -> list[dict[str, Any]]:
    """The properties of every `Back In Stock`, in the order they were appended, with
    the customer's email."""
    with services.db.read() as conn:
        rows = log_queries.from_sources(conn, ("system",))
        emails = {}
        found = []
        for row in rows:
            if row.name != "Back In Stock":
                continue
            document = json.loads(row.payload)
            customer = int(row.customer_id)
            if customer not in emails:
                traits, _ = customers.traits_view(conn, customer)
                emails[customer] = traits.get("email")
            found.append({"email": emails[customer], **document["properties"]})
    return found


def requests(services: Services, **where: Any) -> list[commerce.StockRequest]:
    with services.db.read() as conn:
        return commerce.stock_requests(conn, **where)


class Phones(NamedTuple):
    services: Services
    client: TestClient[Any]
    twilio: TwilioPeer
    meta: MetaPeer


@pytest.fixture
def phones(settings: Settings, clock: SimulatedClock) -> Iterator[Phones]:
    """SMS through Twilio and WhatsApp through Meta, their loopback stand-ins, one call at
    a time (so that they arrive in the order they were made); a brand that notifies no
    more requests than the stock returned, its ready-made journey live, and the variant
    v-m out of stock."""
    with TwilioPeer() as twilio, MetaPeer() as meta:
        channels = {
            "sandbox": CERTAIN,
            "sms": twilio.provider_settings(connections=1),
            "whatsapp": meta.provider_settings(),
        }
        services = Services.open(
            settings.with_overrides(channels=channels, back_in_stock_limit_to_stock=True),
            clock=clock,
        )
        try:
            with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
                publish(services, JOURNEY)
                stock(services, START, **{"v-m": 0})
                yield Phones(services, client, twilio, meta)
        finally:
            services.close()


@pytest.fixture
def limited(
    settings: Settings, clock: SimulatedClock
) -> Iterator[tuple[Services, TestClient[Any]]]:
    services = Services.open(
        settings.with_overrides(back_in_stock_limit_to_stock=True), clock=clock
    )
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        yield services, client
    services.close()


def test_a_return_to_stock_announces_each_request_once_in_the_order_they_came(
    services: Services, client: TestClient[Any], clock: SimulatedClock
) -> None:
    stock(services, START, **{"v-m": 0, "v-l": 0})
    for name in ("cy", "ana", "bo"):
        answer = ask(client, email=f"{name}@example.com", pageUrl="https://shop.example/tee")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True, "status": "waiting", "inStock": False}
    ask(client, email="di@example.com", variantId="SKU-v-l")  # by SKU, the other size
    assert [r.status for r in requests(services)] == ["waiting"] * 4
    clock.advance_ms(HOUR)
    stock(services, START + HOUR, **{"v-m": 5, "v-l": 0})
    said = announced(services)
    assert [(p["email"], p["variant_id"]) for p in said] == [
        ("cy@example.com", "v-m"),
        ("ana@example.com", "v-m"),
        ("bo@example.com", "v-m"),
    ]
    first = requests(services)[0]
    assert said[0] == {
        "email": "cy@example.com",
        "request_id": str(first.request_id),
        "product_id": "p-tee",
        "variant_id": "v-m",
        "channel": "email",
        "stock": 5,
        "requested_at": "2026-09-21T14:13:20.000Z",
        "name": "Linen tee",
        "url": "https://shop.example/tee",
        "sku": "SKU-v-m",
        "variant": "V-M",
    }
    assert first.consent_wording == WORDING
    assert first.page_url == "https://shop.example/tee"
    assert [r.status for r in requests(services, variant_id="v-m")] == ["notified"] * 3
    assert [r.status for r in requests(services, variant_id="v-l")] == ["waiting"]
    # Out again and back again: those already told are not told twice.
    stock(services, START + 2 * HOUR, **{"v-m": 0})
    stock(services, START + 3 * HOUR, **{"v-m": 2, "v-l": 1})
    assert [p["email"] for p in announced(services)] == [
        "cy@example.com",
        "ana@example.com",
        "bo@example.com",
        "di@example.com",
    ]
    # A stock that only grows is no return: nothing more.
    stock(services, START + 4 * HOUR, **{"v-m": 9})
    assert len(announced(services)) == 4


def test_a_product_deleted_from_the_catalog_is_withdrawn_until_reported_again(
    services: Services, client: TestClient[Any], clock: SimulatedClock
) -> None:
    """`Product Deleted` (Shopify's products/delete): the product's variants out of
    stock, no new request for it, no notice from a report older than the deletion; a
    report after it brings the product back, and the requests waiting are told."""
    stock(services, START, **{"v-m": 3, "v-l": 0})
    assert ask(client, email="ana@example.com", variantId="v-l").status_code == 200
    deleted_at = START + HOUR
    append(
        services,
        make_event(
            event="Product Deleted",
            at=deleted_at,
            identity_required=False,
            properties={"product_id": "p-tee"},
        ),
    )
    with services.db.read() as conn:
        withdrawn = commerce.product(conn, "p-tee")
    assert withdrawn is not None and withdrawn.deleted_at == deleted_at
    assert {v.variant_id: v.stock for v in withdrawn.variants} == {"v-m": 0, "v-l": 0}
    refused = ask(client, email="bo@example.com", variantId="v-m")
    assert refused.status_code == 404
    error = refused.json()["error"]
    assert error["field"] == "productId" and "deleted from the catalog" in error["message"]
    # A report from before the deletion, come late: nothing changes, nobody is told.
    stock(services, START + HOUR // 2, **{"v-l": 5})
    with services.db.read() as conn:
        still = commerce.product(conn, "p-tee")
    assert still is not None and still.deleted_at == deleted_at and still.stock == 0
    assert announced(services) == []
    # Published again: back, and the request waiting since before is told.
    stock(services, START + 2 * HOUR, **{"v-l": 4})
    with services.db.read() as conn:
        back = commerce.product(conn, "p-tee")
    assert back is not None and back.deleted_at is None
    assert [(p["email"], p["variant_id"]) for p in announced(services)] == [
        ("ana@example.com", "v-l")
    ]


def test_a_repeated_request_is_one_request_and_asking_again_after_a_notice_is_new(
    services: Services, client: TestClient[Any], clock: SimulatedClock
) -> None:
    stock(services, START, **{"v-m": 0})
    ask(client, email="ana@example.com", messageId="m-1")
    ask(client, email="ana@example.com", messageId="m-1")  # a retry: stored once
    ask(client, email="ANA@example.com ")  # the same person, again: still one waiting
    assert len(requests(services)) == 1
    stock(services, START + HOUR, **{"v-m": 3})
    assert len(announced(services)) == 1
    stock(services, START + 2 * HOUR, **{"v-m": 0})
    answer = ask(client, email="ana@example.com")
    assert answer.json()["inStock"] is False
    assert [r.status for r in requests(services)] == ["notified", "waiting"]
    stock(services, START + 3 * HOUR, **{"v-m": 1})
    assert len(announced(services)) == 2


def test_the_brand_may_notify_no_more_requests_than_the_stock_returned(
    limited: tuple[Services, TestClient[Any]],
) -> None:
    services, client = limited
    stock(services, START, **{"v-m": 0})
    for name in ("ana", "bo", "cy"):
        ask(client, email=f"{name}@example.com")
    stock(services, START + HOUR, **{"v-m": 2})
    assert [p["email"] for p in announced(services)] == ["ana@example.com", "bo@example.com"]
    assert [r.status for r in requests(services)] == ["notified", "notified", "waiting"]
    assert [r.stock_returned for r in requests(services)] == [2, 2, None]
    stock(services, START + 2 * HOUR, **{"v-m": 0})
    stock(services, START + 3 * HOUR, **{"v-m": 1})
    assert [p["email"] for p in announced(services)][-1] == "cy@example.com"
    assert [r.status for r in requests(services)] == ["notified"] * 3


def test_a_variant_never_reported_then_in_stock_is_a_return(
    services: Services, client: TestClient[Any]
) -> None:
    append(
        services,
        make_event(
            event="Product Updated",
            identity_required=False,
            properties={"product_id": "p-cap", "name": "Cap"},  # no stock said
        ),
    )
    assert ask(client, email="ana@example.com", variantId=None, productId="p-cap").json() == {
        "success": True,
        "status": "waiting",
        "inStock": True,  # not tracked: the page may offer it
    }
    append(
        services,
        make_event(
            event="Product Updated",
            at=START + HOUR,
            identity_required=False,
            properties={"product_id": "p-cap", "stock": 4},
        ),
    )
    assert [(p["email"], p["variant_id"]) for p in announced(services)] == [
        ("ana@example.com", "p-cap")
    ]


def test_bad_requests_are_refused_naming_the_field(
    services: Services, client: TestClient[Any]
) -> None:
    stock(services, START, **{"v-m": 0, "v-l": 0})
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"email": None}, 400, "email"),
        ({"email": "not an address"}, 400, "email"),
        ({"email": "a@example.com", "variantId": "v-xl"}, 404, "variantId"),
        ({"email": "a@example.com", "variantId": None, "productId": "p-tee"}, 400, "variantId"),
        ({"email": "a@example.com", "variantId": None, "productId": "p-nope"}, 404, "productId"),
        ({"email": "a@example.com", "productId": "p-other"}, 400, "productId"),
        ({"email": "a@example.com", "variantId": None}, 400, "variantId"),
        ({"email": "a@example.com", "consentWording": None}, 400, "consentWording"),
        ({"email": "a@example.com", "consentWording": 3}, 400, "consentWording"),
        ({"email": "a@example.com", "channel": "fax"}, 400, "channel"),
        ({"email": "a@example.com", "channel": "push"}, 400, "channel"),  # not offered
        ({"email": "a@example.com", "channel": "sms"}, 400, "phone"),
        ({"email": "a@example.com", "channel": "whatsapp", "phone": None}, 400, "phone"),
        ({"channel": "sms", "phone": "+33 6 12"}, 400, "phone"),  # too short to be one
        ({"channel": "sms", "phone": "not a number"}, 400, "phone"),
        ({"channel": "whatsapp", "phone": 33612345678}, 400, "phone"),  # not text
        ({"email": "a@example.com", "phone": "12"}, 400, "phone"),  # bad even by email
        ({"email": None, "phone": "+33612345678"}, 400, "email"),  # a notice by email
        ({"email": "a@example.com", "marketing": True}, 400, "marketingWording"),
        ({"email": "a@example.com", "marketing": "yes"}, 400, "marketing"),
        ({"email": "a@example.com", "pageUrl": "javascript:alert(1)"}, 400, "pageUrl"),
        ({"email": "a@example.com", "colour": "red"}, 400, "colour"),
        ({"email": "a@example.com", "userHash": "abc"}, 400, "userHash"),
        ({"userId": "u-1", "userHash": "abc"}, 403, "userId"),  # verification not set up
    ]
    for body, status, field in cases:
        answer = ask(client, **body)
        assert (answer.status_code, answer.json()["error"]["field"]) == (status, field), body
        assert answer.headers["access-control-allow-origin"] == "*"
    refused = client.post("/v1/back-in-stock", json={"email": "a@example.com"})
    assert refused.status_code == 401  # no write key
    assert client.post("/v1/back-in-stock", content=b"[1]", headers=BASIC).status_code == 400
    preflight = client.options("/v1/back-in-stock")
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert requests(services) == []
    with services.db.read() as conn:  # nothing written: the catalog's report only
        assert [e.name for e in log_queries.from_sources(conn, ("api",))] == ["Product Updated"]


def test_the_consent_is_the_request_s_and_marketing_only_when_agreed(
    services: Services, client: TestClient[Any]
) -> None:
    stock(services, START, **{"v-m": 0})
    ask(client, email="ana@example.com", consentVersion="bis-2", locale="fr-FR")
    ask(
        client,
        email="bo@example.com",
        marketing=True,
        marketingWording="And the brand's news by email.",
        marketingVersion="news-3",
    )
    ask(
        client,
        phone="06 12 34 56 78",  # national: read in the brand's default region
        channel="sms",
        consentWording=TEXT_WORDING,
        marketing=True,
        marketingWording="And the brand's offers by text.",
    )
    with services.db.read() as conn:
        ana = customers.resolve(conn, "ana@example.com", "FR")
        bo = customers.resolve(conn, "bo@example.com", "FR")
        cy = customers.resolve(conn, "+33612345678", "FR")
        assert customers.current_consents(conn, ana) == []
        [granted] = customers.current_consents(conn, bo)
        [texted] = customers.current_consents(conn, cy)
        _, computed = customers.traits_view(conn, ana)
    assert (granted.channel, granted.purpose, granted.status) == ("email", "marketing", "granted")
    assert (texted.channel, texted.purpose, texted.status) == ("sms", "marketing", "granted")
    assert texted.wording == "And the brand's offers by text."
    [first, _, by_text] = requests(services)
    assert (first.channel, first.consent_wording, first.consent_version) == (
        "email",
        WORDING,
        "bis-2",
    )
    assert (by_text.customer_id, by_text.channel, by_text.consent_wording) == (
        cy,
        "sms",
        TEXT_WORDING,
    )
    assert computed.get("locale") == "fr-FR"  # the notice goes in their language


def test_merged_profiles_are_told_once_and_an_erasure_takes_the_requests(
    services: Services, client: TestClient[Any]
) -> None:
    stock(services, START, **{"v-m": 0, "v-l": 0})
    append(services, make_event("identify", userId="ana", traits={"email": "ana@example.com"}))
    ask(client, email="ana@example.com")
    ask(client, email="ana.work@example.com")  # another profile, until she signs in with it
    ask(client, email="ana.work@example.com", variantId="v-l")
    append(
        services,
        make_event("identify", userId="ana", traits={"email": "ana.work@example.com"}),
    )
    with services.db.read() as conn:
        survivor = customers.resolve(conn, "ana", "FR")
    assert {r.customer_id for r in requests(services)} == {survivor}
    stock(services, START + HOUR, **{"v-m": 2})
    assert [p["variant_id"] for p in announced(services)] == ["v-m"]  # once for two requests
    assert [r.status for r in requests(services, variant_id="v-m")] == ["notified", "notified"]
    erased = customers.erase(services.db, services.people, "ana", "FR", START, "test")
    assert erased is not None
    with services.db.read() as conn:
        left = conn.execute(select(func.count()).select_from(commerce_stock_requests)).scalar()
    assert left == 0


def test_the_ready_made_journey_sends_the_email_asked_for(
    services: Services, client: TestClient[Any], clock: SimulatedClock
) -> None:
    publish(services, JOURNEY)
    stock(services, START, **{"v-m": 0})
    ask(client, email="ana@example.com")
    stock(services, START + 1, **{"v-m": 3})
    advance(services, clock, 3 * HOUR, step=HOUR // 4)
    # The email (transactional: her request is its consent); the push needs her marketing
    # consent and an app, which she has not given.
    assert sent(services, "ana@example.com") == [("email", "back-in-stock-details")]


def test_requests_by_sms_and_whatsapp_are_sent_there_once_each_in_order(
    phones: Phones, clock: SimulatedClock
) -> None:
    services, client, twilio, meta = phones
    asked = [
        ("sms", "+33612345601"),
        ("whatsapp", "+33612345602"),
        ("sms", "06 12 34 56 03"),  # national: read in the brand's default region
        ("sms", "+33612345604"),  # beyond the stock returned: waits
    ]
    for channel, phone in asked:
        answer = ask(client, channel=channel, phone=phone, consentWording=TEXT_WORDING)
        assert answer.json() == {"success": True, "status": "waiting", "inStock": False}
    assert [(r.channel, r.status) for r in requests(services)] == [
        ("sms", "waiting"),
        ("whatsapp", "waiting"),
        ("sms", "waiting"),
        ("sms", "waiting"),
    ]
    stock(services, START + 1, **{"v-m": 3})
    advance(services, clock, 3 * HOUR, step=HOUR // 4)
    assert [(p["channel"], p["stock"]) for p in announced(services)] == [
        ("sms", 3),
        ("whatsapp", 3),
        ("sms", 3),
    ]
    body = "Parcours demo shop: Linen tee (V-M) is back in stock, as you asked. "
    assert [(m["To"], m["Body"]) for m in twilio.messages] == [
        ("+33612345601", body + "https://shop.example/tee"),
        ("+33612345603", body + "https://shop.example/tee"),
    ]
    # Outside the 24-hour window: the approved template, a utility one.
    [whatsapp] = meta.messages
    assert (whatsapp["to"], whatsapp["type"]) == ("33612345602", "template")
    assert whatsapp["template"] == {
        "name": "back_in_stock",
        "language": {"code": "en"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Linen tee (V-M)"},
                    {"type": "text", "text": "https://shop.example/tee"},
                ],
            }
        ],
    }
    assert [(m["channel"], m["template"], m["state"]) for m in outbox(services)] == [
        ("sms", "back-in-stock-sms", "sent"),
        ("whatsapp", "back-in-stock-whatsapp", "sent"),
        ("sms", "back-in-stock-sms", "sent"),
    ]
    assert [r.status for r in requests(services)] == ["notified"] * 3 + ["waiting"]
    # The next return tells the one left, and no one twice.
    stock(services, START + 4 * HOUR, **{"v-m": 0})
    stock(services, START + 5 * HOUR, **{"v-m": 1})
    advance(services, clock, 3 * HOUR, step=HOUR // 4)
    assert [m["To"] for m in twilio.messages] == ["+33612345601", "+33612345603", "+33612345604"]
    assert len(meta.messages) == 1


def test_no_sms_once_its_consent_is_withdrawn(phones: Phones, clock: SimulatedClock) -> None:
    services, client, twilio, _ = phones
    ask(
        client,
        channel="sms",
        phone="+33612345601",
        anonymousId="visitor-1",
        consentWording=TEXT_WORDING,
    )
    append(
        services,
        make_event(
            event="Consent Updated",
            at=START + HOUR,
            anonymousId="visitor-1",
            properties={
                "channel": "sms",
                "purpose": "transactional",
                "status": "withdrawn",
                "source": "preference centre",
            },
        ),
    )
    clock.advance_ms(HOUR)
    stock(services, START + 2 * HOUR, **{"v-m": 3})
    advance(services, clock, 3 * HOUR, step=HOUR // 4)
    assert [p["channel"] for p in announced(services)] == ["sms"]  # the request is told
    assert twilio.messages == []  # but no SMS goes
    assert sent(services, "+33612345601") == []
    held = [(e["channel"], e["reason"]) for e in events_named(services, "Message Held")]
    assert held == [("sms", "sms consent withdrawn"), ("push", "no push subscription")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_and_returns_read_the_requests_by_an_index(
    services: Services, client: TestClient[Any]
) -> None:
    """Every statement on the requests, as SQLite plans it: none reads the table whole,
    however many requests wait (a row-value IN of pairs once did). SQLite only: it plans
    without statistics, PostgreSQL by its own."""
    statements: list[tuple[str, Any]] = []

    def trace(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "commerce_stock_requests" in statement and statement.lstrip().startswith(
            ("SELECT", "UPDATE")
        ):
            statements.append((statement, parameters))

    engine = services.db.engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", trace)
    try:
        stock(services, START, **{"v-m": 0})
        ask(client, email="ana@example.com")
        ask(client, email="ana@example.com")
        stock(services, START + HOUR, **{"v-m": 1})
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", trace)
    assert statements
    with engine.connect() as conn:
        for statement, parameters in statements:
            many = isinstance(parameters, list)
            plan = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters[0] if many else parameters
            ).fetchall()
            steps = " / ".join(str(row[-1]) for row in plan)
            assert "SCAN commerce_stock_requests" not in steps, (statement, steps)
