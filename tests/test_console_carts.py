"""The console's Carts page (docs/console.md, "Commerce"), over HTTP on SQLite and
PostgreSQL, with carts made by the shoppers' events sent through the writer and their
abandonment run by the worker on a simulated clock: the latest active first with status,
value, items and customer; the last 30 days' abandoned, recovered, rate and value; the
filters by status and period; a page at a time by its cursor; French; a viewer reads it
and changes nothing."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import TestClient

from parcours.app import create_app
from parcours.customers import profiles
from parcours.journeys import ready_made_source
from parcours.log import Event
from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.conftest import START, make_event
from tests.test_console_commerce import DAY, HOUR, Member, append, team
from tests.test_journeys_engine import advance, opt_in, publish

__all__ = ["team"]  # the fixture, used by name

MINUTE = 60_000
TEE = {
    "product_id": "p-tee",
    "variant_id": "v-tee-m",
    "sku": "TEE-M",
    "name": "Linen tee",
    "variant": "M",
    "price": 40,
    "currency": "EUR",
    "image_url": "https://cdn.shop.example/tee.png",
}
CAP = {"product_id": "p-cap", "sku": "CAP", "name": "Canvas cap", "price": 25, "currency": "EUR"}


def added(user: str, cart_id: str, at: int, product: dict[str, Any] = TEE, **extra: Any) -> Event:
    return make_event(
        userId=user,
        event="Product Added",
        at=at,
        properties={**product, "cart_id": cart_id, **extra},
    )


def ordered(user: str, order_id: str, at: int, **extra: Any) -> Event:
    return make_event(
        userId=user,
        event="Order Completed",
        at=at,
        properties={"order_id": order_id, "total": 80, "currency": "EUR", **extra},
    )


def carts(services: Services, clock: SimulatedClock) -> dict[str, int]:
    """Five carts: Ana's checkout abandoned then recovered by o-ana, Bob's converted by
    o-bob without being abandoned, Cleo's and an anonymous visitor's abandoned, Dan's
    still open; the clock two days later. Their customers' ids."""
    append(
        services,
        make_event("identify", userId="cleo", traits={"email": "cleo@example.com"}),
        make_event("identify", userId="bob", traits={"first_name": "Bob", "last_name": "Lenoir"}),
        added("ana", "c-ana", START),
        make_event(
            userId="ana",
            event="Checkout Started",
            at=START + MINUTE,
            properties={
                "cart_id": "c-ana",
                "checkout_id": "ck-ana",
                "value": 80,
                "currency": "EUR",
                "products": [{**TEE, "quantity": 2}],
            },
        ),
        added("bob", "c-bob", START + 10 * MINUTE, CAP),
        ordered("bob", "o-bob", START + 20 * MINUTE, cart_id="c-bob", total=25),
        added("cleo", "c-cleo", START + 30 * MINUTE, quantity=3),
        make_event(
            anonymousId="anon-1",
            event="Product Added",
            at=START + 40 * MINUTE,
            properties={**CAP, "cart_id": "c-anon"},
        ),
    )
    clock.advance_ms(2 * HOUR)  # Ana's and Cleo's carts have had an hour without activity
    services.worker.run_due()
    append(
        services,
        ordered("ana", "o-ana", START + 3 * HOUR, checkout_id="ck-ana"),
        added("dan", "c-dan", START + 4 * HOUR, CAP),
    )
    clock.advance_ms(2 * DAY)
    with services.db.read() as conn:
        return {ref: profiles.resolve(conn, ref, "FR") for ref in ("ana", "bob", "cleo", "dan")}


def rows(html: str) -> list[tuple[str, str]]:
    """Each cart's row: its id and its status, in the page's order."""
    return re.findall(
        r'<tr class="cart-row cart-(\w+)">\s*<td[^>]*>[^<]*<br><small><code>([^<]+)</code>', html
    )


