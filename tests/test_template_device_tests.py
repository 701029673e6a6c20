"""A test of a push or a Wallet message from a template's page (docs/console.md, "A test
to a device"): the person testing names a customer whose device gets it,
through delivery and the real providers' loopback peers (a Web Push service and the
browser that decrypts, APNs telling the phone that holds the pass), marked as a test
and audited as the tests to an address are; a customer without a device is told so; a
viewer is refused."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parcours import accounts
from parcours.customers import profiles
from parcours.messaging import passes, subscriptions
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.peers import ApnsPeer, PushService
from tests.test_channels import CERTAIN, outbox
from tests.test_console_build import Console, _eva, _team
from tests.test_journeys_engine import opt_in
from tests.test_push import push_service  # noqa: F401  (the fixture)
from tests.test_wallet import (  # noqa: F401  (apns, authority: the fixtures)
    PASS_TYPE,
    apns,
    apple_wallet,
    authority,
    issue,
    register_device,
)


@pytest.fixture
def devices(
    settings: Settings,
    clock: SimulatedClock,
    authority: dict[str, Path],  # noqa: F811
    apns: ApnsPeer,  # noqa: F811
) -> Iterator[Services]:
    channels = {
        "sandbox": CERTAIN,
        "push": {"provider": "webpush", "subject": "mailto:ops@maison.example"},
        "wallet": apple_wallet(authority, apns),
    }
    services = Services.open(settings.with_overrides(channels=channels), clock=clock)
    try:
        _team(services)
        _eva(services)  # whose data fills the template `gift`
        opt_in(services, "ana", push_token="")  # who holds the devices
        opt_in(services, "bob", push_token="")  # who holds none
        yield services
    finally:
        services.close()


def _customer(services: Services, ref: str) -> int:
    with services.db.read() as conn:
        return profiles.resolve(conn, ref, "FR")


def test_a_push_test_reaches_the_browser_of_the_customer_named(
    devices: Services,
    push_service: PushService,  # noqa: F811
) -> None:
    services = devices
    browser = push_service.browser("ana")
    with services.db.write() as conn:
        subscriptions.save(
            conn, _customer(services, "ana"), browser.subscription(), None, services.clock.now_ms()
        )
    marketer = Console(services, "marketer")
    try:
        form = {"customer": "eva@example.com", "channel": "push", "to": "bob"}
        refused = marketer.post("/console/templates/gift/test", form)
        assert refused.status_code == 400
        assert "bob has no push subscription: no browser subscribed" in refused.text
        unknown = marketer.post("/console/templates/gift/test", {**form, "to": "nobody@x.example"})
        assert unknown.status_code == 400 and "No customer is known by nobody@x.example" in (
            unknown.text
        )
        assert outbox(services) == []
        sent = marketer.post("/console/templates/gift/test", {**form, "to": "ana@example.com"})
        assert sent.status_code == 202, sent.text
        assert "The test is on its way to the device of ana@example.com (msg_" in sent.text
        # In French, a customer without a device is told so in French.
        french = marketer.client.post(
            "/console/templates/gift/test",
            data={"csrf": marketer.csrf, **form},
            headers={"Accept-Language": "fr"},
        )
        assert "bob n’a aucun abonnement push" in french.text
    finally:
        marketer.close()
    services.worker.run_due()
    [pushed] = push_service.received
    assert pushed["path"] == "/push/ana"
    payload = json.loads(browser.decrypt(pushed["body"]))
    assert payload["title"] == "[TEST] A gift for Eva"  # Eva's data, Ana's browser
    [message] = outbox(services)
    assert (message["purpose"], message["state"], message["to"]) == (
        "test",
        "sent",
        browser.endpoint,
    )
    with services.db.read() as conn:
        [entry] = accounts.entries(conn, action="template.test_sent")
    assert entry.user_email == "marketer@brand.example"
    assert entry.after == {
        "channel": "push",
        "to": f"cus_{_customer(services, 'ana')}",
        "customer": f"cus_{_customer(services, 'eva@example.com')}",
        "message": message["id"],
    }


def test_a_wallet_test_reaches_the_pass_of_the_customer_named(
    devices: Services,
    apns: ApnsPeer,  # noqa: F811
) -> None:
    services = devices
    marketer = Console(services, "marketer")
    try:
        client = marketer.client
        form = {"customer": "eva@example.com", "channel": "wallet", "to": "ana"}
        refused = marketer.post("/console/templates/gift/test", form)
        assert refused.status_code == 400 and "ana has no Wallet pass on a device" in refused.text
        serial = issue(client, "ana")["serial"]
        register_device(client, services, serial, "dev-1", "apns-1")
        sent = marketer.post("/console/templates/gift/test", form)
        assert sent.status_code == 202, sent.text
        services.worker.run_due()
        [pushed] = apns.received
        assert pushed["token"] == "apns-1" and pushed["headers"]["apns-topic"] == PASS_TYPE
        with services.db.read() as conn:
            token = passes.get(conn, serial).auth_token  # type: ignore[union-attr]
        latest = client.get(
            f"/wallet/v1/passes/{PASS_TYPE}/{serial}",
            headers={"Authorization": f"ApplePass {token}"},
        )
        news = json.loads(zipfile.ZipFile(io.BytesIO(latest.content)).read("pass.json"))
        back: dict[str, Any] = news["storeCard"]["backFields"][0]
        assert (back["label"], back["value"]) == ("[TEST] Your gift", "Eva, 20% off today")
    finally:
        marketer.close()
    [message] = outbox(services)
    assert (message["channel"], message["purpose"], message["to"]) == ("wallet", "test", serial)
    with services.db.read() as conn:
        [entry] = accounts.entries(conn, action="template.test_sent")
    assert entry.after is not None and entry.after["to"] == f"cus_{_customer(services, 'ana')}"


def test_a_viewer_cannot_send_a_test_to_a_device(
    devices: Services,
    push_service: PushService,  # noqa: F811
) -> None:
    services = devices
    with services.db.write() as conn:
        subscription = push_service.browser("ana").subscription()
        subscriptions.save(conn, _customer(services, "ana"), subscription, None, 0)
    viewer = Console(services, "viewer")
    try:
        form = {"customer": "eva@example.com", "channel": "push", "to": "ana"}
        assert viewer.post("/console/templates/gift/test", form).status_code == 403
    finally:
        viewer.close()
    services.worker.run_due()
    assert outbox(services) == [] and push_service.received == []
