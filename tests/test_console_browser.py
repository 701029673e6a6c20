"""The console checked as a person would, in Debian's Chromium (docs/console.md): the owner
sets up the account from the setup link and invites a marketer, a reviewer and a viewer,
who join from their links; a viewer is refused every change on the server; every page so
far in English and French at phone and desktop widths, saved as screenshots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from parcours import accounts
from parcours.customers import profiles
from parcours.journeys import LifecycleError, versions
from parcours.messaging import templates
from parcours.services import Services
from tests.browser import DESKTOP, PHONE, accessibility_problems, browser, screenshots_dir, sign_in
from tests.conftest import LiveServer, make_event, wait_until

__all__ = ["browser"]  # the fixture, used by name

PASSWORD = "a long enough passphrase"


def _join(context: Any, link: str, name: str, email: str | None = None) -> Any:
    page = context.new_page()
    page.goto(link)
    if email is not None:
        page.get_by_label("Email address").fill(email)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(re.compile(r".*/console/$"))
    return page


def _invite(page: Any, email: str, role: str) -> str:
    page.goto(page.url.split("/console")[0] + "/console/users")
    page.get_by_label("Email address").fill(email)
    page.locator("#f-role").select_option(role)
    page.get_by_role("button", name="Invite", exact=True).click()
    link = page.get_by_label("Invitation link").input_value()
    assert "/console/join?token=" in link
    return str(link)


def test_the_owner_sets_up_and_invites_the_team(
    browser: Any, live_server: LiveServer, services: Services, tmp_path: Path
) -> None:
    token = accounts.setup_link_token(services.db, services.clock.now_ms())
    setup_link = f"{live_server.url}/console/join?token={token}"

    owner_context = browser.new_context(locale="en-GB", viewport=DESKTOP)
    owner = _join(owner_context, setup_link, "Olivia Owner", "olivia@brand.example")
    assert owner.get_by_role("link", name="Olivia Owner").is_visible()

    links = {
        role: _invite(owner, f"{role}@brand.example", role)
        for role in ("marketer", "reviewer", "viewer")
    }
    pending = owner.locator("table").nth(1)
    assert pending.get_by_text("marketer@brand.example").is_visible()

    # The setup link worked once.
    again = owner_context.new_page()
    again.goto(setup_link)
    assert again.get_by_role("alert").inner_text().startswith("This link no longer works")

    for role, link in links.items():
        context = browser.new_context(locale="en-GB", viewport=PHONE)
        page = _join(context, link, f"{role.title()} Person")
        page.goto(f"{live_server.url}/console/users")
        row = page.get_by_role("row", name=re.compile(rf"\b{role}@brand\.example"))
        assert row.locator("td[data-label=Role]").inner_text() == role.title()
        if role == "viewer":
            _viewer_is_refused_every_change(page, live_server, services)
        context.close()

    # A write key for the site, shown once, that the tracking API takes.
    owner.goto(f"{live_server.url}/console/keys")
    owner.get_by_label("Name of a write key").fill("site")
    owner.get_by_role("button", name="Create the key").click()
    secret = owner.get_by_label("The new key").input_value()
    assert secret.startswith("pc_write_")
    tracked = httpx.post(
        f"{live_server.url}/v1/track",
        json={"userId": "u1", "event": "Product Viewed", "messageId": "m-console-1"},
        auth=(secret, ""),
    )
    assert tracked.status_code == 200, tracked.text
    owner.goto(f"{live_server.url}/console/keys")
    assert owner.get_by_label("The new key").count() == 0  # shown once only
    assert owner.get_by_role("row", name=re.compile("site")).is_visible()
    # The overview counts it (the hour's counts follow the log: docs/console.md).
    owner.goto(f"{live_server.url}/console/")
    today = owner.locator("section", has=owner.get_by_role("heading", name="Today"))
    events = today.locator(".figure", has_text="Events").locator(".value")
    assert events.inner_text() == "1"

    owner.goto(f"{live_server.url}/console/audit")
    assert owner.get_by_text("key.created").count() == 1
    assert owner.get_by_text("invitation.created").count() == 3
    assert owner.get_by_text("user.created").count() == 4
    owner_context.close()


def _viewer_is_refused_every_change(page: Any, live_server: LiveServer, services: Services) -> None:
    # Nothing to change is shown...
    assert page.get_by_role("button", name="Invite", exact=True).count() == 0
    csrf = page.locator("input[name=csrf]").first.input_value()
    with services.db.read() as conn:
        owner = next(u for u in accounts.all_users(conn) if u.role == "owner")
    # ...and what a hand-made request asks is refused by the server all the same.
    for path, form in (
        ("/console/users/invite", {"email": "intruder@brand.example", "role": "owner"}),
        (f"/console/users/{owner.id}/role", {"role": "viewer"}),
        (f"/console/users/{owner.id}/disable", {}),
        ("/console/keys", {"kind": "admin", "user": str(owner.id)}),
    ):
        answer = page.request.post(f"{live_server.url}{path}", form={"csrf": csrf, **form})
        assert answer.status == 403, path
    with services.db.read() as conn:
        users = accounts.all_users(conn)
    assert {u.email for u in users} == {
        "olivia@brand.example",
        "marketer@brand.example",
        "reviewer@brand.example",
        "viewer@brand.example",
    }
    assert next(u for u in users if u.id == owner.id).role == "owner"


def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    token = accounts.setup_link_token(services.db, services.clock.now_ms())
    context = browser.new_context(viewport=DESKTOP)
    page = _join(context, f"{live_server.url}/console/join?token={token}", "O", "o@brand.example")
    for csrf in ("", "forged"):
        answer = page.request.post(
            f"{live_server.url}/console/users/invite",
            form={"csrf": csrf, "email": "x@brand.example", "role": "viewer"},
        )
        assert answer.status == 403
    with services.db.read() as conn:
        assert accounts.pending_invitations(conn, services.clock.now_ms()) == []
    context.close()


@pytest.mark.parametrize("language", ["en", "fr"])
def test_every_page_in_both_languages_at_both_widths(
    browser: Any, live_server: LiveServer, services: Services, tmp_path: Path, language: str
) -> None:
    """Every page, in both languages, at a desktop's and a phone's width: it answers, has
    the menu, fits the screen, and (from SQLite: the same pages, the axe check the costly
    part of this test) passes axe-core's checks and is photographed."""
    folder = screenshots_dir(tmp_path)
    from parcours.journeys import ready_made_source

    journey = ready_made_source("abandoned-cart")  # a live journey: its page and its versions
    assert journey is not None
    versions.publish(services.db, journey, "mia@brand.example", "rob@brand.example", 0)
    token = accounts.setup_link_token(services.db, services.clock.now_ms())
    # axe-core is injected into the page: past the console's own CSP, for this test only.
    context = browser.new_context(locale=language, viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/console/join?token={token}")
    assert page.locator("html").get_attribute("lang") == language
    page.screenshot(path=folder / f"setup-{language}-desktop.png", full_page=True)
    page.locator("#f-email").fill("owner@brand.example")
    page.locator("#f-name").fill("Olivia Owner")
    page.locator("#f-password").fill(PASSWORD)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/console/$"))
    expected = {"en": "Users", "fr": "Utilisateurs"}[language]
    for name in (
        "overview",
        "customers",
        "shipments",
        "returns",
        "catalog",
        "carts",
        "tracking-preview",
        "segments",
        "journeys",
        "journeys-new",
        "journeys/abandoned-cart",
        "journeys/abandoned-cart/compare",
        "outbox",
        "templates",
        "templates/win-back-last-chance",
        "users",
        "keys",
        "audit",
        "account",
        "settings",
    ):
        path = {"overview": "/console/"}.get(name, f"/console/{name}")
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            answer = page.goto(f"{live_server.url}{path}")
            assert answer is not None and answer.status == 200, (name, answer)
            assert page.get_by_role("link", name=expected, exact=True).count() == 1
            # Nothing wider than the screen at phone width.
            overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 1, (name, width, overflow)
            if services.db.is_sqlite:  # the same pages from either database: checked once
                assert accessibility_problems(page) == [], (name, width)
                shot = name.replace("/", "-")
                page.screenshot(path=folder / f"{shot}-{language}-{width}.png", full_page=True)
    context.close()


def _sign_in(browser: Any, live_server: LiveServer, email: str) -> Any:
    context = browser.new_context(locale="en-GB", viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, live_server.url, email, PASSWORD)
    return page


def test_a_journey_is_built_by_one_person_and_approved_by_another(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    for role in ("marketer", "reviewer"):
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(db, link, email="", name=role, password=PASSWORD, now=now)

    marketer = _sign_in(browser, live_server, "marketer@brand.example")
    marketer.get_by_role("link", name="Journeys").click()
    marketer.get_by_role("link", name="Start from this one Abandoned cart").click()
    editor = marketer.get_by_label("The journey, in YAML")
    assert "id: abandoned-cart" in editor.input_value()
    # Checked as one types: a mistake is shown with its line, then its correction.
    editor.fill(editor.input_value().replace("steps:", "stepz:", 1))
    marketer.locator("#problems ul.problems").wait_for()
    assert "line" in marketer.locator("#problems").inner_text()
    editor.fill(editor.input_value().replace("stepz:", "steps:", 1))
    marketer.get_by_text("No problem found.").wait_for()
    marketer.get_by_role("button", name="Save as a new draft").click()
    marketer.wait_for_url(re.compile(r".*/console/journeys/abandoned-cart$"))
    marketer.get_by_role("button", name="Submit for review").click()
    marketer.get_by_text("in review", exact=True).first.wait_for()
    # The marketer cannot approve: no button, and the server refuses the request.
    assert marketer.get_by_role("button", name="Approve").count() == 0
    csrf = marketer.locator("input[name=csrf]").first.input_value()
    refused = marketer.request.post(
        f"{live_server.url}/console/journeys/abandoned-cart/versions/1/approve",
        form={"csrf": csrf},
    )
    assert refused.status == 403

    reviewer = _sign_in(browser, live_server, "reviewer@brand.example")
    reviewer.goto(f"{live_server.url}/console/journeys/abandoned-cart")
    reviewer.get_by_role("button", name="Approve").click()
    reviewer.get_by_role("button", name="Go live").click()
    reviewer.get_by_text("live", exact=True).first.wait_for()
    with db.read() as conn:
        review = versions.version_view(conn, "abandoned-cart", 1)
    assert (review.status, review.edited_by, review.submitted_by, review.approved_by) == (
        "live",
        "marketer@brand.example",
        "marketer@brand.example",
        "reviewer@brand.example",
    )
    assert review.approved_diff is not None and "+id: abandoned-cart" in review.approved_diff

    reviewer.goto(f"{live_server.url}/console/audit?action=journey.")
    log = reviewer.locator("tbody").inner_text()
    for action in ("journey.draft_saved", "journey.submit", "journey.approve", "journey.go_live"):
        assert action in log


def test_a_reviewer_who_submitted_a_version_cannot_approve_it(services: Services) -> None:
    """The domain refuses it, whatever the way in (the console checks first, in words)."""
    from parcours.journeys import ready_made_source

    db, now = services.db, services.clock.now_ms()
    source = ready_made_source("abandoned-cart")
    assert source is not None
    saved = versions.save_draft(db, source, "mia@brand.example", now)
    versions.change_status(db, saved.journey_id, 1, "submit", "rob@brand.example", now)
    with pytest.raises(LifecycleError, match="submitted version 1"):
        versions.change_status(db, saved.journey_id, 1, "approve", "ROB@brand.example", now)
    approved = versions.change_status(db, saved.journey_id, 1, "approve", "ana@brand.example", now)
    assert approved.approved_by == "ana@brand.example"


def test_an_admin_key_of_a_user_acts_with_that_users_role(client: Any, services: Services) -> None:
    """Through the admin API, a key made in the console for a user approves only if the
    user's role allows it: approvals are people's, not keys'."""
    from parcours.journeys import ready_made_source
    from parcours.runtime.keys import create_key

    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    keys = {}
    for role in ("marketer", "viewer", "reviewer"):
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        user = accounts.accept_invitation(db, link, email="", name=role, password=PASSWORD, now=now)
        keys[role] = create_key(db, "admin", user.email, user_id=user.id)
    source = ready_made_source("abandoned-cart")
    assert source is not None

    def call(role: str, method: str, path: str, body: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {keys[role]}", "Content-Type": "application/yaml"}
        return client.request(method, path, headers=headers, content=body)

    assert call("viewer", "POST", "/api/journeys", source).status_code == 403
    assert call("marketer", "POST", "/api/journeys", source).status_code == 201
    submit = "/api/journeys/abandoned-cart/versions/1/submit"
    assert call("marketer", "POST", submit).status_code == 200
    approve = "/api/journeys/abandoned-cart/versions/1/approve"
    refused = call("marketer", "POST", approve)
    assert refused.status_code == 403 and "journeys.approve" in refused.json()["message"]
    approved = call("reviewer", "POST", approve)
    assert (
        approved.status_code == 200 and approved.json()["approved_by"] == "reviewer@brand.example"
    )


def _team(services: Services, *roles: str) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    for role in roles:
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(db, link, email="", name=role, password=PASSWORD, now=now)


def test_support_finds_a_customer_reads_their_page_and_erases_them(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "support", "viewer")
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="u-42",
                traits={
                    "email": "Lea.Martin@example.com",
                    "name": "Léa Martin",
                    "consent": {"email": {"marketing": True}, "source": "signup form"},
                },
            ),
            make_event(userId="u-42", event="Product Viewed", properties={"sku": "SKU-9"}),
        ]
    )
    support = _sign_in(browser, live_server, "support@brand.example")
    support.get_by_role("link", name="Customers").click()
    for query in ("lea.mar", "Léa", "u-42"):
        support.get_by_label("Email, phone, name or any id").fill(query)
        support.get_by_role("button", name="Find").click()
        assert support.get_by_role("cell", name="lea.martin@example.com").is_visible(), query
    support.get_by_role("link", name=re.compile("cus_")).click()
    assert support.get_by_role("heading", name=re.compile("Léa Martin")).is_visible()
    timeline = support.locator("section", has=support.get_by_role("heading", name="Timeline"))
    assert "Product Viewed" in timeline.inner_text()
    consents = support.locator("table", has_text="Proof")
    assert "signup form" in consents.inner_text()
    customer_url = support.url

    viewer = _sign_in(browser, live_server, "viewer@brand.example")
    viewer.goto(customer_url)
    assert viewer.get_by_role("button", name="Erase this person").count() == 0
    csrf = viewer.locator("input[name=csrf]").first.input_value()
    customer_id = customer_url.rsplit("/", 1)[1]
    refused = viewer.request.post(
        f"{customer_url}/erase", form={"csrf": csrf, "confirm": f"cus_{customer_id}"}
    )
    assert refused.status == 403

    support.get_by_label(re.compile("to confirm the erasure")).fill("wrong")
    support.get_by_role("button", name="Erase this person").click()
    assert "type the customer's id exactly" in support.get_by_role("alert").inner_text()
    support.get_by_label(re.compile("to confirm the erasure")).fill(f"cus_{customer_id}")
    support.get_by_role("button", name="Erase this person").click()
    support.wait_for_url(re.compile(r".*/console/customers\?q=cus_"))
    assert support.get_by_text("No customer matches.").is_visible()
    with services.db.read() as conn:
        assert accounts.entries(conn, action="customer.erased")[0].user_email == (
            "support@brand.example"
        )


