"""Delivery through the channels: templates, the sandbox, the outbox API, channel choice and
fallback, SMTP with DKIM against a real SMTP server, unsubscribe and tracking links."""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from parcours.app import create_app
from parcours.customers import profiles as customers
from parcours.messaging import templates
from parcours.messaging.rendering import Renderer
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings, SettingsError
from parcours.services import Services
from tests.conftest import admin_headers, define_templates, make_event, wait_until
from tests.peers import DkimKey, RunningSmtp, SmtpPeer
from tests.test_journeys_engine import HOUR, MINUTE, advance, contact_traits, opt_in, track

# Feedback that always comes, at once and in full: the tests decide what fails.
CERTAIN = {"fail_rate": 0.0, "delivered_rate": 1.0, "open_rate": 0.0, "delivered_after_ms": 1000}


def journey(send: str, *, entry: str = "Go", goal: str = "Order Completed") -> str:
    return (
        f"id: j\nname: j\nentry: {{event: {entry}}}\ngoals: [{{event: {goal}}}]\n"
        f"steps:\n  - id: s\n    send: {send}\n"
    )


def open_services(settings: Settings, clock: SimulatedClock, **overrides: Any) -> Services:
    channels = overrides.pop("channels", {"sandbox": CERTAIN})
    return Services.open(settings.with_overrides(channels=channels, **overrides), clock=clock)


@pytest.fixture
def sandboxed(settings: Settings, clock: SimulatedClock) -> Iterator[Services]:
    services = open_services(settings, clock)
    yield services
    services.close()


def publish(services: Services, source: str) -> None:
    from parcours.journeys import versions as journeys

    define_templates(services, source)
    journeys.publish(services.db, source, "ana", "ben", services.clock.now_ms())


def outbox(services: Services) -> list[dict[str, Any]]:
    """The outbox, oldest first, as `GET /api/outbox` shows it (its JSON)."""
    from parcours.messaging.delivery import outbox_page

    with services.db.read() as conn:
        return [msgspec.to_builtins(m) for m in reversed(outbox_page(conn, 500, None))]


def events_named(services: Services, name: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        rows = conn.execute(
            text("SELECT payload FROM events WHERE name = :n ORDER BY seq"), {"n": name}
        ).scalars()
        return [json.loads(row)["properties"] for row in rows]


def consent_status(services: Services, user: str, channel: str) -> str | None:
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        for state in customers.current_consents(conn, customer):
            if (state.channel, state.purpose) == (channel, "marketing"):
                return state.status
    return None


# ---- templates ------------------------------------------------------------------------


@pytest.mark.parametrize("template_id", sorted(templates.shipped()))
def test_every_shipped_template_renders_in_english_and_french(template_id: str) -> None:
    template = templates.shipped()[template_id]
    assert {"en", "fr"} <= set(template.content)
    bare = {
        "customer": {},
        "event": {"event": "", "properties": {}},
        "cart": None,
        "order": None,
        "brand": {"name": "Maison", "url": "https://maison.example"},
        "links": {
            "shop": "https://maison.example",
            "unsubscribe": "https://p.example/u/x",
            "preferences": "https://p.example/p/x",
        },
        "message": {},
        "recommendations": lambda limit=4: [],  # commerce's (messaging/rendering.py)
    }
    for locale in ("en", "fr"):
        for channel in template.content[locale]:
            rendered = templates.render(template, channel, bare, locale)
            assert rendered.locale == locale
            assert all(value != "" for value in rendered.fields.values()), rendered.fields
            if channel == "email":
                assert rendered.fields["text"].strip()


def test_mjml_is_compiled_once_and_keeps_jinja_loops() -> None:
    template = templates.shipped()["abandoned-cart-recap"]
    context = {
        "customer": {"first_name": "Léa"},
        "event": {},
        "cart": {
            "products": [{"name": "Scarf", "quantity": 2}, {"name": "Coat"}],
            "total": "180.00",
            "currency": "EUR",
        },
        "order": None,
        "brand": {"name": "Maison", "url": "https://maison.example"},
        "links": {
            "shop": "https://maison.example/cart",
            "unsubscribe": "https://p.example/u/x",
            "preferences": "https://p.example/p/x",
        },
        "message": {},
    }
    rendered = templates.render(template, "email", context, "fr-FR")
    assert rendered.locale == "fr"
    html = rendered.fields["html"]
    assert html.index("Scarf") < html.index("Coat") < html.index("180,00\xa0€")
    assert 'href="https://maison.example/cart"' in html
    assert "font-weight: bold" in html.split("180,00")[0].rsplit("<", 3)[0] + html  # inlined
    assert "Scarf × 2" in rendered.fields["text"]


def test_locale_falls_back_to_the_brand_then_english() -> None:
    template = templates.check(
        "t", {"en": {"sms": {"text": "hi"}}, "fr": {"sms": {"text": "salut"}}}
    )
    assert template.locale_for("sms", "fr-CA", "en") == "fr"
    assert template.locale_for("sms", "de", "fr") == "fr"
    assert template.locale_for("sms", None, "en") == "en"
    assert template.locale_for("email", "fr", "en") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"en": {"sms": {"text": "{{ coupon }}"}}}, "t.en.sms.text: unknown variable 'coupon'"),
        ({"en": {"email": {"text": "x"}}}, "t.en.email: missing subject"),
        ({"en": {"fax": {"text": "x"}}}, "t.en.fax: unknown channel"),
        ({"en": {"sms": {"text": "{{ customer.name"}}}, "t.en.sms.text: unexpected end"),
        ({"EN": {"sms": {"text": "x"}}}, "t.EN: a locale is"),
        (
            {"en": {"whatsapp": {"template": "promo", "language": "en"}}},
            "t.en.whatsapp.category: one of marketing, utility, authentication",
        ),
        ({"en": {"sms": {"text": "{% include 'x' %}"}}}, "t.en.sms.text: templates cannot include"),
    ],
)
def test_a_bad_template_is_refused_with_where_and_why(content: Any, message: str) -> None:
    with pytest.raises(templates.TemplateProblem, match="^" + message.replace("(", r"\(")):
        templates.check("t", content)


def test_a_missing_value_fails_the_message_never_sends_a_blank() -> None:
    template = templates.check("t", {"en": {"sms": {"text": "Code {{ event.properties.code }}"}}})
    with pytest.raises(templates.TemplateProblem, match=r"t\.en\.sms\.text: .*'code'"):
        templates.render(template, "sms", {"event": {"properties": {}}}, "en")


def test_a_template_reads_the_values_it_is_given_and_no_python_inside_them() -> None:
    template = templates.check(
        "t",
        {
            "en": {
                "sms": {"text": "{{ customer.first_name }} {{ customer.keys | default('-') }}"},
                "push": {"title": "{{ customer.__class__ }}", "body": "x"},
            }
        },
    )
    customer = {"first_name": "Ana"}
    rendered = templates.render(template, "sms", {"customer": customer}, "en")
    assert rendered.fields["text"].startswith("Ana <built-in method keys")  # Jinja's own order
    with pytest.raises(templates.TemplateProblem, match="unsafe"):
        templates.render(template, "push", {"customer": customer}, "en")


