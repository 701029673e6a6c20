"""Web Push: VAPID keys made once, the subscribe endpoint, and pushes encrypted for the
browser, against a loopback push service that checks VAPID and a browser that decrypts
(RFC 8291) with its own keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from parcours.app import create_app
from parcours.customers.verification import user_hash
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import WRITE_KEY, admin_headers
from tests.peers import PushService
from tests.test_channels import CERTAIN, events_named, journey, outbox, publish
from tests.test_journeys_engine import OPTED_IN, opt_in, track

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
IDENTITY_SECRET = "identity-secret-0123456789"


def signed_in(user_id: str) -> dict[str, str]:
    """How the brand's site names a signed-in customer: the id and its identity hash."""
    return {"userId": user_id, "userHash": user_hash(IDENTITY_SECRET, user_id)}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(identity_verification_secret=IDENTITY_SECRET)


@pytest.fixture
def push_service() -> Iterator[PushService]:
    with PushService() as service:
        yield service


@pytest.fixture
def wired(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, TestClient[Any]]]:
    channels = {
        "sandbox": CERTAIN,
        "push": {"provider": "webpush", "subject": "mailto:ops@maison.example"},
    }
    services = Services.open(settings.with_overrides(channels=channels), clock=clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            yield services, client
    finally:
        services.close()


def test_the_site_gets_the_key_and_the_service_worker(client: TestClient[Any]) -> None:
    key = client.get("/push/vapid-public-key").json()["publicKey"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65 and raw[0] == 4  # an uncompressed P-256 point
    assert client.get("/push/vapid-public-key").json()["publicKey"] == key  # made once
    worker = client.get("/push/sw.js")
    assert worker.headers["content-type"].startswith("text/javascript")
    assert "showNotification" in worker.text and "openWindow" in worker.text


def test_subscribing_is_checked(client: TestClient[Any], push_service: PushService) -> None:
    browser = push_service.browser("x")
    no_key = client.post("/v1/push/subscribe", json={"userId": "ana"})
    assert no_key.status_code == 401
    bad = client.post(
        "/v1/push/subscribe",
        json={"userId": "ana", "subscription": {"endpoint": "nope", "keys": {}}},
        headers=AUTH,
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "subscription.endpoint"
    nobody = client.post(
        "/v1/push/subscribe", json={"subscription": browser.subscription()}, headers=AUTH
    )
    assert nobody.status_code == 400
    ok = client.post(
        "/v1/push/subscribe",
        json={**signed_in("ana"), "subscription": browser.subscription()},
        headers=AUTH,
    )
    assert ok.status_code == 200 and ok.json() == {"success": True}  # who holds it: unsaid


def test_a_browser_subscribes_only_for_who_it_proves_to_be(
    client: TestClient[Any], services: Services, push_service: PushService
) -> None:
    """The write key is public: a stated userId, a customer id, an email or an
    anonymousId shaped like a customer id never attach a browser to someone else."""
    opt_in(services, "ana", email="ana@example.com", phone="+33612345678")
    browser = push_service.browser("mallory")

    def subscribe(**who: str) -> Any:
        body = {**who, "subscription": browser.subscription()}
        return client.post("/v1/push/subscribe", json=body, headers=AUTH)

    unproven = subscribe(userId="ana")
    assert unproven.status_code == 401 and unproven.json()["error"]["field"] == "userHash"
    forged = subscribe(userId="ana", userHash=user_hash("another-secret-0123", "ana"))
    assert forged.status_code == 403
    internal = subscribe(**signed_in("cus_1"))
    assert internal.status_code == 400 and "customer id" in internal.json()["error"]["message"]
    by_email = subscribe(**signed_in("ana@example.com"))  # vouched for, but as a user id
    by_anonymous = subscribe(anonymousId="cus_1")
    by_phone = subscribe(anonymousId="0612345678")  # Ana's phone, as an anonymous id
    answers = [by_email, by_anonymous, by_phone]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"success": True})] * 3
    ana = client.get("/api/customers/ana", headers=admin_headers()).json()
    assert ("phone", "+33612345678") in {(i["kind"], i["value"]) for i in ana["identities"]}
    with services.db.read() as conn:
        owners = conn.execute(text("SELECT DISTINCT customer_id FROM push_subscriptions"))
        assert int(ana["id"][4:]) not in {row[0] for row in owners}
    anonymous = client.get("/api/customers/anonymous_id:0612345678", headers=admin_headers())
    assert anonymous.json()["id"] != ana["id"]


