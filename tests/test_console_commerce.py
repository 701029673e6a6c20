"""Commerce in the console (docs/console.md, "Commerce"), over HTTP on SQLite and
PostgreSQL, with orders, parcels, returns and the catalog sent through the writer: the
customer's orders with their lines, refunds, parcels and returns; the Shipments page with
stalled, delayed and problem parcels first, filtered by status; the Returns page by stage
and window; the Catalog and stock page; the tracking page's preview per stage and sector;
a viewer reads everything and changes nothing; French. Back-in-stock requests asked at the
public endpoint and reviews sent from their form: the Back in stock page per variant,
the Reviews page with its photos (to the signed-in only), filters, and moderation by a
marketer, audited, that no viewer can do."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import replace
from html import unescape
from typing import Any
from urllib.parse import parse_qsl

import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy import text

from parcours import accounts, commerce
from parcours.accounts import audit
from parcours.app import create_app
from parcours.customers import profiles
from parcours.log import Event
from parcours.log import queries as log_queries
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.db import Database, alembic_config
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import START, WRITE_KEY, make_event
from tests.test_reviews import PNG, form_path, send
from tests.test_shopify import empty_database_url

PASSWORD = "a long enough passphrase"
HOUR = 3_600_000
DAY = 24 * HOUR
__all__ = ["empty_database_url"]  # the fixture, used by name
LATER = START + 3 * DAY  # when the later reports come, and the pages are read


class Member:
    """A signed-in member of the brand's team, without a browser."""

    def __init__(self, services: Services, email: str, locale: str = "en") -> None:
        self.client: TestClient[Any] = TestClient(app=create_app(services, close_on_shutdown=False))
        self.client.__enter__()
        self.headers = {"Accept-Language": locale}
        answer = self.client.post(
            "/console/login",
            data={"email": email, "password": PASSWORD},
            headers=self.headers,
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        found = re.search(r'name="csrf" value="([^"]+)"', self.get("/console/").text)
        assert found is not None
        self.csrf = found.group(1)

    def get(self, path: str, **params: str) -> Any:
        path, _, query = path.partition("?")
        return self.client.get(
            path, params={**dict(parse_qsl(query)), **params}, headers=self.headers
        )

    def page(self, path: str, **params: str) -> str:
        answer = self.get(path, **params)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        return unescape(str(answer.text))

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def team(services: Services) -> Iterator[dict[str, Member]]:
    invite_team(services)
    members: dict[str, Member] = {}
    yield members
    for member in members.values():
        member.close()


def invite_team(services: Services) -> None:
    """The owner, and one member of each other role, each with PASSWORD."""
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    for role in ("support", "marketer", "reviewer", "viewer"):
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(
            db, link, email="", name=role.title(), password=PASSWORD, now=now
        )


def append(services: Services, *events: Event) -> None:
    services.writer.append_sync(list(events))


def placed(order_id: str, at: int = START, user: str = "ana", **extra: Any) -> Event:
    products = [
        {"product_id": "p1", "sku": "TEE-M", "name": "Linen tee", "price": 40, "quantity": 2},
        {"product_id": "p2", "name": "Canvas cap", "price": 25, "quantity": 1},
    ]
    return make_event(
        userId=user,
        event="Order Completed",
        at=at,
        properties={
            "order_id": order_id,
            "currency": "EUR",
            "total": 105,
            "products": products,
            **extra,
        },
    )


def scan(order_id: str, shipment_id: str, status: str, at: int, **extra: Any) -> Event:
    return make_event(
        userId="ana",
        event="Shipment Updated",
        at=at,
        properties={"shipment_id": shipment_id, "order_id": order_id, "status": status, **extra},
    )


def returned(name: str, return_id: str, order_id: str, at: int, **extra: Any) -> Event:
    return make_event(
        userId="ana",
        event=name,
        at=at,
        properties={"return_id": return_id, "order_id": order_id, **extra},
    )


def shop(services: Services, clock: SimulatedClock) -> int:
    """Ana's orders, parcels in every state, returns, a refund and a catalog; the clock at
    LATER plus an hour. Reports at START are recorded then, those at LATER then."""
    append(services, make_event("identify", userId="ana", traits={"email": "ana@example.com"}))
    append(
        services,
        placed("o-1", order_number="#1001"),
        *(placed(f"o-{n}") for n in range(2, 7)),
        placed("o-old", at=START - 40 * DAY),
        # s-stalled: on its way, nothing since START
        scan("o-1", "s-stalled", "label_created", START),
        scan("o-1", "s-stalled", "in_transit", START + HOUR, carrier="Colissimo", location="Lyon"),
        # s-done: delivered at START: old, but not stalled
        scan("o-5", "s-done", "delivered", START),
        scan("o-old", "s-old", "delivered", START - 39 * DAY),
        make_event(
            userId="ana",
            event="Order Refunded",
            at=START + HOUR,
            properties={"order_id": "o-1", "refund_id": "rf-1", "total": 25, "currency": "EUR"},
        ),
        make_event(
            userId="ana",
            event="Product Updated",
            at=START,
            properties={
                "product_id": "p1",
                "name": "Linen tee",
                "category": "Tops",
                "variants": [
                    {
                        "variant_id": "v1",
                        "sku": "TEE-M",
                        "variant": "M",
                        "price": 40,
                        "currency": "EUR",
                        "stock": 12,
                    },
                    {
                        "variant_id": "v2",
                        "sku": "TEE-L",
                        "variant": "L",
                        "price": 40,
                        "currency": "EUR",
                        "stock": 0,
                    },
                ],
            },
        ),
        make_event(
            userId="ana",
            event="Product Viewed",
            at=START,
            properties={"product_id": "p2", "name": "Canvas cap", "price": 25, "currency": "EUR"},
        ),
        make_event(
            userId="ana",
            event="Product Updated",
            at=START,
            properties={
                "product_id": "p9",
                "name": "Face serum",
                "consumable": True,
                "usage_days": 45,
                "price": 34,
                "currency": "EUR",
                "stock": 7,
            },
        ),
    )
    clock.advance_ms(3 * DAY)
    append(
        services,
        # s-late: its estimate passed at START + 1 day
        scan(
            "o-2",
            "s-late",
            "in_transit",
            LATER - HOUR,
            estimated_delivery_from=iso(START + DAY - 4 * HOUR),
            estimated_delivery_to=iso(START + DAY),
        ),
        # s-word: the carrier says it is late
        scan("o-6", "s-word", "in_transit", LATER - 2 * HOUR),
        scan("o-6", "s-word", "delayed", LATER - HOUR),
        # s-exc: a problem
        scan("o-3", "s-exc", "in_transit", LATER - 3 * HOUR),
        scan("o-3", "s-exc", "failed", LATER - HOUR),
        # s-ok: on its way, expected in two days
        scan("o-4", "s-ok", "in_transit", LATER - HOUR, estimated_delivery_at=iso(LATER + 2 * DAY)),
        returned("Return Requested", "r-1", "o-5", LATER - HOUR, reason="Too small"),
        returned("Return Requested", "r-old", "o-old", LATER - HOUR),
    )
    clock.advance_ms(HOUR)
    append(services, returned("Return Received", "r-old", "o-old", LATER))
    with services.db.read() as conn:
        return profiles.resolve(conn, "ana", "FR")


def ids_in(html: str, section: str, following: str) -> list[str]:
    part = html[html.index(section) : html.index(following)]
    return re.findall(r'<tr class="shipment-row">\s*<td[^>]*><code>([^<]+)</code>', part)


def test_the_customers_orders_with_their_parcels_refunds_and_returns(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    customer = shop(services, clock)
    support = team["support"] = Member(services, "support@brand.example")
    html = support.page(f"/console/customers/{customer}")
    orders = html[html.index('id="h-orders"') : html.index('id="h-journeys"')]
    # Newest first (o-old last), from commerce: lines, totals, refunds, parcels, returns.
    shown = re.findall(r"<summary><code>([^<]+)</code>", orders)
    assert shown[-1] == "o-old" and set(shown) == {f"o-{n}" for n in range(1, 7)} | {"o-old"}
    first = orders[orders.index("<code>o-1</code>") : orders.index("<code>o-2</code>")]
    assert "Linen tee" in first and "Canvas cap" in first and "€105.00" in first
    assert "€25.00 refunded" in first  # the refund
    assert "On its way" in first and "Lyon" in first and "Colissimo" in first  # the parcel
    assert 'aria-current="step"' in first and "Next · Out for delivery" in first
    fifth = orders[orders.index("<code>o-5</code>") :]
    assert "r-1 · requested" in fifth and "Too small" in fifth and "within the window" in fifth
    assert re.search(r'href="[^"]*/o/[^"]+">Tracking page</a>', first)
    # An order's page of its own.
    page = support.page("/console/orders/o-1")
    assert "Order #1001" in page and "Linen tee" in page and "s-stalled" in page
    assert f'href="/console/customers/{customer}"' in page
    assert support.get("/console/orders/nothing").status_code == 404


def test_stalled_delayed_and_problem_parcels_come_first(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    shop(services, clock)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    html = viewer.page("/console/shipments")
    attention = ids_in(html, 'id="h-attention"', 'id="h-others"')
    assert attention == ["s-stalled", "s-late", "s-word", "s-exc"]
    others = ids_in(html, 'id="h-others"', "</main>")
    assert set(others) == {"s-ok", "s-done", "s-old"}
    rows = html[html.index('id="h-attention"') : html.index('id="h-others"')]
    stalled = rows[rows.index("s-stalled") : rows.index("s-late")]
    assert "stalled" in stalled and 'href="/console/orders/o-1"' in stalled
    assert re.search(r'href="[^"]*/o/[^"]+">Tracking page', stalled)
    assert "delayed" in rows[rows.index("s-late") : rows.index("s-word")]
    assert "problem" in rows[rows.index("s-exc") :]
    # Stalled after a time of one's choosing: 100 hours, and s-stalled is not yet.
    longer = viewer.page("/console/shipments", stalled_after="100")
    assert ids_in(longer, 'id="h-attention"', 'id="h-others"') == ["s-late", "s-word", "s-exc"]
    # By status.
    moving = viewer.page("/console/shipments", status="in_transit")
    assert ids_in(moving, 'id="h-attention"', 'id="h-others"') == ["s-stalled", "s-late", "s-word"]
    assert ids_in(moving, 'id="h-others"', "</main>") == ["s-ok"]
    delivered = viewer.page("/console/shipments", status="delivered")
    assert ids_in(delivered, 'id="h-attention"', 'id="h-others"') == []
    assert sorted(ids_in(delivered, 'id="h-others"', "</main>")) == ["s-done", "s-old"]
    # A status not in the taxonomy is no filter.
    assert len(ids_in(viewer.page("/console/shipments", status="lost"), "<h1", "</main>")) == 7


def test_a_parcel_whose_estimate_moved_later_is_delayed_before_it_passes(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    """The carrier's estimate moved from two days to four: delayed at once, with the first
    estimate beside the new one (in both languages); an estimate brought forward, or one
    reported again, is no delay; a parcel delivered is no longer in the list."""
    first, later, sooner = LATER + 2 * DAY, LATER + 4 * DAY, LATER + DAY
    clock.advance_ms(LATER - 3 * HOUR - clock.now_ms())  # each report recorded as it comes
    append(services, make_event("identify", userId="ana", traits={"email": "ana@example.com"}))
    append(
        services,
        *(placed(f"o-{n}") for n in (1, 2, 3, 4)),
        *(
            scan(
                f"o-{n}",
                f"s-{name}",
                "in_transit",
                LATER - 3 * HOUR,
                estimated_delivery_at=iso(first),
            )
            for n, name in ((1, "slipped"), (2, "sooner"), (3, "same"), (4, "home"))
        ),
    )
    clock.advance_ms(HOUR)
    append(
        services,
        scan("o-1", "s-slipped", "in_transit", LATER - 2 * HOUR, estimated_delivery_at=iso(later)),
        scan("o-2", "s-sooner", "in_transit", LATER - 2 * HOUR, estimated_delivery_at=iso(sooner)),
        scan("o-3", "s-same", "in_transit", LATER - 2 * HOUR, estimated_delivery_at=iso(first)),
        scan("o-4", "s-home", "in_transit", LATER - 2 * HOUR, estimated_delivery_at=iso(later)),
        scan("o-4", "s-home", "delivered", LATER - HOUR),
    )
    clock.advance_ms(LATER - clock.now_ms())
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    html = viewer.page("/console/shipments")
    assert ids_in(html, 'id="h-attention"', 'id="h-others"') == ["s-slipped"]
    assert set(ids_in(html, 'id="h-others"', "</main>")) == {"s-sooner", "s-same", "s-home"}
    row = html[html.index("<code>s-slipped</code>") : html.index('id="h-others"')]
    assert "delayed" in row and "first expected by" in row
    # Its status filter keeps it first; French says it too.
    moving = viewer.page("/console/shipments", status="in_transit")
    assert ids_in(moving, 'id="h-attention"', 'id="h-others"') == ["s-slipped"]
    french = team["viewer-fr"] = Member(services, "viewer@brand.example", locale="fr")
    page = french.page("/console/shipments")
    row = page[page.index("<code>s-slipped</code>") : page.index('id="h-others"')]
    assert "en retard" in row and "attendu d'abord au plus tard le" in row
    with services.db.read() as conn:
        [line] = [s for s in commerce.shipments_delayed(conn, clock.now_ms()) if s.slipped]
    assert (line.shipment_id, line.first_estimated_to, line.estimated_to) == (
        "s-slipped",
        first,
        later,
    )


def test_migration_0041_takes_each_parcels_estimate_as_its_first(
    empty_database_url: str,
) -> None:
    db = Database(empty_database_url)
    try:
        command.upgrade(alembic_config(db), "0039")
        with db.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO commerce_shipments (shipment_id, status, progress, status_at, "
                    "first_status, estimated_to, created_at, updated_at) VALUES "
                    "('s-1', 'in_transit', 2, 5, 'in_transit', 900, 5, 5), "
                    "('s-2', 'in_transit', 2, 5, 'in_transit', NULL, 5, 5)"
                )
            )
        command.upgrade(alembic_config(db), "0041")
        with db.read() as conn:
            rows = conn.execute(
                text("SELECT shipment_id, first_estimated_to FROM commerce_shipments")
            ).all()
        assert sorted(tuple(row) for row in rows) == [("s-1", 900), ("s-2", None)]
    finally:
        db.dispose()


def test_the_configured_stalled_delay_is_the_shipments_pages_own(
    settings: Settings, clock: SimulatedClock
) -> None:
    """`shipment_stalled_after_hours`, the delay `Shipment Stalled` waits for, is the one
    the page starts with: 100 hours, and s-stalled (silent for 72) is not yet."""
    services = Services.open(replace(settings, shipment_stalled_after_hours=100), clock=clock)
    try:
        shop(services, clock)
        invite_team(services)
        viewer = Member(services, "viewer@brand.example")
        try:
            html = viewer.page("/console/shipments")
            assert ids_in(html, 'id="h-attention"', 'id="h-others"') == [
                "s-late",
                "s-word",
                "s-exc",
            ]
            assert 'name="stalled_after" type="number" min="1" max="1440" value="100"' in html
            shorter = viewer.page("/console/shipments", stalled_after="48")
            assert ids_in(shorter, 'id="h-attention"', 'id="h-others"')[0] == "s-stalled"
        finally:
            viewer.close()
    finally:
        services.close()


def test_the_returns_and_the_catalog(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    shop(services, clock)
    marketer = team["marketer"] = Member(services, "marketer@brand.example")

    def returns(**params: str) -> list[str]:
        html = marketer.page("/console/returns", **params)
        return re.findall(r'<tr class="return-row">\s*<td[^>]*><code>([^<]+)</code>', html)

    assert returns() == ["r-old", "r-1"]  # the latest changed first
    assert returns(status="requested") == ["r-1"]
    assert returns(status="received") == ["r-old"]
    assert returns(window="in") == ["r-1"]
    assert returns(window="out") == ["r-old"]
    html = marketer.page("/console/returns")
    assert "outside the window" in html and "Too small" in html
    assert 'href="/console/orders/o-old"' in html

    catalog = marketer.page("/console/catalog")
    assert re.findall(r'<tr class="product-row">.*?<code>([^<]+)</code>', catalog, re.S) == [
        "p1",
        "p2",
        "p9",
    ]
    tee = catalog[catalog.index("<code>p1</code>") : catalog.index("<code>p2</code>")]
    assert "12 in stock" in tee and "out of stock" in tee and "€40.00" in tee
    serum = catalog[catalog.index("<code>p9</code>") :]
    assert "lasts 45 days" in serum and "7 in stock" in serum
    cap = catalog[catalog.index("<code>p2</code>") : catalog.index("<code>p9</code>")]
    assert "seen in shoppers’ events only" in cap and "Deleted from the catalog" not in cap
    # Deleted by the shop: the page says so, with when.
    services.writer.append_sync(
        [
            make_event(
                event="Product Deleted",
                at=clock.now_ms(),
                identity_required=False,
                properties={"product_id": "p1"},
            )
        ]
    )
    catalog = marketer.page("/console/catalog")
    tee = catalog[catalog.index("<code>p1</code>") : catalog.index("<code>p2</code>")]
    assert "Deleted from the catalog" in tee and "12 in stock" not in tee


@pytest.mark.parametrize("stage", ["in_transit", "delivered", "exception", "returned_to_sender"])
def test_the_tracking_page_previewed_per_stage_and_sector(
    services: Services, team: dict[str, Member], stage: str
) -> None:
    marketer = team["marketer"] = Member(services, "marketer@brand.example")
    html = marketer.page("/console/tracking-preview", stage=stage, sector="beauty")
    assert "Return window shown: 14 days." in html and "by whatsapp" in html
    frame = re.search(r'<iframe class="phone"[^>]*src="([^"]+)"', html)
    assert frame is not None
    answer = marketer.get(frame.group(1))
    assert answer.status_code == 200
    assert "frame-ancestors 'self'" in answer.headers["content-security-policy"]
    shown = unescape(answer.text)
    assert "Face serum" in shown and "Lip balm" in shown and "Order #1042" in shown
    words = {
        "in_transit": "On its way",
        "delivered": "Delivered",
        "exception": "A problem on the way",
        "returned_to_sender": "Returned to the sender",
    }[stage]
    current = re.search(r'aria-current="step">\s*<span class="stage-name">([^<]+)<', shown)
    assert current is not None and current.group(1).strip() == words
    # Fashion's custom: 30 days to return; French.
    fashion = marketer.page("/console/tracking-preview", stage=stage, sector="fashion", lang="fr")
    assert "Return window shown: 30 days." in fashion
    page = marketer.page("/console/tracking-preview/page", stage=stage, sector="fashion", lang="fr")
    assert 'lang="fr"' in page and "Chemise en lin" in page and "30 jours" in page
    # Nothing real was read or written: there is no order.
    with services.db.read() as conn:
        assert commerce.order(conn, "preview") is None


def test_a_viewer_reads_every_page_and_changes_nothing(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    customer = shop(services, clock)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    paths = (
        "/console/shipments",
        "/console/returns",
        "/console/catalog",
        "/console/tracking-preview",
        "/console/orders/o-1",
        f"/console/customers/{customer}",
    )
    for path in paths:
        html = viewer.page(path)
        # No form that changes anything, but signing out.
        actions = re.findall(r'<form method="post" action="([^"]+)"', html)
        assert actions == ["/console/logout"], (path, actions)
    for path in paths[:5]:
        answer = viewer.client.post(path, data={"csrf": viewer.csrf}, headers=viewer.headers)
        assert answer.status_code in (404, 405), (path, answer.status_code)
    # Signed out: sent to sign in.
    with TestClient(app=create_app(services, close_on_shutdown=False)) as anonymous:
        for path in paths[:5]:
            answer = anonymous.get(path, follow_redirects=False)
            assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
    with services.db.read() as conn:
        assert commerce.order(conn, "o-1") is not None
        assert len(commerce.shipments_of_order(conn, "o-1")) == 1


def test_in_french(services: Services, clock: SimulatedClock, team: dict[str, Member]) -> None:
    customer = shop(services, clock)
    support = team["support"] = Member(services, "support@brand.example", locale="fr")
    shipments = support.page("/console/shipments")
    assert "À surveiller" in shipments and "bloqué" in shipments and "en retard" in shipments
    assert "incident" in shipments and "Expéditions" in shipments
    returns = support.page("/console/returns")
    assert "hors délai" in returns and "dans le délai" in returns
    catalog = support.page("/console/catalog")
    assert "12 en stock" in catalog and "en rupture" in catalog and "dure 45 jours" in catalog
    customer_page = support.page(f"/console/customers/{customer}")
    assert "Commandes" in customer_page and re.search(r"105,00\s€", customer_page)
    preview = support.page("/console/tracking-preview", stage="delivered", sector="home")
    assert "Délai de retour affiché : 30 jours." in preview


# ---- back in stock and reviews --------------------------------------------------------------

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


def sizes(services: Services, **stock: int) -> None:
    """The catalog's report of the shirt p-shirt, its variants with this stock."""
    append(
        services,
        make_event(
            event="Product Updated",
            identity_required=False,
            properties={
                "product_id": "p-shirt",
                "name": "Oxford shirt",
                "variants": [
                    {"variant_id": v, "variant": v.removeprefix("shirt-").upper(), "stock": n}
                    for v, n in stock.items()
                ],
            },
        ),
    )


def notify_me(client: TestClient[Any], email: str, variant_id: str) -> None:
    answer = client.post(
        "/v1/back-in-stock",
        json={
            "email": email,
            "variantId": variant_id,
            "consentWording": "Email me once when it is back.",
        },
        headers=BASIC,
    )
    assert answer.status_code == 200, answer.text


def wishes(services: Services, client: TestClient[Any], clock: SimulatedClock) -> None:
    """Two wait for the S, out of stock; the M came back for Cleo, and Dan waits for the
    next return."""
    sizes(services, **{"shirt-s": 0, "shirt-m": 0})
    notify_me(client, "ana@example.com", "shirt-s")
    notify_me(client, "cleo@example.com", "shirt-m")
    clock.advance_ms(HOUR)
    notify_me(client, "bob@example.com", "shirt-s")
    sizes(services, **{"shirt-s": 0, "shirt-m": 3})
    clock.advance_ms(HOUR)
    notify_me(client, "dan@example.com", "shirt-m")


def opinions(client: TestClient[Any], services: Services, clock: SimulatedClock) -> None:
    """Ana's reviews of o-1 (the tee 5, the cap 4, a photo) and, an hour later, o-2 (the
    tee 1), sent from their forms."""
    first = send(
        client,
        form_path(services, "o-1"),
        {"rating-1": "5", "rating-2": "4"},
        "Soft linen, true to size.",
        ("tee.png", PNG, "image/png"),
    )
    clock.advance_ms(HOUR)
    second = send(client, form_path(services, "o-2"), {"rating-1": "1"}, "Shrank in the wash.")
    assert (first.status_code, second.status_code) == (303, 303)


def test_the_back_in_stock_requests_per_variant(
    services: Services, clock: SimulatedClock, client: TestClient[Any], team: dict[str, Member]
) -> None:
    customer = shop(services, clock)
    # Ana and Bob are named; Cleo and Dan are known by the email they asked with.
    append(
        services,
        make_event("identify", userId="ana", traits={"name": "Ana Lima"}),
        make_event(
            "identify", userId="bob", traits={"email": "bob@example.com", "name": "Bob Stone"}
        ),
    )
    wishes(services, client, clock)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")

    def variants(**params: str) -> list[tuple[str, str, str]]:
        html = viewer.page("/console/back-in-stock", **params)
        return re.findall(
            r'<code>([^<]+)</code>.*?class="count-waiting">([^<]+)<.*?'
            r'class="count-notified">([^<]+)<',
            html,
            re.S,
        )

    # The most waiting first, each with its counts.
    assert variants() == [("shirt-s", "2", "0"), ("shirt-m", "1", "1")]
    html = viewer.page("/console/back-in-stock")
    small, medium = html.split('<section class="variant-requests"')[1:]
    assert "Oxford shirt · S" in small and "out of stock" in small
    assert "3 in stock" in medium
    # Its requests: waiting first (in the order they came), then the notified.
    assert re.findall(r'class="request-row request-(\w+)"', small) == ["waiting", "waiting"]
    assert re.findall(r'class="request-row request-(\w+)"', medium) == ["waiting", "notified"]
    assert "3 back in stock" in medium and "Email" in medium
    with services.db.read() as conn:
        ana = commerce.stock_requests(conn, variant_id="shirt-s")[0]
    assert ana.customer_id == customer
    # Who asked, by name, else the email they gave, each linked to their page.
    with services.db.read() as conn:
        bob, cleo = (profiles.resolve(conn, e, "FR") for e in ("bob", "cleo@example.com"))
    assert f'href="/console/customers/{customer}">Ana Lima</a>' in small
    assert f'href="/console/customers/{bob}">Bob Stone</a>' in small
    assert f'href="/console/customers/{cleo}">cleo@example.com</a>' in medium
    assert f"cus_{customer}" not in html
    # Filtered: only the variants with requests of that status, and only those requests.
    assert variants(status="notified") == [("shirt-m", "1", "1")]
    notified = viewer.page("/console/back-in-stock", status="notified")
    assert re.findall(r'class="request-row request-(\w+)"', notified) == ["notified"]
    assert [v[0] for v in variants(status="waiting")] == ["shirt-s", "shirt-m"]
    assert len(variants(status="lost")) == 2  # no such status: no filter
    # On Ana's page, her request.
    page = viewer.page(f"/console/customers/{customer}")
    requests = page[page.index('id="h-requests"') :]
    assert "<code>shirt-s</code>" in requests and "waiting" in requests
    # Bob erased: nothing of him is left on the page, neither his name nor his email.
    assert profiles.erase(services.db, services.people, "bob", "FR", clock.now_ms(), "test")
    html = viewer.page("/console/back-in-stock")
    assert "Bob Stone" not in html and "bob@example.com" not in html
    assert f"/console/customers/{bob}" not in html
    assert "Ana Lima" in html


def test_the_reviews_with_their_photos_filtered_by_rating_and_status(
    services: Services, clock: SimulatedClock, client: TestClient[Any], team: dict[str, Member]
) -> None:
    customer = shop(services, clock)
    opinions(client, services, clock)
    support = team["support"] = Member(services, "support@brand.example")

    def shown(**params: str) -> list[str]:
        html = support.page("/console/reviews", **params)
        return re.findall(r'<a href="/console/orders/([^"]+)">', html)

    assert shown() == ["o-2", "o-1"]  # the latest first
    html = support.page("/console/reviews")
    rows = html.split('<tr class="review-row')[1:]
    first = next(row for row in rows if 'href="/console/orders/o-1"' in row)
    assert 'aria-label="5 out of 5 stars">★★★★★</span> <span>Linen tee' in first
    assert 'aria-label="4 out of 5 stars">★★★★☆</span> <span>Canvas cap' in first
    assert "Soft linen, true to size." in html and "Shrank in the wash." in html
    assert f'href="/console/customers/{customer}"' in html and "in en" in html
    assert '<img src="/console/reviews/o-1/photo"' in html
    assert shown(rating="1") == ["o-2"]
    assert shown(rating="4") == ["o-1"]
    assert shown(rating="3") == []
    assert shown(status="published") == ["o-2", "o-1"]
    assert shown(status="hidden") == []
    # The photo, to the signed-in: the image its bytes are, and nothing else.
    photo = support.get("/console/reviews/o-1/photo")
    assert (photo.status_code, photo.content) == (200, PNG)
    assert photo.headers["content-type"] == "image/png"
    assert photo.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in photo.headers["content-security-policy"]
    assert support.get("/console/reviews/o-2/photo").status_code == 404  # none sent
    with TestClient(app=create_app(services, close_on_shutdown=False)) as anonymous:
        answer = anonymous.get("/console/reviews/o-1/photo", follow_redirects=False)
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
        assert answer.content != PNG
    # Support does not moderate: no button.
    assert 'action="/console/reviews/o-1/status"' not in html
    # On Ana's page, her reviews.
    page = support.page(f"/console/customers/{customer}")
    reviews = page[page.index('id="h-reviews"') : page.index('id="h-requests"')]
    assert "Shrank in the wash." in reviews and "o-1" in reviews


def test_a_marketer_hides_a_review_audited_and_a_viewer_cannot(
    services: Services, clock: SimulatedClock, client: TestClient[Any], team: dict[str, Member]
) -> None:
    customer = shop(services, clock)
    opinions(client, services, clock)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    marketer = team["marketer"] = Member(services, "marketer@brand.example")
    back = "/console/reviews?status=&rating=1&page_number=1"
    # The viewer sees no button, and the server refuses them.
    html = viewer.page("/console/reviews")
    assert re.findall(r'<form method="post" action="([^"]+)"', html) == ["/console/logout"]
    refused = viewer.client.post(
        "/console/reviews/o-2/status",
        data={"csrf": viewer.csrf, "status": "hidden", "back": back},
        headers=viewer.headers,
        follow_redirects=False,
    )
    assert refused.status_code == 403
    # Nor without the session's CSRF token.
    forged = marketer.client.post(
        "/console/reviews/o-2/status",
        data={"csrf": "forged", "status": "hidden"},
        headers=marketer.headers,
        follow_redirects=False,
    )
    assert forged.status_code == 403
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-2")
        assert review is not None and review.status == "published"
        assert audit.entries(conn, action="review.moderated") == []
        events_before = len(log_queries.all_of(conn, customer))
    # The marketer hides it, back to the list they were on.
    page = marketer.page("/console/reviews", rating="1")
    assert 'action="/console/reviews/o-2/status"' in page and ">Hide<" in page
    hidden = marketer.client.post(
        "/console/reviews/o-2/status",
        data={"csrf": marketer.csrf, "status": "hidden", "back": back},
        headers=marketer.headers,
        follow_redirects=False,
    )
    assert (hidden.status_code, hidden.headers["location"]) == (303, back)
    now = services.clock.now_ms()
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-2")
        [entry] = audit.entries(conn, action="review.moderated")
        events_after = len(log_queries.all_of(conn, customer))
    assert review is not None
    assert (review.status, review.moderated_by, review.moderated_at) == (
        "hidden",
        "marketer@brand.example",
        now,
    )
    assert (entry.user_email, entry.target, entry.at) == ("marketer@brand.example", "o-2", now)
    assert (entry.before, entry.after) == ({"status": "published"}, {"status": "hidden"})
    assert events_after == events_before  # nothing appended: the customer is told nothing
    # Hidden: out of the published ones, in the hidden ones, marked.
    assert "o-2" not in marketer.page("/console/reviews", status="published")
    hidden_list = marketer.page("/console/reviews", status="hidden")
    assert 'class="review-row review-hidden"' in hidden_list and ">Publish<" in hidden_list
    assert "by marketer@brand.example" in hidden_list
    # A second submission from the form keeps it hidden.
    again = send(client, form_path(services, "o-2"), {"rating-1": "2"}, "Shrank a little.")
    assert again.status_code == 303
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-2")
    assert review is not None and (review.status, review.submissions) == ("hidden", 2)
    # Published again, audited again; an unknown review or status is a 404.
    marketer.client.post(
        "/console/reviews/o-2/status",
        data={"csrf": marketer.csrf, "status": "published"},
        headers=marketer.headers,
    )
    with services.db.read() as conn:
        entries = audit.entries(conn, action="review.moderated")
    assert [e.after for e in entries] == [{"status": "published"}, {"status": "hidden"}]
    for order_id, status in (("o-9", "hidden"), ("o-1", "deleted")):
        answer = marketer.client.post(
            f"/console/reviews/{order_id}/status",
            data={"csrf": marketer.csrf, "status": status},
            headers=marketer.headers,
        )
        assert answer.status_code == 404


def test_back_in_stock_and_reviews_in_french(
    services: Services, clock: SimulatedClock, client: TestClient[Any], team: dict[str, Member]
) -> None:
    shop(services, clock)
    wishes(services, client, clock)
    opinions(client, services, clock)
    support = team["support"] = Member(services, "support@brand.example", locale="fr")
    waiting = support.page("/console/back-in-stock")
    assert "<h1>Retour en stock</h1>" in waiting and "en attente" in waiting
    assert "prévenu" in waiting and "3 en stock" in waiting and "en rupture" in waiting
    reviews = support.page("/console/reviews")
    assert "<h1>Avis</h1>" in reviews and 'aria-label="5 étoiles sur 5"' in reviews
    assert "publié" in reviews and "Toutes les notes" in reviews
    assert 'href="/console/back-in-stock">Retour en stock<' in reviews  # the navigation