def test_a_message_appears_in_the_outbox_page_without_a_reload(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    """An order sent through the tracking API enters the customer in the live order
    confirmation; its message arrives on the open page by server-sent events."""
    from parcours.journeys import ready_made_source
    from parcours.runtime.keys import create_key

    _team(services)
    source = ready_made_source("order-confirmation")
    assert source is not None
    versions.publish(services.db, source, "mia@brand.example", "rob@brand.example", 0)
    write_key = create_key(services.db, "write", "site")
    services.start_worker()

    owner = _sign_in(browser, live_server, "owner@brand.example")
    owner.goto(f"{live_server.url}/console/outbox")
    owner.evaluate("window.stillTheSamePage = true")
    rows = owner.locator("#outbox-rows tr")
    assert rows.count() == 0
    owner.wait_for_timeout(500)  # the stream is open (EventSource connects on load)
    answer = httpx.post(
        f"{live_server.url}/v1/track",
        json={
            "userId": "u-7",
            "event": "Order Completed",
            "messageId": "order-7",
            "context": {"traits": {"email": "nina@example.com"}},
            "properties": {"order_id": "o-7", "total": 42, "currency": "EUR"},
        },
        auth=(write_key, ""),
    )
    assert answer.status_code == 200, answer.text
    rows.first.wait_for(timeout=20_000)
    assert "order-confirmation" in rows.first.inner_text()
    assert owner.evaluate("window.stillTheSamePage") is True
    # Filtered by another channel, the page shows nothing of it.
    owner.goto(f"{live_server.url}/console/outbox?channel=sms")
    assert owner.locator("#outbox-rows tr").count() == 0


def test_the_accessibility_check_sees_a_violation(browser: Any) -> None:
    page = browser.new_page()
    page.set_content('<html lang="en"><body><img src="x.png"><input type="text"></body></html>')
    found = accessibility_problems(page)
    assert any(problem.startswith("image-alt (critical)") for problem in found), found
    page.close()


def test_the_preference_centre_records_consent_with_its_proof(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="u-9",
                traits={
                    "email": "zoe@example.com",
                    "locale": "fr",
                    "consent": {
                        "email": {"marketing": True},
                        "sms": {"marketing": True},
                        "source": "signup form",
                    },
                },
            )
        ]
    )
    with services.db.read() as conn:
        customer_id = profiles.resolve(conn, "zoe@example.com", "FR")
    link = services.delivery.links.preferences(customer_id)
    assert link.startswith(services.settings.resolved_public_url)
    page = browser.new_page()
    page.goto(f"{live_server.url}{urlsplit(link).path}")
    assert page.locator("html").get_attribute("lang") == "fr"  # the customer's language
    assert page.get_by_label("E-mail").is_checked() and page.get_by_label("SMS").is_checked()
    page.get_by_label("E-mail").uncheck()
    page.get_by_role("button", name="Enregistrer mes choix").click()
    assert page.get_by_role("status").inner_text() == "Vos choix sont enregistrés."
    assert not page.get_by_label("E-mail").is_checked() and page.get_by_label("SMS").is_checked()
    with services.db.read() as conn:
        states = {(s.channel, s.purpose): s for s in profiles.current_consents(conn, customer_id)}
    email = states[("email", "marketing")]
    assert (email.status, email.source, email.wording_version) == (
        "withdrawn",
        "preference centre",
        "preference-centre-1",
    )
    assert email.wording is not None and "J’accepte de recevoir" in email.wording
    assert states[("sms", "marketing")].status == "granted"
    # Stop everything: every channel withdrawn.
    page.get_by_role("button", name="Ne plus rien recevoir de promotionnel").click()
    assert not page.get_by_label("SMS").is_checked()
    # A forged or altered link shows nothing of anyone.
    page.goto(f"{live_server.url}/p/not-a-token")
    assert page.get_by_role("alert").is_visible() and page.get_by_label("SMS").count() == 0
    page.close()