def test_the_carts_latest_first_with_their_status_value_items_and_customer(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    ids = carts(services, clock)
    marketer = team["marketer"] = Member(services, "marketer@brand.example")
    html = marketer.page("/console/carts")
    # The latest active first: Dan's, then the visitor's (+ 40 min), Cleo's (+ 30), Bob's
    # (+ 10) and Ana's (+ 1 min: an order is no cart activity).
    assert rows(html) == [
        ("open", "c-dan"),
        ("abandoned", "c-anon"),
        ("abandoned", "c-cleo"),
        ("ordered", "c-bob"),
        ("recovered", "c-ana"),
    ]
    assert '<a href="/console/carts" aria-current="page">Carts</a>' in html
    cleo = html[html.index("c-cleo") : html.index("c-bob")]
    assert "abandoned" in cleo and "Abandoned " in cleo and "€120.00" in cleo
    assert "3 item(s)" in cleo and "Linen tee" in cleo and "(M)" in cleo
    assert "3 × €40.00" in cleo and 'src="https://cdn.shop.example/tee.png"' in cleo
    assert f'<a href="/console/customers/{ids["cleo"]}">cleo@example.com</a>' in cleo
    dan = html[html.index("c-dan") : html.index("c-anon")]
    assert "open" in dan and "1 item(s)" in dan and f">cus_{ids['dan']}</a>" in dan
    ana = html[html.index("c-ana") :]
    assert "recovered" in ana and "€80.00" in ana and 'href="/console/orders/o-ana"' in ana
    bob = html[html.index("c-bob") : html.index("c-ana")]
    assert "converted to an order" in bob and 'href="/console/orders/o-bob"' in bob
    assert "€25.00" in bob and ">Bob Lenoir</a>" in bob
    # The last 30 days: three abandoned, one recovered, a third of them, for €80.
    summary = html[html.index("The last 30 days") : html.index('<form method="get"')]
    figures = re.findall(r'<span class="value">([^<]+)</span>', summary)
    assert figures == ["3", "1", "33.3%", "€80.00"]
    # Product pictures come from the shop's hosts: the page's policy lets https images in.
    answer = marketer.get("/console/carts")
    assert "img-src 'self' data: https:" in answer.headers["content-security-policy"]


def test_the_filters_by_status_and_period(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    carts(services, clock)
    append(services, added("eve", "c-eve", clock.now_ms() - HOUR))  # within the last day
    support = team["support"] = Member(services, "support@brand.example")
    abandoned = rows(support.page("/console/carts", status="abandoned"))
    assert abandoned == [("abandoned", "c-anon"), ("abandoned", "c-cleo")]
    assert rows(support.page("/console/carts", status="recovered")) == [("recovered", "c-ana")]
    assert rows(support.page("/console/carts", status="open")) == [
        ("open", "c-eve"),
        ("open", "c-dan"),
    ]
    assert [c for _, c in rows(support.page("/console/carts", period="1"))] == ["c-eve"]
    assert rows(support.page("/console/carts", status="ordered", period="1")) == []
    assert len(rows(support.page("/console/carts", period="7"))) == 6
    # An unknown status or period is no filter.
    assert len(rows(support.page("/console/carts", status="gone", period="2"))) == 6
    # The chosen filters stay chosen.
    chosen = support.page("/console/carts", status="open", period="7")
    assert '<option value="open" selected>' in chosen and '<option value="7" selected>' in chosen


def test_a_page_at_a_time_by_its_cursor(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    # 55 carts, two of them active at the same moment (the cursor keeps both).
    append(
        services,
        *(added(f"shopper-{n}", f"c-{n:02}", START + (n // 2) * MINUTE) for n in range(55)),
    )
    clock.advance_ms(HOUR // 2)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    first = viewer.page("/console/carts")
    found = [c for _, c in rows(first)]
    assert len(found) == 50 and found[:3] == ["c-54", "c-53", "c-52"]
    more = re.search(r'<a href="(/console/carts\?[^"]+)">Older</a>', first)
    assert more is not None and "First page" not in first
    second = viewer.page(more.group(1).replace("&amp;", "&"))
    rest = [c for _, c in rows(second)]
    assert rest == ["c-04", "c-03", "c-02", "c-01", "c-00"]
    assert "First page" in second and ">Older<" not in second
    assert sorted(found + rest) == [f"c-{n:02}" for n in range(55)]


def test_in_french(services: Services, clock: SimulatedClock, team: dict[str, Member]) -> None:
    carts(services, clock)
    support = team["support"] = Member(services, "support@brand.example", locale="fr")
    html = support.page("/console/carts")
    assert "Paniers" in html and "Les 30 derniers jours" in html
    assert "Taux de récupération" in html and re.search(r"33,3\s%", html)
    assert "récupéré" in html and "converti en commande" in html and "abandonné" in html
    assert re.search(r"120,00\s€", html) and re.search(r"3 × 40,00\s€", html)
    assert "3 article(s)" in html and "Dernière activité" in html


def test_a_viewer_reads_the_carts_and_changes_nothing(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    carts(services, clock)
    viewer = team["viewer"] = Member(services, "viewer@brand.example")
    html = viewer.page("/console/carts")
    assert len(rows(html)) == 5
    assert re.findall(r'<form method="post" action="([^"]+)"', html) == ["/console/logout"]
    answer = viewer.client.post(
        "/console/carts", data={"csrf": viewer.csrf}, headers=viewer.headers
    )
    assert answer.status_code == 405
    with TestClient(app=create_app(services, close_on_shutdown=False)) as anonymous:
        answer = anonymous.get("/console/carts", follow_redirects=False)
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]


# ---- each abandoned cart's recovery message ------------------------------------------------


def recovery_carts(services: Services, clock: SimulatedClock) -> dict[str, int]:
    """The ready-made abandoned-cart journey live; Rita, who agreed to marketing on every
    channel, and Hugo, who never did, each leave a cart; Rita's push and recap go out an
    hour and two hours later, Hugo's are held; then Rita orders. Their customers' ids."""
    source = ready_made_source("abandoned-cart")
    assert source is not None
    publish(services, source)
    opt_in(services, "rita")
    append(
        services,
        make_event(
            "identify",
            userId="hugo",
            traits={"email": "hugo@example.com", "push_token": "token-hugo"},
        ),
        added("rita", "c-rita", clock.now_ms()),
        added("hugo", "c-hugo", clock.now_ms(), CAP),
    )
    advance(services, clock, 2 * HOUR + 10 * MINUTE, step=5 * MINUTE)
    append(services, ordered("rita", "o-rita", clock.now_ms(), cart_id="c-rita", total=40))
    advance(services, clock, 10 * MINUTE, step=5 * MINUTE)
    with services.db.read() as conn:
        return {ref: profiles.resolve(conn, ref, "FR") for ref in ("rita", "hugo")}


def test_each_abandoned_carts_recovery_messages_with_their_status_and_link(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    ids = recovery_carts(services, clock)
    marketer = team["marketer"] = Member(services, "marketer@brand.example")
    html = marketer.page("/console/carts")
    assert rows(html) == [("recovered", "c-rita"), ("abandoned", "c-hugo")]  # same moment
    assert '<th scope="col">Recovery message</th>' in html
    rita = html[html.index("c-rita") : html.index("c-hugo")]
    hugo = html[html.index("c-hugo") :]
    # Rita's push then her recap, each linked to the message as she got it, with how far
    # it got; the order after them recovered the cart, and ended the journey.
    assert 'href="/console/journeys/abandoned-cart"' in rita
    sent = re.findall(
        rf'<a href="(/console/outbox\?customer=cus_{ids["rita"]}&journey=abandoned-cart)'
        r'#msg_(\d+)">(\w+) · ([\w-]+)</a>\s*· '
        r'<span class="state state-(\w+)">([^<]+)</span>',
        rita,
    )
    assert [(channel, template) for _, _, channel, template, _, _ in sent] == [
        ("push", "abandoned-cart-push"),
        ("email", "abandoned-cart-recap"),
    ]
    assert all(status in ("sent", "delivered", "opened", "clicked") for *_, status, _ in sent)
    assert all(words == status for *_, status, words in sent)
    assert "Recovered " in rita and ", after the message" in rita
    assert "Journey ended: goal reached: Order Completed" in rita
    # The link opens the Messages page at that message's row; the row's drawing opens
    # in place (and without script, by its own link).
    link, number = sent[0][0], sent[0][1]
    listed = marketer.get(link.replace("&amp;", "&"))
    assert listed.status_code == 200 and f'<tr id="msg_{number}"' in listed.text
    assert f'hx-get="/console/outbox/{number}/drawn"' in rita
    assert f'<a href="/console/outbox/{number}/drawn">Open the message as it looked</a>' in rita
    drawn = marketer.get(f"/console/outbox/{number}/drawn")
    assert drawn.status_code == 200 and 'class="message message-push"' in drawn.text
    # Hugo gave no consent: his push and his recap were held, each with the reason.
    assert "/console/outbox/" not in hugo
    held = re.findall(
        r'(\w+) · ([\w-]+) · <span class="state state-held">held</span>\s*'
        r"<br><small>[^<]+</small><br><small class=\"reason\">([^<]+)</small>",
        hugo,
    )
    assert held == [
        ("push", "abandoned-cart-push", "no marketing consent for push (never given)"),
        ("email", "abandoned-cart-recap", "no marketing consent for email (never given)"),
    ]
    # In French.
    french = Member(services, "marketer@brand.example", locale="fr").page("/console/carts")
    assert "Message de relance" in french and "retenu" in french
    assert "pas de consentement marketing pour push (jamais donné)" in french
    assert "après le message" in french


def test_held_messages_follow_a_cart_into_the_profile_it_merged_into(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    """Hugo's cart was held under his profile; he then signs in on a tablet known from
    before (an older profile, which the merge keeps): the cart goes with him, and its page
    still says what was held and why (recorded under the profile merged away)."""
    append(services, make_event("page", anonymousId="tablet-7", name="Home"))
    clock.advance_ms(MINUTE)
    ids = recovery_carts(services, clock)
    append(services, make_event("identify", userId="hugo", anonymousId="tablet-7"))
    with services.db.read() as conn:
        survivor = profiles.resolve(conn, "hugo", "FR")
    assert survivor != ids["hugo"]  # the tablet's, the older, kept
    marketer = team["marketer"] = Member(services, "marketer@brand.example")
    html = marketer.page("/console/carts")
    hugo = html[html.index("c-hugo") :]
    assert f"/console/customers/{survivor}" in hugo
    held = re.findall(r'(\w+) · ([\w-]+) · <span class="state state-held">held</span>', hugo)
    assert held == [("push", "abandoned-cart-push"), ("email", "abandoned-cart-recap")]


def test_a_cart_abandoned_while_no_journey_is_live_says_so(
    services: Services, clock: SimulatedClock, team: dict[str, Member]
) -> None:
    carts(services, clock)
    support = team["support"] = Member(services, "support@brand.example")
    html = support.page("/console/carts")
    cleo = html[html.index("c-cleo") : html.index("c-bob")]
    assert "No message: no live journey starts on Cart Abandoned" in cleo
    ana = html[html.index("c-ana") :]
    assert "Recovered " in ana and "before any message went out" in ana
    dan = html[html.index("c-dan") : html.index("c-anon")]
    assert "Cart Abandoned" not in dan  # open: nothing to say