def subscribe_browser(client: TestClient[Any], browser: Any, **who: str) -> None:
    body = {**who, "subscription": browser.subscription()}
    answer = client.post("/v1/push/subscribe", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text


def test_with_identity_verification_a_signed_in_customer_is_pushed_only_where_proven(
    wired: tuple[Services, TestClient[Any]], push_service: PushService
) -> None:
    """The stitching trick: with the public write key, tie an anonymous id of one's own to
    the victim's user id, then subscribe one's browser under that anonymous id."""
    services, client = wired
    publish(services, journey("{channel: push, template: abandoned-cart-push}"))
    opt_in(services, "ana", push_token="")
    ana_browser, mallory = push_service.browser("ana"), push_service.browser("mallory")
    # Ana's browser subscribed before she signed in, then again, signed in, after.
    subscribe_browser(client, ana_browser, anonymousId="ana-browser")
    subscribe_browser(client, ana_browser, **signed_in("ana"))
    stitched = client.post(
        "/v1/identify", json={"userId": "ana", "anonymousId": "mallory-browser"}, headers=AUTH
    )
    assert stitched.status_code == 200
    subscribe_browser(client, mallory, anonymousId="mallory-browser")
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT s.endpoint, s.verified_user_id, i.value FROM push_subscriptions s "
                "JOIN identities i ON i.customer_id = s.customer_id AND i.kind = 'user_id' "
                "ORDER BY s.id"
            )
        ).all()
    assert [tuple(row) for row in rows] == [  # both on Ana's profile; one proven hers
        (ana_browser.endpoint, "ana", "ana"),
        (mallory.endpoint, None, "ana"),
    ]
    track(services, "ana", "Go")
    assert [pushed["path"] for pushed in push_service.received] == ["/push/ana"]
    # A visitor the brand knows by no user id is pushed through their anonymous browser.
    subscribe_browser(client, push_service.browser("guest"), anonymousId="guest-1")
    for call, body in (("identify", {"traits": OPTED_IN}), ("track", {"event": "Go"})):
        answer = client.post(f"/v1/{call}", json={"anonymousId": "guest-1", **body}, headers=AUTH)
        assert answer.status_code == 200
    services.worker.run_due()
    assert [pushed["path"] for pushed in push_service.received] == ["/push/ana", "/push/guest"]


