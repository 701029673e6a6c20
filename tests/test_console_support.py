"""The console's Customers, Messages and API keys pages and the invitations, over HTTP
(docs/console.md): a consent recorded by hand with its reason, audited in its
transaction and refused to a viewer; a customer's timeline filtered by event and period,
a page at a time, and their orders; the held and cancelled reasons in the viewer's
language; a message's later status on the open Messages page's stream; admin keys limited
to scopes of the admin API; invitations sent by email through the email channel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from parcours import accounts, messaging
from parcours.app import create_app
from parcours.console import outbox_pages
from parcours.customers import profiles
from parcours.log import queries as log_queries
from parcours.messaging import Intent, add_intent, cancel_run_intents, reasons
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.keys import SCOPES, create_key, list_keys
from parcours.runtime.settings import Settings
from parcours.services import Services
from parcours.web.guards import ADMIN_SCOPES, AdminKeyGuard, scope_of
from tests.conftest import START, make_event
from tests.peers import RunningSmtp, SmtpPeer

PASSWORD = "a long enough passphrase"


def _team(services: Services, *roles: str) -> dict[str, accounts.User]:
    """An owner (owner@brand.example) and one user of each role (<role>@brand.example)."""
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    team = {"owner": owner}
    for role in roles:
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        team[role] = accounts.accept_invitation(
            db, link, email="", name=role.title(), password=PASSWORD, now=now
        )
    return team


class Person:
    """A browser of one signed-in user, without a browser: their cookie and CSRF token."""

    def __init__(self, services: Services, email: str) -> None:
        self.client: TestClient[Any] = TestClient(app=create_app(services, close_on_shutdown=False))
        self.client.__enter__()
        answer = self.client.post(
            "/console/login", data={"email": email, "password": PASSWORD}, follow_redirects=False
        )
        assert answer.status_code == 303, answer.text
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get("/console/").text)
        assert found is not None
        self.csrf = found.group(1)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def post(self, path: str, form: dict[str, str]) -> Any:
        return self.client.post(path, data={"csrf": self.csrf, **form}, follow_redirects=False)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def people(services: Services) -> Iterator[dict[str, Person]]:
    signed: dict[str, Person] = {}
    yield signed
    for person in signed.values():
        person.close()


def _customer(services: Services, user_id: str = "u-1", **traits: Any) -> int:
    services.writer.append_sync([make_event("identify", userId=user_id, traits=traits)])
    with services.db.read() as conn:
        return profiles.resolve(conn, user_id, "FR")


# ---- consent by hand ------------------------------------------------------------------------


def test_support_records_a_consent_by_hand_with_its_proof_audited_together(
    services: Services, people: dict[str, Person]
) -> None:
    _team(services, "support")
    customer = _customer(
        services, email="lea@example.com", consent={"email": {"marketing": True}, "source": "form"}
    )
    support = people["support"] = Person(services, "support@brand.example")
    answer = support.post(
        f"/console/customers/{customer}/consent",
        {
            "channel": "email",
            "purpose": "marketing",
            "status": "withdrawn",
            "reason": "  Asked by phone   to stop the newsletter ",
        },
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("#h-consents")
    with services.db.read() as conn:
        states = {(s.channel, s.purpose): s for s in profiles.current_consents(conn, customer)}
        events = profiles.event_page(conn, customer, named="Consent Updated").events
        audit = accounts.entries(conn, action="customer.consent_recorded")
    email = states[("email", "marketing")]
    assert (email.status, email.source, email.wording, email.at) == (
        "withdrawn",
        "console",
        "Asked by phone to stop the newsletter",
        START,
    )
    # The proof in the log: who, why, when, from where.
    assert len(events) == 1
    assert events[0]["properties"] == {
        "channel": "email",
        "purpose": "marketing",
        "status": "withdrawn",
        "source": "console",
        "wording": "Asked by phone to stop the newsletter",
        "reason": "Asked by phone to stop the newsletter",
        "recorded_by": "support@brand.example",
    }
    assert events[0]["occurredAt"] == "2026-09-21T14:13:20.000Z"
    # ...and in the audit log, naming the event it wrote.
    assert len(audit) == 1 and audit[0].user_email == "support@brand.example"
    assert audit[0].target == f"cus_{customer}"
    assert audit[0].after is not None and audit[0].after["event"] == events[0]["messageId"]
    page = support.get(f"/console/customers/{customer}").text
    assert "Asked by phone to stop the newsletter" in page and "console" in page


def test_a_consent_by_hand_needs_its_reason_and_a_role_that_may_change_customers(
    services: Services, people: dict[str, Person]
) -> None:
    _team(services, "support", "viewer", "marketer")
    customer = _customer(services, email="lea@example.com")
    form = {"channel": "sms", "purpose": "marketing", "status": "granted", "reason": "by letter"}
    support = people["support"] = Person(services, "support@brand.example")
    no_reason = support.post(f"/console/customers/{customer}/consent", {**form, "reason": "  "})
    assert no_reason.status_code == 400
    assert "Give the reason for this consent change" in no_reason.text
    unknown = support.post(f"/console/customers/{customer}/consent", {**form, "channel": "fax"})
    assert unknown.status_code == 400
    forged = support.client.post(
        f"/console/customers/{customer}/consent", data=form, follow_redirects=False
    )
    assert forged.status_code == 403  # no CSRF token
    for role in ("viewer", "marketer"):
        person = people[role] = Person(services, f"{role}@brand.example")
        assert "Record the consent" not in person.get(f"/console/customers/{customer}").text
        assert person.post(f"/console/customers/{customer}/consent", form).status_code == 403
    assert support.post("/console/customers/999/consent", form).status_code == 404
    with services.db.read() as conn:
        assert profiles.current_consents(conn, customer) == []
        assert accounts.entries(conn, action="customer.consent_recorded") == []
    # The owner may.
    owner = people["owner"] = Person(services, "owner@brand.example")
    assert owner.post(f"/console/customers/{customer}/consent", form).status_code == 303
    with services.db.read() as conn:
        assert [c.status for c in profiles.current_consents(conn, customer)] == ["granted"]


# ---- the timeline, the orders ---------------------------------------------------------------


def test_the_timeline_is_filtered_by_event_and_period_a_page_at_a_time(
    services: Services, people: dict[str, Person]
) -> None:
    _team(services, "viewer")
    day = 86_400_000
    services.writer.append_sync(
        [make_event("identify", userId="u-1", traits={"name": "Léa"}, at=START - 10 * day)]
        + [
            make_event(
                userId="u-1", event="Product Viewed", properties={"n": n}, at=START - day + n
            )
            for n in range(60)
        ]
        + [
            make_event(
                userId="u-1",
                event="Order Completed",
                properties={"order_id": f"o-{n}", "total": 10 + n, "currency": "EUR"},
                at=START - n * 3 * day,
            )
            for n in range(3)
        ]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "u-1", "FR")
    viewer = people["viewer"] = Person(services, "viewer@brand.example")
    path = f"/console/customers/{customer}"

    def shown(answer: Any) -> list[str]:
        assert answer.status_code == 200, answer.text
        section = answer.text[answer.text.index('id="timeline"') :]
        return re.findall(r"<strong>([^<]+)</strong>", section)

    # A page at a time: 50, then the rest through "Older".
    first = viewer.get(path)
    assert len(shown(first)) == 50
    older = re.search(r'hx-get="(/console/customers/\d+/timeline\?before=\d+)"', first.text)
    assert older is not None
    rest = shown(viewer.get(older.group(1).replace("&amp;", "&")))
    assert len(rest) == 64 - 50 and rest[-1] == "identify"
    # By event name, and by a call's type.
    orders = shown(viewer.get(f"{path}/timeline", params={"event": "Order Completed"}))
    assert orders == ["Order Completed"] * 3
    assert shown(viewer.get(path, params={"event": "identify"})) == ["identify"]
    # By period (days in the brand's time zone, both included).
    one_day = viewer.get(f"{path}/timeline", params={"since": "2026-09-20", "until": "2026-09-20"})
    assert shown(one_day) == ["Product Viewed"] * 50 and "since=2026-09-20" in one_day.text
    recent = viewer.get(
        f"{path}/timeline", params={"event": "Order Completed", "since": "2026-09-18"}
    )
    assert shown(recent) == ["Order Completed"] * 2
    assert (
        "Older"
        not in viewer.get(
            f"{path}/timeline", params={"event": "Order Completed", "until": "2026-09-17"}
        ).text
    )
    nothing = viewer.get(f"{path}/timeline", params={"event": "Nothing Like It"})
    assert "No event matches." in nothing.text
    # A filtered page keeps its filter in the "Older" link.
    filtered = viewer.get(path, params={"event": "Product Viewed"})
    assert "event=Product+Viewed" in filtered.text
    assert len(shown(filtered)) == 50
    # Nonsense dates are left out, not an error.
    assert viewer.get(path, params={"since": "yesterday"}).status_code == 200
    assert viewer.get("/console/customers/999/timeline").status_code == 404

    # The orders, newest first, with their totals in the viewer's format.
    orders_section = first.text[
        first.text.index('id="h-orders"') : first.text.index('id="h-journeys"')
    ]
    assert re.findall(r"<code>(o-\d)</code>", orders_section) == ["o-0", "o-1", "o-2"]
    assert "€10.00" in orders_section and "€12.00" in orders_section


# ---- reasons in the viewer's language -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("no marketing consent for sms (never given)", ["consent_marketing_missing"]),
        ("no marketing consent for email (withdrawn)", ["consent_marketing_withdrawn"]),
        ("push consent withdrawn", ["consent_withdrawn"]),
        ("the same content (welcome) already went by email", ["duplicate"]),
        ("quiet hours (FR:08:00-21:00) in Europe/Paris", ["quiet_hours"]),
        (
            "frequency cap: 2 marketing message(s) per local day on all channels",
            ["frequency_cap_day"],
        ),
        ("frequency cap: 3 marketing message(s) per 168h on sms", ["frequency_cap_hours"]),
        (
            "email: no email address (or it bounced); sms: no phone number (or it is invalid)",
            ["unreachable_email", "unreachable_phone"],
        ),
        ("goal reached: Order Completed", ["goal_reached"]),
        ("goal reached: Order Completed (after its window)", ["goal_reached_late"]),
        ("exit condition: Unsubscribed", ["exit_condition"]),
        ("not delivered within 2h", ["not_within"]),
        ("gave up after 5 attempts: SMTP error: timed out", ["gave_up"]),
        # the journeys' own (journeys/entries.py, program.py, interpreter.py, times.py)
        ("trigger too old", ["trigger_too_old"]),
        ("re-entry too soon", ["reentry_too_soon"]),
        ("no properties.cart_id", ["no_entry_key"]),
        ("completed", ["completed"]),
        ("holdout (control group)", ["holdout"]),
        ("step wish: birthday is missing", ["at_step"]),
        ("the date in renewal has passed", ["date_passed"]),
        ("no time zone is known for the customer: the brand's", ["zone_unknown"]),
        ("550 5.1.1 mailbox unavailable", [None]),
    ],
)
def test_each_reason_parcours_writes_is_read_back_by_its_code(
    text: str, codes: list[str | None]
) -> None:
    assert [reason.code for reason in reasons.explain(text)] == codes


def test_the_reasons_read_back_are_the_ones_the_domain_writes(services: Services) -> None:
    """Written by the policies and channel choice themselves, not copied: a reworded
    reason fails here before it shows untranslated."""
    from parcours.messaging import choice, policies

    customer = _customer(services, email="lea@example.com")
    with services.db.write() as conn:
        for purpose in ("marketing", "transactional"):
            decision = policies.check(
                conn,
                policies.Policies(),
                policies.Message(customer, "sms", purpose, "welcome"),
                START,
                "FR",
            )
            if purpose == "marketing":
                assert reasons.explain(decision.reason)[0].code == "consent_marketing_missing"
    for channel in ("email", "sms", "push", "wallet", "chat"):
        code = reasons.explain(choice._UNREACHABLE[channel])[0].code
        assert code is not None and code.startswith("unreachable_")
    assert reasons.explain(choice.WINDOW_CLOSED)[0].code == "whatsapp_window"


def test_a_cancelled_message_says_why_in_french_on_the_messages_and_customer_pages(
    services: Services, people: dict[str, Person]
) -> None:
    team = _team(services, "viewer")
    customer = _customer(services, email="lea@example.com")
    with services.db.write() as conn:
        add_intent(
            conn,
            Intent("k-1:0", customer, "email", "welcome", "marketing", "welcome", 7, "s1"),
            START,
            {},
            "lea@example.com",
        )
        cancel_run_intents(conn, customer, 7, "goal reached: Order Completed", START)
    accounts.set_locale(services.db, team["viewer"], "fr")
    viewer = people["viewer"] = Person(services, "viewer@brand.example")
    outbox = viewer.get("/console/outbox").text
    assert "annulé" in outbox and "objectif atteint : Order Completed" in outbox
    page = viewer.get(f"/console/customers/{customer}").text
    assert "objectif atteint : Order Completed" in page
    # The API keeps saying it in English.
    with services.db.read() as conn:
        assert messaging.outbox_page(conn, 1, None)[0].error == "goal reached: Order Completed"


# ---- the Messages page's stream ---------------------------------------------------------------


def _events(body: str) -> list[tuple[str, str]]:
    """(event name, data) of each server-sent event in a body."""
    found = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), "")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if name:
            found.append((name, data))
    return found


def test_a_messages_later_status_comes_down_the_open_pages_stream(
    services: Services, people: dict[str, Person], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_pages, "STREAM_SECONDS", 1.0)
    monkeypatch.setattr(outbox_pages, "POLL_SECONDS", 0.2)
    _team(services)
    customer = _customer(services, email="lea@example.com")

    def intent(key: str) -> int:
        with services.db.write() as conn:
            made = add_intent(
                conn, Intent(key, customer, "email", "welcome", "transactional"), START, {}
            )
        assert made is not None
        return made

    first, second = intent("a:0"), intent("b:0")
    owner = people["owner"] = Person(services, "owner@brand.example")
    page = owner.get("/console/outbox").text
    stream = re.search(r'sse-connect="([^"]+)"', page)
    assert stream is not None
    url = stream.group(1).replace("&amp;", "&")
    assert f'sse-swap="msg_{first}"' in page  # each row listens for its own changes
    # Nothing changed: the stream says nothing.
    assert _events(owner.get(url).text) == []
    # A status reached, a bounce, and a new message.
    with services.db.write() as conn:
        services.delivery.status(conn, first, "delivered", START)
        services.delivery.status(
            conn, second, "failed", START, permanent=True, reason="550 5.1.1 no such user"
        )
    third = intent("c:0")
    said = dict(_events(owner.get(url).text))
    assert "delivered" in said[f"msg_{first}"] and f'id="msg_{first}"' in said[f"msg_{first}"]
    assert "failed" in said[f"msg_{second}"] and "550 5.1.1 no such user" in said[f"msg_{second}"]
    assert f'id="msg_{third}"' in said["message"]
    # From a page drawn after the change, only what changes next.
    fresh = re.search(r'sse-connect="([^"]+)"', owner.get("/console/outbox").text)
    assert fresh is not None
    assert _events(owner.get(fresh.group(1).replace("&amp;", "&")).text) == []


def test_a_sent_message_is_drawn_as_its_customer_saw_it(
    services: Services, people: dict[str, Person]
) -> None:
    from parcours.messaging import templates

    _team(services, "viewer")
    customer = _customer(services, email="lea@example.com", first_name="Léa")
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>Bonjour {{ customer.first_name }}"
        "</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    with services.db.write() as conn:
        content = {"en": {"email": {"subject": "A note", "mjml": mjml}, "sms": {"text": "Hi"}}}
        templates.save(conn, "note", content, "test", START)
        email = services.delivery.test_send(
            conn, "note", customer, "email", "lea@example.com", {}, START
        )
        sms = services.delivery.test_send(conn, "note", customer, "sms", "+33612345678", {}, START)
    services.worker.run_due()
    viewer = people["viewer"] = Person(services, "viewer@brand.example")
    outbox = viewer.get("/console/outbox").text
    assert f'hx-get="/console/outbox/{email}/drawn"' in outbox
    drawn = viewer.get(f"/console/outbox/{email}/drawn")
    assert drawn.status_code == 200 and "A note" in drawn.text
    frame = re.search(r'<iframe class="phone" sandbox="" src="([^"]+)"', drawn.text)
    assert frame is not None
    html = viewer.get(frame.group(1))
    assert html.status_code == 200 and "Bonjour Léa" in html.text
    assert "frame-ancestors 'self'" in html.headers["content-security-policy"]
    assert 'class="bubble"' in viewer.get(f"/console/outbox/{sms}/drawn").text
    assert f"/console/outbox/{email}/drawn" in viewer.get(f"/console/customers/{customer}").text
    assert viewer.get("/console/outbox/999/drawn").status_code == 404
    assert viewer.get(f"/console/outbox/{sms}/message.html").status_code == 404


# ---- admin key scopes -----------------------------------------------------------------------


def test_every_admin_route_needs_a_scope_of_the_list(services: Services) -> None:
    app = create_app(services, close_on_shutdown=False)
    guarded = [
        (method, handler)
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if any(isinstance(guard, AdminKeyGuard) for guard in handler.resolve_guards())
        for method in handler.http_methods - {"OPTIONS"}
    ]
    assert len(guarded) == len(ADMIN_SCOPES)
    for method, handler in guarded:
        assert scope_of(handler, method) in SCOPES, (method, handler.paths)
    assert set(ADMIN_SCOPES.values()) == set(SCOPES)


def test_a_key_limited_to_scopes_is_refused_outside_them_naming_the_scope(
    client: Any, services: Services
) -> None:
    team = _team(services, "marketer")
    limited = create_key(
        services.db,
        "admin",
        "marketer@brand.example",
        user_id=team["marketer"].id,
        scopes=["customers:read", "segments:read"],
    )
    unlimited = create_key(services.db, "admin", "owner@brand.example", user_id=team["owner"].id)
    _customer(services, email="lea@example.com")

    def call(key: str, method: str, path: str, **kwargs: Any) -> Any:
        return client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    assert call(limited, "GET", "/api/customers/lea@example.com").status_code == 200
    assert call(limited, "GET", "/api/segments").status_code == 200
    refused = call(limited, "GET", "/api/journeys")
    assert refused.status_code == 403
    assert "journeys:read" in refused.json()["message"]
    written = call(
        limited,
        "POST",
        "/api/customers/lea@example.com/consents",
        json={"channel": "email", "purpose": "marketing", "status": "granted", "source": "x"},
    )
    assert written.status_code == 403 and "customers:write" in written.json()["message"]
    # A key limited by none keeps today's reach.
    for path in ("/api/journeys", "/api/customers/lea@example.com", "/api/outbox"):
        assert call(unlimited, "GET", path).status_code == 200, path
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(services.db, "admin", "x@brand.example", scopes=["everything"])


def test_an_admin_key_made_in_the_console_keeps_the_scopes_ticked_audited(
    services: Services, people: dict[str, Person]
) -> None:
    team = _team(services, "marketer", "viewer")
    owner = people["owner"] = Person(services, "owner@brand.example")
    form = {
        "kind": "admin",
        "user": str(team["marketer"].id),
        "scope.journeys:read": "on",
        "scope.journeys:write": "on",
        "scope.nothing:known": "on",
    }
    made = owner.post("/console/keys", form)
    assert made.status_code == 201 and "pc_admin_" in made.text
    assert "journeys:write" in made.text  # shown in the list
    # A write key is never limited, whatever was ticked; an admin key without a tick isn't.
    assert (
        owner.post(
            "/console/keys", {"kind": "write", "name": "site", "scope.journeys:read": "on"}
        ).status_code
        == 201
    )
    assert (
        owner.post("/console/keys", {"kind": "admin", "user": str(team["owner"].id)}).status_code
        == 201
    )
    scopes = {key.name: key.scopes for key in list_keys(services.db) if key.user_id is not None}
    assert scopes == {
        "marketer@brand.example": ("journeys:read", "journeys:write"),
        "site": None,
        "owner@brand.example": None,
    }
    with services.db.read() as conn:
        created = accounts.entries(conn, action="key.created")
    assert [entry.after and entry.after["scopes"] for entry in reversed(created)] == [
        ["journeys:read", "journeys:write"],
        None,
        None,
    ]
    viewer = people["viewer"] = Person(services, "viewer@brand.example")
    assert viewer.post("/console/keys", form).status_code == 403


# ---- invitations by email -------------------------------------------------------------------


def _smtp_services(settings: Settings, clock: SimulatedClock, port: int) -> Services:
    email = {
        "provider": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "team@maison.example",
        "from_name": "Maison",
        "timeout": 5.0,
    }
    return Services.open(settings.with_overrides(channels={"email": email}), clock=clock)


def test_an_invitation_is_sent_by_email_in_the_language_chosen(
    settings: Settings, clock: SimulatedClock
) -> None:
    peer = SmtpPeer(dns={})
    with RunningSmtp(peer) as smtp:
        services = _smtp_services(settings, clock, smtp.port)
        try:
            _team(services)
            owner = Person(services, "owner@brand.example")
            answer = owner.post(
                "/console/users/invite",
                {"email": "nina@example.com", "role": "support", "language": "fr"},
            )
            owner.close()
            assert answer.status_code == 201, answer.text
            link = re.search(r'value="(http[^"]+/console/join\?token=[^"]+)"', answer.text)
            assert link is not None
            assert "The link was also sent by email to nina@example.com." in answer.text
            assert len(peer.received) == 1
            mail = peer.received[0]
            assert mail.recipients == ["nina@example.com"]
            message = mail.message
            subject = str(make_header(decode_header(message["Subject"])))
            assert subject == "Owner vous invite à rejoindre Parcours demo shop sur Parcours"
            body = message.get_payload(decode=True).decode()
            assert link.group(1) in body and "« Agent du service client »" in body
            with services.db.read() as conn:
                emailed = accounts.entries(conn, action="invitation.emailed")
            assert emailed[0].after is not None and emailed[0].after["sent"] is True
            assert emailed[0].after["language"] == "fr"
        finally:
            services.close()


def test_an_invitation_whose_email_fails_stands_and_says_so(
    settings: Settings, clock: SimulatedClock
) -> None:
    peer = SmtpPeer(dns={}, refuse={"nina@example.com": "550 5.1.1 no such user"})
    with RunningSmtp(peer) as smtp:
        services = _smtp_services(settings, clock, smtp.port)
        try:
            _team(services)
            owner = Person(services, "owner@brand.example")
            answer = owner.post(
                "/console/users/invite", {"email": "nina@example.com", "role": "viewer"}
            )
            owner.close()
            assert answer.status_code == 201
            assert "could not be sent" in answer.text and "no such user" in answer.text
            assert "/console/join?token=" in answer.text  # the link, to send by hand
            with services.db.read() as conn:
                pending = accounts.pending_invitations(conn, clock.now_ms())
                emailed = accounts.entries(conn, action="invitation.emailed")
            assert [invitation.email for invitation in pending] == ["nina@example.com"]
            assert emailed[0].after is not None and emailed[0].after["sent"] is False
        finally:
            services.close()


def test_with_email_in_the_sandbox_the_page_says_nothing_was_sent(
    services: Services, people: dict[str, Person]
) -> None:
    _team(services)
    owner = people["owner"] = Person(services, "owner@brand.example")
    answer = owner.post("/console/users/invite", {"email": "nina@example.com", "role": "viewer"})
    assert answer.status_code == 201
    assert "Email is in the sandbox here: nothing was sent to nina@example.com." in answer.text


def test_the_log_query_filters_stay_within_the_customer(services: Services) -> None:
    """The timeline's filters never reach another customer's events."""
    first = _customer(services, "u-1", email="a@example.com")
    _customer(services, "u-2", email="b@example.com")
    with services.db.read() as conn:
        rows, _ = log_queries.page_of(conn, first, limit=10, named="identify")
    assert [row.customer_id for row in rows] == [first]
    assert msgspec.json.decode(rows[0].payload)["userId"] == "u-1"