def test_a_template_is_previewed_for_a_customer_and_edited(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "marketer", "viewer")
    services.writer.append_sync(
        [
            make_event(
                "identify", userId="u-5", traits={"email": "eva@example.com", "first_name": "Eva"}
            )
        ]
    )
    marketer = _sign_in(browser, live_server, "marketer@brand.example")
    marketer.get_by_role("link", name="Templates").click()
    marketer.get_by_role("link", name="win-back-last-chance", exact=True).click()
    marketer.get_by_label("Customer (any id)").fill("eva@example.com")
    marketer.locator("#f-channel").select_option("sms")
    marketer.get_by_role("button", name="Show").click()
    assert "SMS segment" in marketer.locator(".notice").inner_text()
    # An edit that breaks the template is refused, naming the problem; nothing is saved.
    editor = marketer.get_by_label("Language, channel, fields (YAML)")
    editor.fill("en: {sms: {}}\n")
    marketer.get_by_role("button", name="Check and save").click()
    assert marketer.get_by_role("alert").is_visible()
    with services.db.read() as conn:
        assert templates.get(conn, "win-back-last-chance").origin == "shipped"
    # A good one is saved as the brand's, and its email is previewed at both widths.
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ customer.first_name }}"
        "</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    editor.fill(
        "en:\n  email:\n    subject: We miss you\n    mjml: '" + mjml + "'\n"
        "  sms:\n    text: 'Hi {{ customer.first_name }}'\n"
    )
    marketer.get_by_role("button", name="Check and save").click()
    marketer.get_by_text("the brand's").first.wait_for()
    marketer.get_by_label("Customer (any id)").fill("eva@example.com")
    marketer.locator("#f-channel").select_option("email")
    marketer.get_by_role("button", name="Show").click()
    for width in ("phone", "desktop"):
        body = marketer.frame_locator(f"iframe.{width}").locator("body")
        body.get_by_text("Hello Eva").wait_for()
    with services.db.read() as conn:
        assert accounts.entries(conn, action="template.saved")[0].user_email == (
            "marketer@brand.example"
        )

    viewer = _sign_in(browser, live_server, "viewer@brand.example")
    viewer.goto(f"{live_server.url}/console/templates/win-back-last-chance")
    assert viewer.get_by_role("button", name="Check and save").count() == 0
    csrf = viewer.locator("input[name=csrf]").first.input_value()
    refused = viewer.request.post(
        f"{live_server.url}/console/templates/win-back-last-chance",
        form={"csrf": csrf, "source": "en: {sms: {text: hi}}\n"},
    )
    assert refused.status == 403