def test_without_identity_verification_the_newest_browser_is_pushed(
    settings: Settings, clock: SimulatedClock, push_service: PushService
) -> None:
    """No secret set: no subscription can be proven, so none is required to be; what the
    write key allows then is in docs/security.md (Web Push)."""
    channels = {"sandbox": CERTAIN, "push": {"provider": "webpush", "subject": "mailto:o@m.fr"}}
    unverified = settings.with_overrides(channels=channels, identity_verification_secret="")
    services = Services.open(unverified, clock=clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            publish(services, journey("{channel: push, template: abandoned-cart-push}"))
            opt_in(services, "ana", push_token="")
            identified = client.post(
                "/v1/identify", json={"userId": "ana", "anonymousId": "a-1"}, headers=AUTH
            )
            assert identified.status_code == 200
            subscribe_browser(client, push_service.browser("ana"), anonymousId="a-1")
            refused = client.post(
                "/v1/push/subscribe",
                json={**signed_in("ana"), "subscription": push_service.browser("x").subscription()},
                headers=AUTH,
            )
            assert refused.status_code == 403 and refused.json()["error"]["field"] == "userId"
            track(services, "ana", "Go")
    finally:
        services.close()
    assert [pushed["path"] for pushed in push_service.received] == ["/push/ana"]


def test_a_push_reaches_the_browser_encrypted_and_signed(
    wired: tuple[Services, TestClient[Any]], push_service: PushService
) -> None:
    services, client = wired
    browser = push_service.browser("ana")
    publish(services, journey("{channel: push, template: abandoned-cart-push}"))
    opt_in(services, "ana", push_token="")  # no mobile token: the browser is the device
    answer = client.post(
        "/v1/push/subscribe",
        json={**signed_in("ana"), "subscription": browser.subscription()},
        headers=AUTH,
    )
    assert answer.status_code == 200
    track(services, "ana", "Go")
    [pushed] = push_service.received
    assert pushed["path"] == "/push/ana" and pushed["encoding"] == "aes128gcm"
    payload = json.loads(browser.decrypt(pushed["body"]))
    assert payload["title"] == "Still thinking it over?"
    assert payload["body"].endswith("your cart at Parcours demo shop is waiting for you.")
    assert payload["url"].startswith("http://127.0.0.1:8000/t/c/")  # the click is tracked
    [message] = outbox(services)
    assert message["state"] == "sent" and message["provider"] == "webpush"
    assert message["to"] == browser.endpoint


def test_a_gone_subscription_is_removed_and_the_message_falls_back(
    wired: tuple[Services, TestClient[Any]], push_service: PushService
) -> None:
    services, client = wired
    browser = push_service.browser("ana")
    publish(services, journey("{channel: push, template: t, fallback: [email]}"))
    opt_in(services, "ana", push_token="")
    client.post(
        "/v1/push/subscribe",
        json={**signed_in("ana"), "subscription": browser.subscription()},
        headers=AUTH,
    )
    push_service.gone.add("/push/ana")
    track(services, "ana", "Go")
    assert [(m["channel"], m["state"]) for m in outbox(services)] == [
        ("push", "failed"),
        ("email", "sent"),
    ]
    [failed] = events_named(services, "Message Failed")
    assert "410" in failed["reason"]
    with services.db.read() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM push_subscriptions")).scalar_one() == 0


# ---- mobile push through FCM ------------------------------------------------------------


@pytest.fixture
def fcm_wired(
    settings: Settings, clock: SimulatedClock, push_service: PushService
) -> Iterator[tuple[Services, TestClient[Any], Any]]:
    from tests.peers import FcmPeer

    with FcmPeer() as fcm:
        channels = {
            "sandbox": CERTAIN,
            "push": {
                "provider": "webpush",
                "subject": "mailto:ops@maison.example",
                "fcm": {
                    "service_account": json.dumps(fcm.service_account()),
                    "api_base": fcm.url,
                },
            },
        }
        services = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
                yield services, client, fcm
        finally:
            services.close()


def test_app_devices_go_through_fcm_and_browsers_through_web_push(
    fcm_wired: tuple[Services, TestClient[Any], Any], push_service: PushService
) -> None:
    services, client, fcm = fcm_wired
    publish(services, journey("{channel: push, template: abandoned-cart-push}"))
    opt_in(services, "ana", push_token="fcm-token-ana")  # the app's registration token
    opt_in(services, "bob", push_token="")
    browser = push_service.browser("bob")
    client.post(
        "/v1/push/subscribe",
        json={**signed_in("bob"), "subscription": browser.subscription()},
        headers=AUTH,
    )
    track(services, "ana", "Go")
    track(services, "bob", "Go")
    [sent] = fcm.messages
    assert sent["token"] == "fcm-token-ana"
    assert sent["notification"]["title"] == "Still thinking it over?"
    assert sent["data"]["url"].startswith("http://127.0.0.1:8000/t/c/")
    assert len(push_service.received) == 1  # bob's browser
    by_provider = {m["provider"]: m["state"] for m in outbox(services)}
    assert by_provider == {"fcm": "sent", "webpush": "sent"}
    track(services, "ana", "Go")
    assert len(fcm.messages) == 2
    assert len(fcm.tokens) == 1  # the access token was kept for the next sends


def test_an_unregistered_app_token_is_barred(
    fcm_wired: tuple[Services, TestClient[Any], Any],
) -> None:
    services, _, fcm = fcm_wired
    publish(services, journey("{channel: push, template: t, fallback: [email]}"))
    opt_in(services, "ana", push_token="fcm-token-old")
    fcm.unregistered.add("fcm-token-old")
    track(services, "ana", "Go")
    assert [(m["channel"], m["state"]) for m in outbox(services)] == [
        ("push", "failed"),
        ("email", "sent"),
    ]
    [failed] = events_named(services, "Message Failed")
    assert "UNREGISTERED" in failed["reason"]
    with services.db.read() as conn:
        from sqlalchemy import text

        barred = conn.execute(text("SELECT channel, address FROM suppressions")).all()
    assert [tuple(row) for row in barred] == [("push", "fcm-token-old")]


# ---- iOS apps through APNs (HTTP/2) -----------------------------------------------------------


def test_ios_devices_go_through_apns_over_http2(
    settings: Settings, clock: SimulatedClock, tmp_path: Any
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.peers import ApnsPeer, make_authority

    authority = make_authority(tmp_path, "pass.example")
    app_key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey_KEY123.p8"
    key_file.write_bytes(
        app_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ios_token, old_token = "ab" * 32, "cd" * 32
    with ApnsPeer(authority, app_key=app_key) as apns:
        channels = {
            "sandbox": CERTAIN,
            "push": {
                "apns": {
                    "team_id": "TEAM123456",
                    "key_id": "KEY123",
                    "key_file": str(key_file),
                    "topic": "com.maison.app",
                    "api_base": apns.url,
                    "ca_file": str(authority["root"]),
                }
            },
        }
        services = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            publish(services, journey("{channel: push, template: t, fallback: [email]}"))
            opt_in(services, "ana", push_token=ios_token)
            opt_in(services, "bob", push_token=old_token)
            apns.gone.add(old_token)
            apns.expire_next_token = True  # the first token is refused: a new one is made
            track(services, "ana", "Go")
            track(services, "bob", "Go")
            [pushed] = apns.received
            assert pushed["token"] == ios_token
            assert pushed["headers"]["apns-topic"] == "com.maison.app"
            assert pushed["headers"]["apns-push-type"] == "alert"
            assert pushed["body"]["aps"]["alert"] == {
                "title": "Hello",
                "body": "From Parcours demo shop",
            }
            by_customer = sorted(
                (m["channel"], m["state"], m["provider"]) for m in outbox(services)
            )
            assert by_customer == [
                ("email", "sent", "sandbox"),  # bob's fallback
                ("push", "failed", "apns"),  # bob: Unregistered
                ("push", "sent", "apns"),  # ana
            ]
        finally:
            services.close()