def test_templates_api_saves_checks_and_previews(
    client: TestClient[Any], services: Services
) -> None:
    bad = client.put(
        "/api/templates/promo",
        content=b"en:\n  sms:\n    text: '{{ coupon }}'\n",
        headers=admin_headers(),
    )
    assert bad.status_code == 400
    assert "unknown variable 'coupon'" in bad.json()["error"]["message"]
    assert client.get("/api/templates/promo", headers=admin_headers()).status_code == 404
    good = client.put(
        "/api/templates/promo",
        json={
            "en": {"sms": {"text": "Hi {{ customer.first_name }}, -20% at {{ brand.name }}"}},
            "fr": {
                "sms": {"text": "Bonjour {{ customer.first_name }}, -20 % chez {{ brand.name }}"}
            },
        },
        headers=admin_headers(),
    )
    assert good.status_code == 200, good.text
    assert good.json()["origin"] == "brand"
    listed = client.get("/api/templates", headers=admin_headers()).json()["templates"]
    assert {"id": "promo", "origin": "brand"}.items() <= next(
        t for t in listed if t["id"] == "promo"
    ).items()
    assert any(t["id"] == "abandoned-cart-recap" and t["origin"] == "shipped" for t in listed)
    services.writer.append_sync(
        [make_event("identify", userId="lea", traits={"firstName": "Léa", "locale": "fr-FR"})]
    )
    preview = client.post(
        "/api/templates/promo/preview",
        json={"customer": "lea", "channel": "sms"},
        headers=admin_headers(),
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["content"] == {"text": "Bonjour Léa, -20 % chez Parcours demo shop"}
    assert preview.json()["locale"] == "fr"


def test_a_journey_with_an_unknown_template_is_not_submitted_nor_goes_live(
    client: TestClient[Any], services: Services
) -> None:
    source = journey("{channel: email, template: nowhere}")
    draft = client.post("/api/journeys", content=source, headers=admin_headers()).json()
    base = f"/api/journeys/j/versions/{draft['version']}"
    refused = client.post(f"{base}/submit", headers=admin_headers())
    assert refused.status_code == 409, refused.text
    assert "step s: unknown template 'nowhere'" in refused.json()["error"]["message"]
    assert refused.json()["error"]["problems"] == [
        {"line": 7, "path": "steps[0].send.template", "message": "unknown template 'nowhere'"}
    ]
    # Submitted and approved with the template, which then loses its email content.
    with services.db.write() as conn:
        templates.save(conn, "nowhere", {"en": {"email": PLAIN_EMAIL}}, "test", 0)
    assert client.post(f"{base}/submit", headers=admin_headers()).status_code == 200
    other = {"Authorization": "Bearer other"}
    from parcours.runtime.keys import ensure_key

    ensure_key(services.db, "admin", "other", "reviewer")
    assert client.post(f"{base}/approve", headers=other).status_code == 200
    with services.db.write() as conn:
        templates.save(conn, "nowhere", {"en": {"sms": {"text": "Hello"}}}, "test", 0)
    refused = client.post(f"{base}/go_live", headers=other)
    assert refused.status_code == 409, refused.text
    assert "step s: template 'nowhere' has no email content (it has sms)" in refused.text
    sms_only = journey("{channel: email, template: delivery-today}")
    with pytest.raises(Exception, match="template 'delivery-today' has no email content"):
        publish_strict(services, sms_only)


PLAIN_EMAIL = {"subject": "Hello", "text": "Hello"}


def publish_strict(services: Services, source: str) -> None:
    from parcours.journeys import versions as journeys

    journeys.publish(services.db, source, "ana", "ben", services.clock.now_ms())


# ---- the sandbox and the outbox -------------------------------------------------------


def test_a_template_changed_between_two_sends_is_the_one_the_second_uses(
    sandboxed: Services,
) -> None:
    publish(sandboxed, journey("{channel: sms, template: t}"))
    for user, words in (("ana", "First words"), ("bob", "Second words")):
        with sandboxed.db.write() as conn:
            templates.save(conn, "t", {"en": {"sms": {"text": words}}}, "test", 0)
        opt_in(sandboxed, user)
        track(sandboxed, user, "Go")
    assert [m["content"]["text"] for m in outbox(sandboxed)] == ["First words", "Second words"]


def test_a_sent_message_is_in_the_outbox_as_the_customer_sees_it(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        publish_strict(
            services,
            journey("{channel: email, template: abandoned-cart-recap}", entry="Checkout Started"),
        )
        opt_in(services, "lea", firstName="Léa", locale="fr")
        track(
            services,
            "lea",
            "Checkout Started",
            checkout_id="c1",
            total="120.00",
            currency="EUR",
            products=[{"name": "Écharpe", "quantity": 1}],
        )
        [message] = outbox(services)
        assert message["state"] == "sent" and message["status"] == "sent"
        assert message["to"] == "lea@example.com" and message["locale"] == "fr"
        assert message["content"]["subject"] == "Votre panier chez Parcours demo shop"
        assert "Bonjour Léa" in message["content"]["text"]
        assert "Écharpe" in message["content"]["html"]
        assert "/t/o/" in message["content"]["html"]  # the open pixel
        assert "/u/" in message["content"]["html"]  # the unsubscribe link, not tracked
        advance(services, clock, 2000, step=1000)
        [message] = outbox(services)
        assert message["status"] == "delivered"
        assert [e["channel"] for e in events_named(services, "Message Delivered")] == ["email"]
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            page = client.get("/api/outbox?limit=1", headers=admin_headers()).json()
            assert page["messages"][0]["id"] == message["id"]
            assert client.get("/api/outbox?limit=0", headers=admin_headers()).status_code == 400
            assert client.get("/api/outbox").status_code == 401
    finally:
        services.close()


def test_sandbox_feedback_is_the_same_for_the_same_seed(
    settings: Settings, clock: SimulatedClock
) -> None:
    rates = {"fail_rate": 0.2, "open_rate": 0.5, "click_rate": 0.5, "seed": "s1"}
    services = open_services(settings, clock, channels={"sandbox": rates})
    try:
        publish(services, journey("{channel: sms, template: t, purpose: transactional}"))
        for n in range(30):
            track(services, f"c{n}", "Go")
        advance(services, clock, 2 * HOUR, step=10 * MINUTE)
        statuses = [m["status"] for m in outbox(services)]
    finally:
        services.close()
    from parcours.channels.base import OutgoingMessage
    from parcours.channels.sandbox import SandboxProvider

    provider = SandboxProvider.from_config("sms", rates)
    expected = []
    for message in outbox_rows_keys(settings):
        outgoing = OutgoingMessage(message, 0, 0, "sms", "transactional", "", {}, "en")
        fates = [f.status for f in provider.feedback(outgoing)]
        expected.append("failed" if "failed" in fates else ("delivered" if fates else "sent"))
    assert statuses == expected
    assert 0 < statuses.count("failed") < 30


def outbox_rows_keys(settings: Settings) -> list[str]:
    from parcours.runtime.db import Database

    db = Database(settings.resolved_database_url)
    try:
        with db.read() as conn:
            return list(
                conn.execute(text("SELECT idempotency_key FROM outbox ORDER BY id")).scalars()
            )
    finally:
        db.dispose()


# ---- choosing the channel and falling back --------------------------------------------


def test_whatsapp_without_opt_in_goes_by_sms_and_says_why(sandboxed: Services) -> None:
    publish(sandboxed, journey("{channel: whatsapp, template: t, fallback: [sms]}"))
    consent = {"consent": {"sms": {"marketing": True}, "whatsapp": {"marketing": False}}}
    sandboxed.writer.append_sync(
        [make_event("identify", userId="ana", traits={**contact_traits("ana"), **consent})]
    )
    track(sandboxed, "ana", "Go")
    assert [(m["channel"], m["state"]) for m in outbox(sandboxed)] == [("sms", "sent")]
    [chosen] = events_named(sandboxed, "Channel Chosen")
    assert chosen["chosen"] == "sms"
    assert chosen["passed_over"] == [
        {"channel": "whatsapp", "reason": "no marketing consent for whatsapp (withdrawn)"}
    ]


def test_a_permanent_failure_falls_back_to_the_next_channel(
    settings: Settings, clock: SimulatedClock
) -> None:
    # Every WhatsApp message fails (the sandbox's failure rate), SMS works.
    services = open_services(settings, clock, channels={"sandbox": {**CERTAIN, "fail_rate": 1.0}})
    try:
        services.delivery.providers.by_channel["sms"] = type(
            services.delivery.providers.by_channel["sms"]
        ).from_config("sms", CERTAIN)
        publish(services, journey("{channel: whatsapp, template: t, fallback: [sms]}"))
        opt_in(services, "ana")
        track(services, "ana", "Go")
        advance(services, clock, 5000, step=1000)
        sent = [(m["channel"], m["status"]) for m in outbox(services)]
        assert sent == [("whatsapp", "failed"), ("sms", "delivered")]
        [fell] = events_named(services, "Message Fell Back")
        assert fell["from"] == "whatsapp" and fell["to"] == "sms"
        assert "131026" in fell["reason"]
        keys = [m["idempotency_key"] for m in outbox(services)]
        assert keys[0].endswith(":0") and keys[1].endswith(":1")
    finally:
        services.close()


def test_sends_undone_with_their_set_go_only_as_claimed_again_and_once(
    settings: Settings, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sends are claimed in sets. One failing undoes its set, whose jobs run again one at
    a time: a message claimed by the undone set but not claimed again (its job failed on
    its own this time) is not handed over then; the one that fails every time stays
    pending, never sent; the others go once; the failed one goes once, later."""
    services = open_services(settings, clock)
    try:
        publish(services, journey("{channel: email, template: t}"))
        for user in ("ana", "bob", "cyd"):
            opt_in(services, user)
        with services.db.read() as conn:
            ids = {user: customers.resolve(conn, user, "FR") for user in ("ana", "bob", "cyd")}
        renders: dict[str, int] = {}
        render = Renderer.render

        def failing(self: Renderer, conn: Any, row: Any, detail: Any, links: Any) -> Any:
            user = next(u for u, c in ids.items() if c == row.customer_id)
            renders[user] = renders.get(user, 0) + 1
            # bob fails each time; ana fails only the second time (in the set, then on
            # her own): the undone set had claimed her message.
            if user == "bob" or (user == "ana" and renders[user] == 2):
                raise RuntimeError(f"rendering for {user} failed")
            return render(self, conn, row, detail, links)

        monkeypatch.setattr(Renderer, "render", failing)
        provider = services.delivery.providers.by_channel["email"]
        handed: list[int] = []
        send = provider.send

        def counted(message: Any) -> str:
            handed.append(message.customer_id)
            return send(message)

        provider.send = counted  # type: ignore[method-assign]
        services.writer.append_sync(
            [make_event("track", userId=u, event="Go", at=clock.now_ms()) for u in ids]
        )
        services.worker.run_due()
        assert renders["ana"] >= 2 and renders["bob"] >= 2  # the set was undone
        assert sorted(handed) == [ids["cyd"]]  # ana's claim went with the set
        advance(services, clock, 10 * MINUTE)  # ana's job is tried again, and goes
        assert sorted(handed) == sorted([ids["cyd"], ids["ana"]])
        assert sorted(m["state"] for m in outbox(services)) == ["pending", "sent", "sent"]
        assert len(events_named(services, "Message Sent")) == 2
        with services.db.read() as conn:
            pending = conn.execute(
                text("SELECT customer_id FROM outbox WHERE state = 'pending'")
            ).scalar_one()
        assert pending == ids["bob"]
    finally:
        services.close()


def test_no_success_in_time_falls_back_and_success_stops_it(
    settings: Settings, clock: SimulatedClock
) -> None:
    # Push is delivered but never opened: after 2 hours, email. A customer who opened the
    # push in time gets nothing more.
    services = open_services(settings, clock)
    try:
        publish(
            services,
            journey(
                "{channel: push, template: t, fallback: [email], success: opened, "
                "fallback_after: 2h}"
            ),
        )
        opt_in(services, "ana")
        opt_in(services, "bob")
        track(services, "ana", "Go")
        track(services, "bob", "Go")
        bob_push = next(m for m in outbox(services) if m["customer"].endswith(bob_id(services)))
        with services.db.write() as conn:
            services.delivery.status(conn, int(bob_push["id"][4:]), "opened", clock.now_ms())
        advance(services, clock, 2 * HOUR + MINUTE, step=10 * MINUTE)
        channels = {(m["customer"], m["channel"]) for m in outbox(services)}
        ana = f"cus_{customer_id(services, 'ana')}"
        bob = f"cus_{customer_id(services, 'bob')}"
        assert channels == {(ana, "push"), (ana, "email"), (bob, "push")}
        [fell] = events_named(services, "Message Fell Back")
        assert fell["reason"] == "not opened within 2h"
    finally:
        services.close()


def customer_id(services: Services, user: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, user, "FR")


def bob_id(services: Services) -> str:
    return f"_{customer_id(services, 'bob')}"


def test_best_channel_follows_preference_and_reachability(sandboxed: Services) -> None:
    publish(sandboxed, journey("{channel: best, template: t}"))
    opt_in(sandboxed, "ana", preferred_channel="sms")
    sandboxed.writer.append_sync(
        [
            make_event(
                "identify",
                userId="bob",
                traits={"email": "bob@example.com", "consent": {"email": {"marketing": True}}},
            )
        ]
    )
    track(sandboxed, "ana", "Go")
    track(sandboxed, "bob", "Go")
    by_customer = {m["customer"]: m["channel"] for m in outbox(sandboxed)}
    assert by_customer == {
        f"cus_{customer_id(sandboxed, 'ana')}": "sms",
        f"cus_{customer_id(sandboxed, 'bob')}": "email",
    }
    ana_choice, bob_choice = events_named(sandboxed, "Channel Chosen")
    assert ana_choice["scores"]["sms"] > ana_choice["scores"]["email"]
    assert (
        "sms" not in bob_choice["scores"]
        or {
            "channel": "sms",
            "reason": "no phone number (or it is invalid)",
        }
        in bob_choice["passed_over"]
    )


# ---- email over SMTP, DKIM, unsubscribe, tracking --------------------------------------


@pytest.fixture
def dkim_key() -> DkimKey:
    return DkimKey.make()


def smtp_settings(port: int, key_file: Path, **extra: Any) -> dict[str, Any]:
    return {
        "sandbox": CERTAIN,
        "email": {
            "provider": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "news@maison.example",
            "from_name": "Maison",
            "reply_to": "reply+{id}@maison.example",
            "return_path": "bounces+{id}@maison.example",
            "dkim_selector": "s1",
            "dkim_key_file": str(key_file),
            **extra,
        },
    }


def test_email_goes_over_smtp_signed_with_dkim(
    settings: Settings, clock: SimulatedClock, dkim_key: DkimKey, tmp_path: Path
) -> None:
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    with RunningSmtp(peer) as smtp:
        services = open_services(
            settings, clock, channels=smtp_settings(smtp.port, dkim_key.write(tmp_path))
        )
        try:
            publish(
                services,
                journey(
                    "{channel: email, template: abandoned-cart-recap}", entry="Checkout Started"
                ),
            )
            for user in ("ana", "bob", "cyd"):
                opt_in(services, user, firstName=user.title())
                cart = [{"name": f"Scarf for {user}", "quantity": 1}]
                track(services, user, "Checkout Started", checkout_id=user, products=cart)
            assert [m["state"] for m in outbox(services)] == ["sent"] * 3
        finally:
            services.close()
    assert len(peer.received) == 3
    assert peer.connections == 1  # one connection, reused
    first = peer.received[0]
    assert first.dkim_valid
    assert first.recipients == ["ana@example.com"]
    assert first.sender.startswith("bounces+") and first.sender.endswith("@maison.example")
    mail = first.message
    assert mail["Subject"] == "Your cart at Parcours demo shop"
    assert mail["From"] == "Maison <news@maison.example>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")
    signed = mail["DKIM-Signature"].replace("\r\n", "").replace(" ", "").replace("\t", "")
    assert "list-unsubscribe:list-unsubscribe-post" in signed.lower()
    assert mail["Reply-To"].startswith("reply+")
    assert mail.get_content_type() == "multipart/alternative"
    plain, html = mail.get_payload()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert "Hello Ana," in plain.get_payload(decode=True).decode()
    assert "Scarf for ana" in html.get_payload(decode=True).decode()


def test_a_tampered_message_fails_dkim(dkim_key: DkimKey) -> None:
    from parcours.channels.base import OutgoingMessage
    from parcours.channels.email import SmtpProvider

    provider = SmtpProvider(
        host="127.0.0.1",
        port=1,
        from_address="news@maison.example",
        dkim_selector="s1",
        dkim_key=dkim_key.private_pem,
    )
    message = OutgoingMessage(
        "k:0",
        1,
        1,
        "email",
        "marketing",
        "ana@example.com",
        {"subject": "Hi", "text": "Hello\n"},
        "en",
        {"unsubscribe": "https://p.example/u/abc"},
    )
    raw = provider.build(message)
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    import dkim

    assert dkim.verify(raw, dnsfunc=peer._dns)
    assert not dkim.verify(raw.replace(b"/u/abc", b"/u/evil"), dnsfunc=peer._dns)
    # Every attempt at the same message carries the same Message-ID.
    again = provider.build(message, now_s=0)
    assert message_id(raw) == message_id(again) and message_id(raw).endswith("@maison.example>")
    other = provider.build(
        OutgoingMessage("k:1", 2, 1, "email", "marketing", "a@b.c", message.content, "en")
    )
    assert message_id(other) != message_id(raw)


def test_dkim_signatures_verify_whatever_the_subject_and_body(dkim_key: DkimKey) -> None:
    """Our own canonicalisation agrees with dkimpy's verifier on the awkward cases: runs of
    spaces and tabs, accents (RFC 2047 words), a line break in a subject (kept on one line,
    never a header of its own), a sender name with accents, text only or with HTML, a body
    that ends in blank lines."""
    import dkim

    from parcours.channels.base import OutgoingMessage
    from parcours.channels.email import SmtpProvider

    provider = SmtpProvider(
        host="127.0.0.1",
        port=1,
        from_address="news@maison.example",
        from_name="Maison Éloïse",
        reply_to="reply+{id}@maison.example",
        dkim_selector="s1",
        dkim_key=dkim_key.private_pem,
    )
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    cases = [
        ({"subject": "Two  spaces\tand a tab ", "text": "Hello\n\n\n"}, "Two  spaces and a tab "),
        (
            {"subject": "Votre panier, Zoé", "text": "Déjà là ?\r\n", "html": "<p>é</p>"},
            "Votre panier, Zoé",
        ),
        (
            {"subject": "Line\r\nBcc: eve@example.com", "text": "", "html": "<b>x</b>\n\n"},
            "Line  Bcc: eve@example.com",
        ),
        ({"subject": "é" * 400, "text": ".a line that starts with a dot\n"}, "é" * 400),
    ]
    for n, (content, subject) in enumerate(cases):
        raw = provider.build(
            OutgoingMessage(f"k:{n}", n, 1, "email", "marketing", "ana@example.com", content, "fr")
        )
        assert dkim.verify(raw, dnsfunc=peer._dns), subject
        mail = email.message_from_bytes(raw)
        assert "Bcc" not in mail
        assert str(make_header(decode_header(mail["Subject"]))) == subject
        assert (
            str(make_header(decode_header(mail["From"]))) == "Maison Éloïse <news@maison.example>"
        )


def test_a_dkim_key_that_is_not_an_rsa_private_key_stops_the_start(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from parcours.channels.base import ConfigError
    from parcours.channels.email import SmtpProvider

    not_pem = tmp_path / "not.pem"
    not_pem.write_bytes(b"not a key")
    ec_pem = tmp_path / "ec.pem"
    ec_pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path, message in ((not_pem, "not a PEM private key"), (ec_pem, "must be an RSA key")):
        with pytest.raises(ConfigError, match=message):
            SmtpProvider.from_config(
                {
                    "host": "127.0.0.1",
                    "from_address": "news@maison.example",
                    "dkim_selector": "s1",
                    "dkim_key_file": str(path),
                }
            )


def test_an_address_that_would_break_the_smtp_commands_is_refused_for_good() -> None:
    from parcours.channels.base import OutgoingMessage, PermanentFailure
    from parcours.channels.email import SmtpProvider

    provider = SmtpProvider(host="127.0.0.1", port=1, from_address="news@maison.example")
    for address in ("ana@example.com\r\nRCPT TO:<eve@example.com>", "<ana@example.com>", "ana"):
        message = OutgoingMessage(
            "k:0", 1, 1, "email", "marketing", address, {"subject": "Hi"}, "en"
        )
        with pytest.raises(PermanentFailure, match="is not an email address") as caught:
            provider.send(message)
        assert caught.value.suppress


def customer_of(services: Services, address: str) -> int:
    """The customer with this email address, made when there is none."""
    with services.db.read() as conn:
        try:
            return customers.resolve(conn, address, "FR")
        except customers.CustomerNotFound:
            pass
    event = make_event("identify", userId=f"c:{address}", traits={"email": address})
    services.writer.append_sync([event])
    with services.db.read() as conn:
        return customers.resolve(conn, address, "FR")


def send_email(services: Services, address: str) -> int:
    """A real email to this address through the configured provider (a test send: no
    journey, policy or cap in the way, suppressions neither); its outbox id."""
    customer_id = customer_of(services, address)
    with services.db.write() as conn:
        try:
            templates.get(conn, "note")
        except templates.TemplateProblem:
            content = {"en": {"email": {"subject": "A note", "text": "Hello"}}}
            templates.save(conn, "note", content, "test", services.clock.now_ms())
        outbox_id = services.delivery.test_send(
            conn, "note", customer_id, "email", address, {}, services.clock.now_ms()
        )
    services.worker.run_due()
    return outbox_id


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("a@@b.c", "invalid characters: '@'"),
        ("a@b.", "cannot end with a period"),
        ("a@b.c,d@e.f", "invalid characters: ',', '@'"),
    ],
)
def test_an_email_address_is_checked_by_one_rule_everywhere(
    sandboxed: Services, address: str, why: str
) -> None:
    from parcours.channels.base import ConfigError, OutgoingMessage, PermanentFailure
    from parcours.channels.email import SmtpProvider
    from parcours.customers.identity import BadEmail, check_email, traits_identities

    with pytest.raises(BadEmail, match=re.escape(why)):
        check_email(address)
    # As an identity: not an email of the customer's.
    assert traits_identities({"email": address}, "FR") == []
    # As a test send's address: refused, naming the field.
    opt_in(sandboxed, "lea")
    with TestClient(app=create_app(sandboxed, close_on_shutdown=False)) as client:
        answer = client.post(
            "/api/templates/welcome/test-send",
            json={"customer": "lea", "channel": "email", "to": address},
            headers=admin_headers(),
        )
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "to"
    assert why in answer.json()["error"]["message"]
    # At the last moment, as a send's address (one stored before this check).
    provider = SmtpProvider(host="127.0.0.1", port=1, from_address="news@maison.example")
    message = OutgoingMessage("k:0", 1, 1, "email", "marketing", address, {"subject": "Hi"}, "en")
    with pytest.raises(PermanentFailure, match="is not an email address") as caught:
        provider.send(message)
    assert caught.value.suppress
    # As the brand's own address in the settings: the start stops, naming the setting.
    with pytest.raises(ConfigError, match=r"channels\.email\.reply_to is not an email"):
        SmtpProvider.from_config(
            {"host": "127.0.0.1", "from_address": "news@maison.example", "reply_to": address}
        )


def test_good_addresses_are_kept_as_identities_lowercased() -> None:
    from parcours.customers.identity import check_email, normalise_email

    assert normalise_email(" Ana.Person+news@Example.COM ") == "ana.person+news@example.com"
    assert check_email("Zoé@Exemple.fr").address == "zoé@exemple.fr"
    assert check_email("zoé@exemple.fr").ascii is None  # its mailbox name needs SMTPUTF8
    assert check_email("ana@exèmple.fr").ascii == "ana@xn--exmple-4ua.fr"


def _message_to(address: str, n: int = 0) -> Any:
    from parcours.channels.base import OutgoingMessage

    content = {"subject": "Bonjour", "text": "Bonjour Zoé\n"}
    return OutgoingMessage(f"k:{n}", n, 1, "email", "marketing", address, content, "fr")


def test_a_mailbox_name_beyond_ascii_goes_by_smtputf8_when_the_server_offers_it(
    dkim_key: DkimKey,
) -> None:
    from parcours.channels.email import SmtpProvider

    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    with RunningSmtp(peer, smtputf8=True) as smtp:
        provider = SmtpProvider(
            host="127.0.0.1",
            port=smtp.port,
            from_address="news@maison.example",
            security="none",
            dkim_selector="s1",
            dkim_key=dkim_key.private_pem,
        )
        try:
            provider.send(_message_to("Zoé@exemple.fr"))
            provider.send(_message_to("ana@exèmple.fr", 1))
        finally:
            provider.close()
    first, second = peer.received
    assert first.recipients == ["zoé@exemple.fr"] and first.dkim_valid
    assert "\r\nTo: zoé@exemple.fr\r\n".encode() in first.raw  # UTF-8 headers (RFC 6532)
    assert second.recipients == ["ana@xn--exmple-4ua.fr"]  # a domain beyond ASCII: IDNA


def test_without_smtputf8_such_an_address_is_refused_with_a_reason(
    settings: Settings, clock: SimulatedClock, dkim_key: DkimKey, tmp_path: Path
) -> None:
    from parcours.channels.base import PermanentFailure
    from parcours.channels.email import SmtpProvider

    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    with RunningSmtp(peer, smtputf8=False) as smtp:
        provider = SmtpProvider(
            host="127.0.0.1", port=smtp.port, from_address="news@maison.example", security="none"
        )
        try:
            with pytest.raises(PermanentFailure, match="needs SMTPUTF8") as caught:
                provider.send(_message_to("zoé@exemple.fr"))
            assert not caught.value.suppress and not caught.value.soft_bounce
            provider.send(_message_to("ana@exèmple.fr", 1))  # IDNA needs no SMTPUTF8
            provider.send(_message_to("ana@example.com", 2))
        finally:
            provider.close()
        # The connection the refusal used went back to the pool and served the others.
        assert peer.connections == 1
        assert [r.recipients for r in peer.received] == [
            ["ana@xn--exmple-4ua.fr"],
            ["ana@example.com"],
        ]
        # Through the pipeline: the send fails with that reason, the fallback goes on,
        # the address is not barred (the server is what lacks it).
        services = open_services(
            settings, clock, channels=smtp_settings(smtp.port, dkim_key.write(tmp_path))
        )
        try:
            publish(services, journey("{channel: email, template: welcome, fallback: [sms]}"))
            opt_in(services, "zoe", email="zoé@exemple.fr")
            track(services, "zoe", "Go")
            email_message, sms_message = outbox(services)
            assert email_message["state"] == "failed"
            assert "needs SMTPUTF8" in email_message["error"]
            assert sms_message["channel"] == "sms" and sms_message["state"] == "sent"
            with services.db.read() as conn:
                assert conn.execute(text("SELECT count(*) FROM suppressions")).scalar() == 0
        finally:
            services.close()


def test_a_lone_carriage_return_never_reaches_smtp(dkim_key: DkimKey) -> None:
    from parcours.channels.base import OutgoingMessage
    from parcours.channels.email import SmtpProvider

    content = {
        "subject": "Hi\rthere",
        "text": "Line one\rLine two\r\nLine three\n\r",
        "html": "<p>one\rtwo</p>",
    }
    message = OutgoingMessage("k:0", 1, 1, "email", "marketing", "ana@example.com", content, "en")
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    with RunningSmtp(peer) as smtp:
        provider = SmtpProvider(
            host="127.0.0.1",
            port=smtp.port,
            from_address="news@maison.example",
            security="none",
            dkim_selector="s1",
            dkim_key=dkim_key.private_pem,
        )
        raw = provider.build(message)
        try:
            provider.send(message)
        finally:
            provider.close()
    assert re.search(rb"\r(?!\n)", raw) is None and re.search(rb"(?<!\r)\n", raw) is None
    [received] = peer.received
    assert received.dkim_valid
    plain, html = received.message.get_payload()
    assert plain.get_payload(decode=True).decode() == "Line one\r\nLine two\r\nLine three\r\n\r\n"
    assert html.get_payload(decode=True).decode() == "<p>one\ntwo</p>"


def test_send_time_replies_follow_the_one_bounce_rule(
    settings: Settings, clock: SimulatedClock, dkim_key: DkimKey, tmp_path: Path
) -> None:
    """What a receiving server answers at RCPT is read by the same rule as the bounces
    that come back later: a bad address is barred at once; a full mailbox or Gmail's
    "likely unsolicited" block fails the message and is counted, three bar the address;
    a 4xx is retried, and counted once when the retries run out."""
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    peer.refuse = {
        "ana@example.com": "550 5.1.1 no such user",
        "bob@example.com": "552 5.2.2 mailbox full",
        "cyd@example.com": "550 5.7.1 this message is likely unsolicited mail",
        "dan@example.com": "452 4.2.2 mailbox full, try again later",
    }
    with RunningSmtp(peer) as smtp:
        services = open_services(
            settings, clock, channels=smtp_settings(smtp.port, dkim_key.write(tmp_path))
        )
        try:
            names = ("ana", "bob", "cyd", "dan")
            ids = {name: send_email(services, f"{name}@example.com") for name in names}
            ids["bob2"] = send_email(services, "bob@example.com")

            def barred() -> dict[str, str]:
                with services.db.read() as conn:
                    found = conn.execute(text("SELECT address, source FROM suppressions"))
                    return {row.address: row.source for row in found}

            def bounces() -> list[tuple[str, str, int]]:
                with services.db.read() as conn:
                    found = conn.execute(
                        text("SELECT address, kind, outbox_id FROM bounces ORDER BY id")
                    )
                    return [tuple(row) for row in found]

            assert barred() == {"ana@example.com": "smtp"}
            assert bounces() == [
                ("ana@example.com", "hard", ids["ana"]),
                ("bob@example.com", "soft", ids["bob"]),
                ("cyd@example.com", "soft", ids["cyd"]),
                ("bob@example.com", "soft", ids["bob2"]),
            ]
            states = {m["id"]: (m["state"], m["error"]) for m in outbox(services)}
            assert states[f"msg_{ids['cyd']}"][0] == "failed"
            assert states[f"msg_{ids['dan']}"] == (
                "pending",
                "452 4.2.2 mailbox full, try again later",
            )
            third = send_email(services, "bob@example.com")
            assert barred()["bob@example.com"] == "soft bounces"
            with services.db.read() as conn:
                reason = conn.execute(
                    text("SELECT reason, outbox_id FROM suppressions WHERE address = :a"),
                    {"a": "bob@example.com"},
                ).one()
            assert reason[0].startswith("3 soft bounces within 30 days; the last: 552 5.2.2")
            assert reason[1] == third
            advance(services, clock, 400_000, step=5_000)  # dan's retries run out
            states = {m["id"]: (m["state"], m["error"]) for m in outbox(services)}
            assert states[f"msg_{ids['dan']}"][0] == "failed"
            assert states[f"msg_{ids['dan']}"][1].startswith("gave up after 8 attempts: 452")
            assert bounces()[-1] == ("dan@example.com", "soft", ids["dan"])
            assert "dan@example.com" not in barred()
        finally:
            services.close()
    assert peer.received == []


def test_a_send_time_refusal_of_our_sending_setup_counts_against_no_address(
    settings: Settings,
    clock: SimulatedClock,
    dkim_key: DkimKey,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DKIM or IP-reputation incident: every receiver refuses our mail. Each message
    fails (the fallback takes over) with the receiver's words, the operator is told (a
    warning, the `sender` kind of parcours_provider_errors_total), and no address is
    counted against: three sends in 30 days bar nobody."""
    from prometheus_client import REGISTRY

    def sender_errors() -> float:
        labels = {"provider": "smtp", "kind": "sender"}
        return REGISTRY.get_sample_value("parcours_provider_errors_total", labels) or 0.0

    dmarc = (
        "550 5.7.26 Unauthenticated email from maison.example is not accepted due to "
        "domain's DMARC policy"
    )
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    peer.refuse = {"ana@example.com": dmarc}
    before = sender_errors()
    with RunningSmtp(peer) as smtp:
        services = open_services(
            settings, clock, channels=smtp_settings(smtp.port, dkim_key.write(tmp_path))
        )
        try:
            with caplog.at_level("WARNING", logger="parcours.channels.email"):
                for _ in range(3):
                    send_email(services, "ana@example.com")
            assert [(m["state"], m["error"]) for m in outbox(services)] == [("failed", dmarc)] * 3
            with services.db.read() as conn:
                assert conn.execute(text("SELECT count(*) FROM bounces")).scalar_one() == 0
                assert conn.execute(text("SELECT count(*) FROM suppressions")).scalar_one() == 0
        finally:
            services.close()
    assert sender_errors() - before == 3
    warned = [r.getMessage() for r in caplog.records if "our sending setup" in r.getMessage()]
    assert len(warned) == 3 and "DMARC" in warned[0]


def message_id(raw: bytes) -> str:
    import email as email_module

    return str(email_module.message_from_bytes(raw)["Message-ID"])


def test_a_5xx_reply_is_a_hard_bounce_a_4xx_is_retried(
    settings: Settings, clock: SimulatedClock, dkim_key: DkimKey, tmp_path: Path
) -> None:
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    peer.refuse = {
        "ana@example.com": "550 5.1.1 no such user",
        "bob@example.com": "451 4.3.0 try again later",
    }
    with RunningSmtp(peer) as smtp:
        services = open_services(
            settings, clock, channels=smtp_settings(smtp.port, dkim_key.write(tmp_path))
        )
        try:
            publish(services, journey("{channel: email, template: welcome, fallback: [sms]}"))
            opt_in(services, "ana")
            opt_in(services, "bob")
            track(services, "ana", "Go")
            track(services, "bob", "Go")
            ana = {m["channel"]: m for m in outbox(services) if m["to"] != "bob@example.com"}
            assert ana["email"]["state"] == "failed"
            assert ana["email"]["error"].startswith("550")
            assert ana["sms"]["state"] == "sent"  # the fallback
            [failed] = [f for f in events_named(services, "Message Failed") if f["permanent"]]
            assert failed["reason"].startswith("550")
            with services.db.read() as conn:
                suppressed = conn.execute(text("SELECT channel, address FROM suppressions")).all()
            assert [tuple(row) for row in suppressed] == [("email", "ana@example.com")]
            bob = next(m for m in outbox(services) if m["to"] == "bob@example.com")
            assert bob["state"] == "pending" and bob["error"].startswith("451")
            peer.refuse.clear()
            advance(services, clock, 10_000, step=1000)
            bob = next(m for m in outbox(services) if m["to"] == "bob@example.com")
            assert bob["state"] == "sent" and bob["attempts"] == 2
            # A later message to the bounced address is not attempted.
            track(services, "ana", "Go")
        finally:
            services.close()
    assert [r.recipients for r in peer.received] == [["bob@example.com"]]


def test_one_click_unsubscribe_withdraws_consent_at_once(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        publish(services, journey("{channel: email, template: welcome}"))
        opt_in(services, "lea", locale="fr")
        track(services, "lea", "Go")
        [message] = outbox(services)
        link = message["content"]["text"].split("Se désabonner : ")[1].split()[0]
        path = link.removeprefix(settings.resolved_public_url)
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            page = client.get(path)
            assert page.status_code == 200
            assert "Me désabonner" in page.text and 'lang="fr"' in page.text
            assert consent_status(services, "lea", "email") == "granted"  # a GET changes nothing
            done = client.post(path, content=b"List-Unsubscribe=One-Click")
            assert done.status_code == 200
            assert "Votre désabonnement est enregistré" in done.text
            assert consent_status(services, "lea", "email") == "withdrawn"
            again = client.post(path, content=b"List-Unsubscribe=One-Click")
            assert again.status_code == 200
            forged = client.post(path[:-3] + "abc", content=b"List-Unsubscribe=One-Click")
            assert forged.status_code == 404
        [unsubscribed] = events_named(services, "Unsubscribed")
        assert unsubscribed["source"] == "one-click unsubscribe"
        # And the next marketing email is held back.
        track(services, "lea", "Go")
        assert len(outbox(services)) == 1
    finally:
        services.close()


def test_a_marketing_emails_footer_opens_the_customers_preference_centre(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        cart = "{channel: email, template: abandoned-cart-recap}"
        publish_strict(services, journey(cart, entry="Checkout Started"))
        opt_in(services, "lea", locale="fr")
        track(services, "lea", "Checkout Started", checkout_id="c1", total=129, currency="EUR")
        [message] = outbox(services)
        html, text = message["content"]["html"], message["content"]["text"]
        # In the HTML, signed and not through the click redirect; in the text part too.
        [link] = re.findall(r'<a href="([^"]*/p/[^"]*)"[^>]*>Gérer mes préférences</a>', html)
        assert text.endswith(f"Gérer mes préférences <{link}>\n")
        path = link.removeprefix(settings.resolved_public_url)
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            page = client.get(path)
            assert page.status_code == 200
            assert 'lang="fr"' in page.text and "Vos préférences" in page.text
            assert consent_status(services, "lea", "email") == "granted"  # a GET changes nothing
            kept = {"sms": "on", "whatsapp": "on", "push": "on"}  # e-mail unticked
            saved = client.post(path, data=kept, follow_redirects=False)
            assert saved.status_code == 303
            forged = client.get(path[:-3] + "abc")
            assert forged.status_code == 404 and "Vos préférences" not in forged.text
        assert consent_status(services, "lea", "email") == "withdrawn"  # hers, and only hers
        assert consent_status(services, "lea", "sms") == "granted"
        # A text email says it on its own line.
        publish_strict(services, journey("{channel: email, template: welcome}", entry="Go"))
        opt_in(services, "max", locale="en")
        track(services, "max", "Go")
        welcome = outbox(services)[-1]["content"]["text"]
        assert re.search(r"\nManage preferences: http\S*/p/\S+\n$", welcome), welcome
    finally:
        services.close()


def test_a_transactional_email_carries_neither_unsubscribe_nor_preferences(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        confirmation = "{channel: email, template: order-confirmation, purpose: transactional}"
        publish_strict(services, journey(confirmation, entry="Order Completed", goal="Never"))
        opt_in(services, "lea", locale="fr")
        track(services, "lea", "Order Completed", order_id="1042", total=20, currency="EUR")
        [message] = outbox(services)
        assert message["purpose"] == "transactional" and message["state"] == "sent"
        words = message["content"]["html"] + message["content"]["text"]
        assert "/p/" not in words and "/u/" not in words
        assert "préférences" not in words and "désabonner" not in words
    finally:
        services.close()


def test_every_web_link_of_an_email_is_tracked_but_the_unsubscribe_link() -> None:
    from parcours.messaging.links import Links, Signer, track_html

    links = Links(Signer(b"s" * 32), "https://p.example")
    html = (
        '<html><body><a href="https://maison.example/cart">cart</a>'
        '<A HREF="HTTPS://maison.example/Sale">sale</A>'
        '<a data-x="https://maison.example/not-a-link" href="mailto:hello@maison.example">m</a>'
        '<img src="https://maison.example/logo.png">'
        '<a href="https://p.example/u/token">unsubscribe</a></BODY></html>'
    )
    tracked = track_html(html, links, 7, {"https://p.example/u/token"})
    assert tracked.count("https://p.example/t/c/") == 2
    assert "maison.example/cart" not in tracked and "maison.example/Sale" not in tracked
    assert 'data-x="https://maison.example/not-a-link"' in tracked
    assert 'href="mailto:hello@maison.example"' in tracked
    assert 'src="https://maison.example/logo.png"' in tracked
    assert 'href="https://p.example/u/token"' in tracked
    assert tracked.index("/t/o/") < tracked.index("</BODY>")  # the pixel ends the body


def test_the_text_of_an_html_email_leaves_out_scripts_styles_and_the_head() -> None:
    html = (
        "<HTML><Head><title>Maison</title><STYLE>p { color: red }</style></HEAD>\n"
        "<body><p>Hello&nbsp;<b>Ana</b>,</p>\n\n  <script>var x = 1;</SCRIPT>\n"
        "<p>your   cart &amp; you</p></body></html>"
    )
    assert templates.html_to_text(html) == "Hello Ana ,\nyour cart & you\n"


def test_clicks_and_opens_are_recorded_and_redirects_only_go_where_signed(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        publish(
            services,
            journey("{channel: email, template: abandoned-cart-recap}", entry="Checkout Started"),
        )
        opt_in(services, "ana")
        track(services, "ana", "Checkout Started", checkout_id="c1", products=[])
        [message] = outbox(services)
        html = message["content"]["html"]
        base = settings.resolved_public_url
        click_path = html.split(f'href="{base}')[1].split('"')[0].replace("&amp;", "&")
        pixel_path = html.split(f'src="{base}')[1].split('"')[0]
        assert click_path.startswith("/t/c/") and pixel_path.startswith("/t/o/")
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            opened = client.get(pixel_path)
            assert opened.headers["content-type"] == "image/gif"
            clicked = client.get(click_path, follow_redirects=False)
            assert clicked.status_code == 302
            assert clicked.headers["location"] == "https://shop.example.com"
            token = click_path.removeprefix("/t/c/")
            _, _, mac = token.partition(".")
            import base64

            evil = base64.urlsafe_b64encode(b'{"m":1,"u":"https://evil.example"}').rstrip(b"=")
            forged = client.get(f"/t/c/{evil.decode()}.{mac}", follow_redirects=False)
            assert forged.status_code == 404
        [final] = outbox(services)
        assert final["status"] == "clicked"
        assert len(events_named(services, "Message Opened")) == 1
        assert events_named(services, "Message Clicked")[0]["url"] == "https://shop.example.com"
    finally:
        services.close()


def test_channel_settings_errors_name_the_setting(
    settings: Settings, clock: SimulatedClock
) -> None:
    cases = [
        ({"fax": {}}, "channels.fax: unknown channel"),
        ({"sms": {"provider": "smtp"}}, "channels.sms.provider: 'smtp' is not available"),
        (
            {"email": {"provider": "smtp", "from_address": "a@b.c"}},
            "channels.email.host is required",
        ),
        (
            {
                "email": {
                    "provider": "smtp",
                    "host": "h",
                    "from_address": "a@b.c",
                    "password_env": "NOPE_X",
                }
            },
            "channels.email.password_env: the environment variable NOPE_X is not set",
        ),
        ({"sandbox": {"fail_rate": 2}}, "channels.sandbox.fail_rate must be between 0 and 1"),
    ]
    for channels, message in cases:
        with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
            open_services(settings, clock, channels=channels)


# ---- a worker killed in the middle of a send ----------------------------------------------


@pytest.mark.processes
def test_a_worker_killed_mid_send_sends_again_under_the_same_message_id(
    settings: Settings, dkim_key: DkimKey, tmp_path: Path
) -> None:
    """The worker dies after the SMTP server has the message but before it hears back (the
    worst moment). Once the lease is over another worker sends it again, with the same
    Message-ID, so the receiving side can tell it is the same message; nothing is lost and
    the outbox records one send."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from parcours.runtime.clock import SystemClock

    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    peer.hold = threading.Event()
    with RunningSmtp(peer) as smtp:
        channels = smtp_settings(smtp.port, dkim_key.write(tmp_path))
        services = Services.open(settings.with_overrides(channels=channels), clock=SystemClock())
        env = {
            **os.environ,
            "PARCOURS_DATABASE_URL": settings.resolved_database_url,
            "PARCOURS_CHANNELS": json.dumps(channels),
            "PARCOURS_DELIVERY_LEASE_SECONDS": "2",
            "PARCOURS_LOG_LEVEL": "error",
        }
        command = [
            str(Path(sys.executable).parent / "parcours"),
            "worker",
            "--data-dir",
            str(tmp_path),
        ]

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

        try:
            publish(services, journey("{channel: email, template: welcome}"))
            opt_in(services, "ana")
            services.writer.append_sync(
                [make_event("track", userId="ana", event="Go", at=services.clock.now_ms())]
            )
            first = start()
            try:
                assert peer.data_started.wait(60), "the first worker never reached DATA"
            finally:  # killed there, or not left running if it never got there
                first.send_signal(signal.SIGKILL)
                first.wait()
            peer.hold.set()  # the server keeps the message of the dead worker
            peer.hold = None
            second = start()
            try:
                wait_until(lambda: outbox_sent(services), 60, what="the message to be sent again")
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(30)
            [message] = outbox(services)
            sent_events = events_named(services, "Message Sent")
        finally:
            services.close()
    assert message["state"] == "sent" and message["attempts"] == 2
    assert len(sent_events) == 1
    assert len(peer.received) == 2
    ids = {r.message["Message-ID"] for r in peer.received}
    assert len(ids) == 1  # the same message, which the receiver can drop
    assert all(r.dkim_valid for r in peer.received)


@pytest.mark.processes
def test_a_send_slower_than_its_lease_keeps_it_and_is_made_once(
    settings: Settings, dkim_key: DkimKey, tmp_path: Path
) -> None:
    """The SMTP server holds the message for four leases: the worker, alive and still
    sending, renews the lease, so neither it nor another worker, idle beside it, sends
    the message again (without the renewal, the other one did, at the lease's end)."""
    import threading
    import time

    from parcours.runtime.clock import SystemClock

    peer = SmtpPeer(dns={"s1._domainkey.maison.example": dkim_key.dns_record})
    peer.hold = threading.Event()
    with RunningSmtp(peer) as smtp:
        channels = smtp_settings(smtp.port, dkim_key.write(tmp_path))
        services = Services.open(
            settings.with_overrides(channels=channels, delivery_lease_seconds=1),
            clock=SystemClock(),
        )
        other: Services | None = None
        try:
            publish(services, journey("{channel: email, template: welcome}"))
            opt_in(services, "ana")
            services.writer.append_sync(
                [make_event("track", userId="ana", event="Go", at=services.clock.now_ms())]
            )
            services.start_worker()
            assert peer.data_started.wait(60), "the worker never reached DATA"
            other = Services.open(
                settings.with_overrides(channels=channels, delivery_lease_seconds=1),
                clock=SystemClock(),
            )
            other.start_worker()
            time.sleep(4)  # four leases go by while the server holds the message
            peer.hold.set()
            wait_until(lambda: outbox_sent(services), 60, what="the message to be recorded")
            time.sleep(2)  # had it been claimed again, the other worker would send it now
            [message] = outbox(services)
        finally:
            if other is not None:
                other.close()
            services.close()
    assert message["state"] == "sent" and message["attempts"] == 1
    assert len(peer.received) == 1


def outbox_sent(services: Services) -> list[dict[str, Any]]:
    return [m for m in outbox(services) if m["state"] == "sent"]


def test_a_test_send_goes_to_the_brand_and_counts_for_nothing(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        opt_in(services, "lea", firstName="Léa", locale="fr")
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            bad = client.post(
                "/api/templates/welcome/test-send",
                json={"customer": "lea", "channel": "email", "to": "not an address"},
                headers=admin_headers(),
            )
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "to"
            sent = client.post(
                "/api/templates/welcome/test-send",
                json={"customer": "lea", "channel": "email", "to": "qa@maison.example"},
                headers=admin_headers(),
            )
            assert sent.status_code == 202, sent.text
        services.worker.run_due()
        [message] = outbox(services)
        assert message["id"] == sent.json()["message"]
        assert message["to"] == "qa@maison.example" and message["state"] == "sent"
        assert message["content"]["subject"] == "[TEST] Bienvenue chez Parcours demo shop"
        assert message["purpose"] == "test"
        # Its unsubscribe link shows the page but unsubscribes nobody.
        link = message["content"]["text"].split("Se désabonner : ")[1].split()[0]
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            path = link.removeprefix(settings.resolved_public_url)
            assert client.post(path, content=b"List-Unsubscribe=One-Click").status_code == 200
        assert consent_status(services, "lea", "email") == "granted"
        # It does not stand in the way of the real message on another channel.
        publish(services, journey("{channel: sms, template: welcome}"))
        with services.db.write() as conn:
            templates.save(
                conn,
                "welcome",
                {"fr": {"sms": {"text": "Bienvenue"}, "email": {"subject": "B", "text": "B"}}},
                "ana",
                clock.now_ms(),
            )
        track(services, "lea", "Go")
        assert [m["channel"] for m in outbox(services)] == ["email", "sms"]
    finally:
        services.close()
