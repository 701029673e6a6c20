"""The Customers, Messages and API keys pages checked as a person would, in Debian's
Chromium (docs/console.md): support records a consent by hand and sees it on the page,
and the owner in the audit log; a message's later status changes on the open Messages
page without a reload; an admin key made in the console limited to one scope is refused
outside it by the real HTTP API; no serious accessibility violation on these pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from parcours import accounts
from parcours.customers import profiles
from parcours.messaging import Intent, add_intent
from parcours.services import Services
from tests.browser import DESKTOP, PHONE, accessibility_problems, browser, sign_in
from tests.conftest import START, LiveServer, make_event

__all__ = ["browser"]  # the fixture, used by name

PASSWORD = "a long enough passphrase"


def _team(services: Services, *roles: str) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    for role in roles:
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(
            db, link, email="", name=role.title(), password=PASSWORD, now=now
        )


def _sign_in(browser: Any, live_server: LiveServer, email: str, **options: Any) -> Any:
    context = browser.new_context(locale="en-GB", viewport=DESKTOP, **options)
    page = context.new_page()
    sign_in(page, live_server.url, email, PASSWORD)
    return page


def _accessible_at_both_widths(page: Any, what: str) -> None:
    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == [], (what, width)
        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 1, (what, width, overflow)
    page.set_viewport_size(DESKTOP)


def test_support_records_a_consent_by_hand_and_sees_it_on_the_page_and_in_the_audit_log(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "support")
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="u-42",
                traits={
                    "email": "lea@example.com",
                    "name": "Léa Martin",
                    "consent": {"email": {"marketing": True}, "source": "signup form"},
                },
            ),
            make_event(userId="u-42", event="Product Viewed", properties={"sku": "S-1"}),
        ]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "u-42", "FR")
    support = _sign_in(browser, live_server, "support@brand.example", bypass_csp=True)
    support.goto(f"{live_server.url}/console/customers/{customer}")
    support.evaluate("window.stillTheSamePage = true")
    support.get_by_text("Record a consent change by hand").click()
    support.locator("#f-consent-channel").select_option("email")
    support.locator("#f-consent-purpose").select_option("marketing")
    support.locator("#f-consent-status").select_option("withdrawn")
    # The reason is required: the browser asks for it before anything is sent.
    support.get_by_role("button", name="Record the consent").click()
    assert support.locator("#f-consent-reason:invalid").count() == 1
    support.get_by_label("Reason (kept as the proof)").fill("Asked by phone to stop emails")
    support.get_by_role("button", name="Record the consent").click()
    support.wait_for_url(re.compile(rf".*/console/customers/{customer}#h-consents$"))
    row = support.locator("#consents tr", has_text="email")
    assert "withdrawn" in row.inner_text()
    assert "console" in row.inner_text() and "Asked by phone to stop emails" in row.inner_text()
    # The timeline, filtered in place: the consent's event, with who recorded it.
    support.evaluate("window.stillTheSamePage = true")
    support.get_by_label("Event", exact=True).fill("Consent Updated")
    support.locator("#timeline").get_by_role("button", name="Filter").click()
    timeline = support.locator("#timeline ol.timeline")
    expect(timeline).not_to_contain_text("Product Viewed")
    assert support.locator("#timeline ol.timeline li").count() == 1
    assert "support@brand.example" in timeline.inner_text()
    assert support.evaluate("window.stillTheSamePage") is True
    support.get_by_text("Record a consent change by hand").click()
    _accessible_at_both_widths(support, "customer")

    owner = _sign_in(browser, live_server, "owner@brand.example")
    owner.goto(f"{live_server.url}/console/audit?action=customer.")
    entry = owner.get_by_role("row", name=re.compile("customer.consent_recorded"))
    assert "support@brand.example" in entry.inner_text()
    assert "Asked by phone to stop emails" in entry.inner_text()


def test_a_messages_later_status_changes_on_the_open_messages_page_without_a_reload(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services)
    services.writer.append_sync(
        [make_event("identify", userId="u-7", traits={"email": "nina@example.com"})]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "u-7", "FR")
    with services.db.write() as conn:
        first = add_intent(
            conn, Intent("a:0", customer, "email", "order-confirmation", "transactional"), START, {}
        )
        second = add_intent(
            conn, Intent("b:0", customer, "sms", "order-confirmation", "transactional"), START, {}
        )
    assert first is not None and second is not None
    owner = _sign_in(browser, live_server, "owner@brand.example", bypass_csp=True)
    owner.goto(f"{live_server.url}/console/outbox")
    owner.evaluate("window.stillTheSamePage = true")
    first_row, second_row = owner.locator(f"#msg_{first}"), owner.locator(f"#msg_{second}")
    assert "queued" in first_row.inner_text() and "queued" in second_row.inner_text()
    owner.wait_for_timeout(500)  # the stream is open (EventSource connects on load)
    with services.db.write() as conn:
        services.delivery.status(conn, first, "delivered", START)
    owner.locator(f"#msg_{first}", has_text="delivered").wait_for(timeout=20_000)
    with services.db.write() as conn:
        services.delivery.status(conn, first, "opened", START)
        services.delivery.status(
            conn, second, "failed", START, permanent=True, reason="30003 unreachable handset"
        )
    owner.locator(f"#msg_{first}", has_text="opened").wait_for(timeout=20_000)
    owner.locator(f"#msg_{second}", has_text="30003 unreachable handset").wait_for(timeout=20_000)
    assert "failed" in owner.locator(f"#msg_{second}").inner_text()
    # The row redrawn still follows: one more change reaches it.
    with services.db.write() as conn:
        services.delivery.status(conn, first, "clicked", START)
    owner.locator(f"#msg_{first}", has_text="clicked").wait_for(timeout=20_000)
    assert owner.evaluate("window.stillTheSamePage") is True
    assert owner.locator("#outbox-rows tr").count() == 2
    _accessible_at_both_widths(owner, "outbox")


def test_a_key_limited_to_a_scope_is_refused_outside_it_through_the_http_api(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "marketer")
    services.writer.append_sync(
        [make_event("identify", userId="u-1", traits={"email": "lea@example.com"})]
    )
    owner = _sign_in(browser, live_server, "owner@brand.example", bypass_csp=True)
    owner.goto(f"{live_server.url}/console/keys")
    _accessible_at_both_widths(owner, "keys")
    owner.locator("#f-kind").select_option("admin")
    owner.locator("#f-user").select_option(label="Marketer (marketer@brand.example)")
    owner.locator("#scope-customers-read").check()
    owner.get_by_role("button", name="Create the key").click()
    secret = owner.get_by_label("The new key").input_value()
    assert secret.startswith("pc_admin_")
    row = owner.get_by_role("row", name=re.compile("marketer@brand.example"))
    assert "customers:read" in row.inner_text()
    headers = {"Authorization": f"Bearer {secret}"}
    allowed = httpx.get(f"{live_server.url}/api/customers/lea@example.com", headers=headers)
    assert allowed.status_code == 200, allowed.text
    refused = httpx.get(f"{live_server.url}/api/journeys", headers=headers)
    assert refused.status_code == 403
    assert "journeys:read" in refused.json()["message"]
    with services.db.read() as conn:
        made = accounts.entries(conn, action="key.created")[0]
    assert made.after is not None and made.after["scopes"] == ["customers:read"]