def test_a_marketer_builds_a_segment_and_sees_who_is_in_it(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "marketer")
    services.writer.append_sync(
        [
            make_event(userId="u-1", event="Order Completed", properties={"order_id": f"o{n}"})
            for n in range(2)
        ]
        + [make_event(userId="u-2", event="Order Completed", properties={"order_id": "o9"})]
    )
    services.start_worker()
    marketer = _sign_in(browser, live_server, "marketer@brand.example")
    marketer.get_by_role("link", name="Segments").click()
    editor = marketer.get_by_label("The segment, in YAML")
    example = editor.input_value()
    editor.fill(example.replace("conditions:", "conditionz:"))
    marketer.get_by_role("button", name="Check and save").click()
    assert "line" in marketer.locator("ul.problems").inner_text()
    marketer.get_by_label("The segment, in YAML").fill(example)
    marketer.get_by_role("button", name="Check and save").click()
    marketer.wait_for_url(re.compile(r".*/console/segments/repeat-buyers$"))

    def one_member() -> bool:
        marketer.reload()
        return "up to date" in marketer.locator(".figures").inner_text()

    wait_until(one_member, 30, what="the segment to be evaluated")
    figures = marketer.locator(".figures").inner_text()
    assert figures.startswith("1")
    assert marketer.locator("main ul li a").count() == 1
    with services.db.read() as conn:
        assert accounts.entries(conn, action="segment.saved")[0].user_email == (
            "marketer@brand.example"
        )
