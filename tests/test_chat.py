"""The site chat over a real WebSocket on loopback: a visitor token from /chat/session opens
the visitor's own conversation and no other; the customer's messages become events;
Parcours' chat messages reach the open widget, are delivered once the widget confirms
them, and marked read."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection

from parcours.channels.chat import VisitorTokens
from parcours.customers.verification import user_hash
from parcours.ingest.bulk import import_file
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.db import Database, migrate
from parcours.runtime.keys import create_key
from parcours.runtime.settings import Settings, SettingsError, load_settings
from parcours.services import Services
from parcours.tracking import parse_event
from tests.conftest import WRITE_KEY, LiveServer, free_port, wait_until_serving
from tests.test_channels import CERTAIN, events_named, journey, outbox, publish
from tests.test_journeys_engine import opt_in

IDENTITY_SECRET = "brand-identity-secret-0123456789"
CHAT_STEP = "{channel: chat, template: t, purpose: transactional}"


@contextmanager
def serving(
    settings: Settings, clock: SimulatedClock, **overrides: Any
) -> Iterator[tuple[Services, str]]:
    overrides = {"channels": {"sandbox": CERTAIN}, **overrides}
    services = Services.open(settings.with_overrides(**overrides), clock=clock)
    try:
        with LiveServer(services) as server:
            yield services, f"127.0.0.1:{server.port}"
    finally:
        services.close()


@pytest.fixture
def live(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, str]]:
    with serving(settings, clock, identity_verification_secret=IDENTITY_SECRET) as running:
        yield running


# ---- what the widget does -------------------------------------------------------------


def new_session(host: str, **body: Any) -> httpx.Response:
    return httpx.post(f"http://{host}/chat/session", json={"writeKey": WRITE_KEY, **body})


def visitor(host: str) -> tuple[str, str]:
    """A new anonymous visitor: their token and anonymous id."""
    answer = new_session(host)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"], answer.json()["anonymousId"]


async def open_chat(host: str, token: str, **hello: Any) -> ClientConnection:
    """A widget's socket once the server said it is ready."""
    socket = await websockets.connect(f"ws://{host}/chat/ws")
    await socket.send(json.dumps({"type": "hello", "token": token, **hello}))
    ready = await receive(socket)
    assert ready["type"] == "ready", ready
    return socket


async def receive(socket: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
    return frame


async def refused(host: str, hello: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """What a socket saying `hello` gets before the server closes it: its one frame and
    the close code."""
    async with websockets.connect(f"ws://{host}/chat/ws") as socket:
        await socket.send(json.dumps(hello))
        return await closing(socket)


async def closing(socket: ClientConnection) -> tuple[dict[str, Any], int | None]:
    frame = await receive(socket)
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        await receive(socket)
    return frame, closed.value.rcvd.code if closed.value.rcvd else None


async def confirm(socket: ClientConnection, message_id: str, *statuses: str) -> None:
    for status in statuses:
        await socket.send(json.dumps({"type": status, "id": message_id}))


async def until_status(services: Services, message_id: str, status: str) -> None:
    """The widget stays open until the server has recorded what it sent."""
    for _ in range(200):
        if message(services, message_id)["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} never became {status}")


def message(services: Services, message_id: str) -> dict[str, Any]:
    [found] = [m for m in outbox(services) if m["id"] == message_id]
    return found


def go(services: Services, name: str = "Go", **identity: Any) -> None:
    """The journey answers this visitor on the chat channel: `name` recorded about them as
    the chat records its visitors' events (a chat visitor's id is written by the chat
    only)."""
    now = services.clock.now_ms()
    document = {"type": "track", "event": name, "timestamp": iso(now), **identity}
    event = parse_event(
        json.dumps(document).encode(), source="chat", received_at=now, chat_visitor=True
    )
    services.writer.append_sync([event])
    services.worker.run_due()


def delivered_ids(services: Services) -> list[str]:
    return [e["message_id"] for e in events_named(services, "Message Delivered")]


# ---- the widget and a conversation ----------------------------------------------------


def test_the_widget_script_speaks_the_page_language(live: tuple[Services, str]) -> None:
    _, host = live
    french = httpx.get(f"http://{host}/chat/widget.js?lang=fr-FR")
    assert french.headers["content-type"].startswith("text/javascript")
    assert "Écrivez votre message…" in french.text and "new WebSocket" in french.text
    assert "La discussion n’est pas disponible pour le moment." in french.text
    english = httpx.get(f"http://{host}/chat/widget.js").text
    assert "Write a message…" in english and "The chat is not available right now." in english
    assert "/chat/session" in english and "userHash" in english


def test_a_chat_both_ways(live: tuple[Services, str]) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    token, anonymous_id = visitor(host)

    async def conversation() -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        async with await open_chat(host, token, locale="fr-FR") as socket:
            await socket.send(json.dumps({"type": "message", "text": "Livrez-vous en Belgique ?"}))
            received.append(await receive(socket))  # the acknowledgement
            # The journey answers on the chat channel while the widget is open.
            await asyncio.to_thread(go, services, anonymousId=anonymous_id)
            sent = await receive(socket)
            received.append(sent)
            await confirm(socket, sent["id"], "delivered", "read")
            await until_status(services, sent["id"], "read")
        return received

    ack, sent = asyncio.run(conversation())
    assert ack == {"type": "ack"}
    assert sent["type"] == "message" and sent["text"] == "Hello"
    [asked] = events_named(services, "Message Received")
    assert asked == {"channel": "chat", "text": "Livrez-vous en Belgique ?"}
    [row] = outbox(services)
    assert row["channel"] == "chat" and row["provider"] == "site"
    assert row["status"] == "read"
    assert delivered_ids(services) == [sent["id"]]
    assert [e["message_id"] for e in events_named(services, "Message Read")] == [sent["id"]]


def test_without_an_open_chat_the_message_goes_another_way(live: tuple[Services, str]) -> None:
    services, _ = live
    publish(services, journey("{channel: chat, template: t, fallback: [email]}"))
    opt_in(services, "ana")
    from tests.test_journeys_engine import track

    track(services, "ana", "Go")
    assert [m["channel"] for m in outbox(services)] == ["email"]
    [chosen] = events_named(services, "Channel Chosen")
    assert chosen["passed_over"] == [
        {"channel": "chat", "reason": "the site chat was not open in the last 24 hours"}
    ]


# ---- delivered means the widget has it ------------------------------------------------


def test_a_message_the_widget_did_not_confirm_comes_again_with_its_id(
    live: tuple[Services, str],
) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    publish(services, journey(CHAT_STEP, entry="Again").replace("id: j\n", "id: j2\n"))
    token, anonymous_id = visitor(host)

    async def first_visit() -> list[dict[str, Any]]:
        async with await open_chat(host, token) as socket:
            await asyncio.to_thread(go, services, anonymousId=anonymous_id)
            first = await receive(socket)
            # A later message comes in a later round of the socket: whatever that socket
            # did about the first one is done by then.
            await asyncio.to_thread(go, services, "Again", anonymousId=anonymous_id)
            second = await receive(socket)
        return [first, second]  # the page closed before the widget confirmed them

    offered = asyncio.run(first_visit())
    ids = [m["id"] for m in offered]
    assert len(set(ids)) == 2  # each offered once on a socket
    assert [message(services, i)["status"] for i in ids] == ["sent", "sent"]
    assert delivered_ids(services) == []

    async def second_visit() -> list[dict[str, Any]]:
        async with await open_chat(host, token) as socket:
            again = [await receive(socket), await receive(socket)]
            for sent in again:
                await confirm(socket, sent["id"], "delivered", "delivered")
            await until_status(services, ids[1], "delivered")
        return again

    assert asyncio.run(second_visit()) == offered
    assert delivered_ids(services) == ids  # confirmed twice, recorded once


def test_a_message_read_was_delivered_first(live: tuple[Services, str]) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    token, anonymous_id = visitor(host)

    async def visit() -> str:
        async with await open_chat(host, token) as socket:
            await asyncio.to_thread(go, services, anonymousId=anonymous_id)
            sent = await receive(socket)
            await confirm(socket, sent["id"], "read")  # its delivery confirmation was lost
            await until_status(services, sent["id"], "read")
        return str(sent["id"])

    message_id = asyncio.run(visit())
    # Recorded when "read" was, in order, not by a task the closing socket could cancel.
    assert delivered_ids(services) == [message_id]
    assert events_about(services, message_id) == [
        "Message Sent",
        "Message Delivered",
        "Message Read",
    ]


def events_about(services: Services, message_id: str) -> list[str]:
    """The names of the events about one message, in the log's order."""
    with services.db.read() as conn:
        rows = conn.execute(text("SELECT name, payload FROM events ORDER BY seq")).all()
    return [
        row.name
        for row in rows
        if json.loads(row.payload).get("properties", {}).get("message_id") == message_id
    ]


# ---- a visitor reads only their own conversation --------------------------------------


def test_a_visitor_token_opens_only_its_own_conversation(live: tuple[Services, str]) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    token_a, visitor_a = visitor(host)
    token_b, visitor_b = visitor(host)
    assert visitor_a != visitor_b and visitor_a.startswith("visitor_")

    async def scenario() -> tuple[str, str, tuple[dict[str, Any], int | None]]:
        async with await open_chat(host, token_b):
            pass  # B opened the chat once, and left
        await asyncio.to_thread(go, services, anonymousId=visitor_b)
        [for_b] = [m["id"] for m in outbox(services)]
        # A names B, and an internal id, beside A's own token: the token alone counts.
        socket = await open_chat(host, token_a, anonymousId=visitor_b, userId="cus_1")
        await asyncio.to_thread(go, services, anonymousId=visitor_a)
        first = await receive(socket)  # B's message, older, would have come first
        await confirm(socket, for_b, "delivered", "read")
        await confirm(socket, first["id"], "delivered", "read")
        await until_status(services, first["id"], "read")
        # Nor can A's open socket take B's token on as a renewal.
        await socket.send(json.dumps({"type": "token", "token": token_b}))
        switched = await closing(socket)
        return for_b, str(first["id"]), switched

    for_b, for_a, switched = asyncio.run(scenario())
    assert for_a != for_b
    assert message(services, for_b)["status"] == "sent"
    assert delivered_ids(services) == [for_a]
    assert switched == (
        {
            "type": "error",
            "field": "token",
            "message": "the token is another visitor's: open a new chat",
        },
        4403,
    )

    async def b_comes_back() -> dict[str, Any]:
        async with await open_chat(host, token_b) as socket:
            return await receive(socket)

    assert asyncio.run(b_comes_back()) == {"type": "message", "id": for_b, "text": "Hello"}


def test_a_forged_or_expired_token_opens_nothing(
    live: tuple[Services, str], clock: SimulatedClock
) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    token_a, _ = visitor(host)
    token_b, visitor_b = visitor(host)

    async def b_gets_a_message() -> None:
        async with await open_chat(host, token_b):
            pass
        await asyncio.to_thread(go, services, anonymousId=visitor_b)

    asyncio.run(b_gets_a_message())
    [for_b] = [m["id"] for m in outbox(services)]
    prefix, _, rest = token_a.partition(".")
    payload_a, _, mac_a = rest.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_a + "=" * (-len(payload_a) % 4)))
    as_b = base64.urlsafe_b64encode(json.dumps({**claims, "v": visitor_b}).encode())
    forged = {
        "A's signature on B's id": f"{prefix}.{as_b.rstrip(b'=').decode()}.{mac_a}",
        "B's id signed with another key": VisitorTokens(os.urandom(32)).issue(
            "anonymous", visitor_b, clock.now_ms()
        )[0],
        "a signed-in customer signed with another key": VisitorTokens(os.urandom(32)).issue(
            "user", "ana", clock.now_ms()
        )[0],
        "B's token altered": token_b[:-2] + ("AA" if not token_b.endswith("AA") else "BB"),
        "not a token": "cus_1",
    }
    not_valid = "the visitor token is not valid (not made by this Parcours, or altered)"
    for name, token in forged.items():
        answer = asyncio.run(refused(host, {"type": "hello", "token": token}))
        assert answer == ({"type": "error", "field": "token", "message": not_valid}, 4401), name
    assert asyncio.run(refused(host, {"type": "hello"}))[1] == 4401

    clock.advance(timedelta(hours=1))
    expired = asyncio.run(refused(host, {"type": "hello", "token": token_b}))
    assert expired == (
        {
            "type": "error",
            "field": "token",
            "message": "the visitor token expired: ask POST /chat/session for a new one",
        },
        4401,
    )
    assert message(services, for_b)["status"] == "sent"
    assert delivered_ids(services) == []

    # B's widget renews the expired token: the same visitor, who then gets the message.
    renewed = new_session(host, token=token_b)
    assert renewed.status_code == 200 and renewed.json()["anonymousId"] == visitor_b
    assert renewed.json()["expiresIn"] == 3600

    async def b_comes_back() -> dict[str, Any]:
        async with await open_chat(host, renewed.json()["token"]) as socket:
            return await receive(socket)

    assert asyncio.run(b_comes_back())["id"] == for_b
    # A forged token is not renewed, nor one issued more than 30 days ago.
    assert new_session(host, token=forged["A's signature on B's id"]).status_code == 401
    clock.advance(timedelta(days=30))
    too_old = new_session(host, token=renewed.json()["token"])
    assert too_old.status_code == 401
    assert too_old.json()["error"] == {
        "field": "token",
        "message": "the visitor token is too old to renew (30 days): start a new session "
        "without it",
    }


def track_with_write_key(host: str, kind: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"http://{host}/v1/{kind}", json={"writeKey": WRITE_KEY, **body})


def test_a_tracking_call_cannot_tie_a_chat_visitor_to_another_customer(
    live: tuple[Services, str],
) -> None:
    """The attack: a visitor token of one's own, then a tracking call (public write key)
    naming Ana's user id beside one's visitor id, as if identity merging made the two one
    person; the visitor's chat would then be Ana's."""
    services, host = live
    publish(services, journey(CHAT_STEP))
    opt_in(services, "ana")
    ana = new_session(host, userId="ana", userHash=user_hash(IDENTITY_SECRET, "ana"))
    token_m, visitor_m = visitor(host)

    async def scenario() -> tuple[list[httpx.Response], str, dict[str, Any]]:
        async with await open_chat(host, ana.json()["token"]):
            pass  # Ana opened the chat once, and left
        await asyncio.to_thread(go, services, userId="ana")
        [for_ana] = [m["id"] for m in outbox(services)]
        tie = {"userId": "ana", "anonymousId": visitor_m}
        answers = [
            track_with_write_key(host, "track", {**tie, "event": "Product Viewed"}),
            track_with_write_key(host, "identify", tie),
            track_with_write_key(host, "alias", {"userId": "ana", "previousId": visitor_m}),
        ]
        socket = await open_chat(host, token_m)
        await asyncio.to_thread(go, services, anonymousId=visitor_m)
        first = await receive(socket)  # Ana's message, older, would have come first
        await confirm(socket, for_ana, "delivered", "read")
        await confirm(socket, first["id"], "delivered")
        await until_status(services, first["id"], "delivered")
        await socket.close()
        return answers, for_ana, first

    answers, for_ana, first = asyncio.run(scenario())
    assert [(a.status_code, a.json()["error"]["field"]) for a in answers] == [
        (400, "anonymousId"),
        (400, "anonymousId"),
        (400, "previousId"),
    ]
    assert answers[0].json()["error"]["message"] == (
        "anonymousId: ids starting with 'visitor_' are the site chat's visitors' and are "
        "written by the chat only: use another anonymous id"
    )
    assert first["id"] != for_ana
    assert message(services, for_ana)["status"] == "sent"
    assert delivered_ids(services) == [first["id"]]
    assert message(services, first["id"])["customer"] != customer_of(services, "ana")


def test_a_chat_visitor_id_is_refused_on_every_path_but_the_chat(
    live: tuple[Services, str], tmp_path: Path
) -> None:
    """Refused alone: the other events of a batch or an import are stored."""
    services, host = live
    _, visitor_id = visitor(host)
    good = {"type": "track", "event": "Product Viewed", "anonymousId": "anon-1"}
    batch = track_with_write_key(
        host,
        "batch",
        {
            "batch": [
                {"type": "track", "event": "Product Viewed", "anonymousId": visitor_id},
                good,
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "userId": "ana",
                    "context": {"externalIds": [{"id": visitor_id, "type": "anonymous_id"}]},
                },
            ]
        },
    )
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 1
    assert [(r["index"], r["field"]) for r in batch.json()["rejected"]] == [
        (0, "anonymousId"),
        (2, "context.externalIds[0].id"),
    ]
    file = tmp_path / "events.jsonl"
    lines = [
        {"type": "identify", "userId": "ana", "anonymousId": visitor_id},
        {**good, "anonymousId": "anon-2"},
    ]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = import_file(services.db, services.writer, services.clock, file)
    assert report.stored == 1
    assert [number for number, _ in report.rejected] == [1]
    assert report.rejected[0][1].startswith("anonymousId: ids starting with 'visitor_'")
    with services.db.read() as conn:
        held = conn.execute(
            text("SELECT count(*) FROM identities WHERE value = :v"), {"v": visitor_id}
        ).scalar_one()
    assert held == 0  # the chat writes the visitor's id when the visitor first writes


def test_an_open_chat_closes_when_its_token_expires_unless_renewed(
    live: tuple[Services, str], clock: SimulatedClock
) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    token, anonymous_id = visitor(host)

    async def scenario() -> tuple[dict[str, Any], tuple[dict[str, Any], int | None]]:
        socket = await open_chat(host, token)
        clock.advance(timedelta(minutes=55))
        renewed = new_session(host, token=token).json()["token"]
        await socket.send(json.dumps({"type": "token", "token": renewed}))
        assert await receive(socket) == {"type": "renewed", "expiresIn": 3600}
        clock.advance(timedelta(minutes=10))  # past the first token's hour
        # The socket checks its token before each delivery: it is still open.
        await asyncio.to_thread(go, services, anonymousId=anonymous_id)
        sent = await receive(socket)
        clock.advance(timedelta(hours=1))
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await confirm(socket, sent["id"], "delivered", "read")  # too late
        return sent, await closing(socket)

    sent, closed = asyncio.run(scenario())
    assert sent["type"] == "message"
    assert message(services, sent["id"])["status"] == "sent"
    assert delivered_ids(services) == []
    assert closed == (
        {"type": "error", "field": "token", "message": "the visitor token expired: renew it"},
        4401,
    )


# ---- a signed-in customer: the brand's identity hash -----------------------------------


def test_a_signed_in_customer_needs_the_brands_hash(live: tuple[Services, str]) -> None:
    services, host = live
    publish(services, journey(CHAT_STEP))
    opt_in(services, "ana")
    opt_in(services, "ben")

    missing = new_session(host, userId="ana")
    assert missing.status_code == 401
    assert missing.json()["error"] == {
        "field": "userHash",
        "message": "userHash is required with userId: HMAC-SHA256 of the user id keyed with "
        "the identity verification secret, in hex",
    }
    wrong = new_session(host, userId="ana", userHash=user_hash(IDENTITY_SECRET, "ben"))
    assert wrong.status_code == 403
    assert wrong.json()["error"] == {
        "field": "userHash",
        "message": "userHash does not match userId",
    }
    other_secret = new_session(host, userId="ana", userHash=user_hash("another-secret", "ana"))
    assert other_secret.status_code == 403
    alone = new_session(host, userHash=user_hash(IDENTITY_SECRET, "ana"))
    assert alone.status_code == 400 and alone.json()["error"]["field"] == "userHash"

    granted = new_session(host, userId="ana", userHash=user_hash(IDENTITY_SECRET, "ana"))
    assert granted.status_code == 200
    assert granted.json()["userId"] == "ana" and "anonymousId" not in granted.json()
    # A signed-in customer's token is renewed with the hash again, not by itself.
    assert new_session(host, token=granted.json()["token"]).status_code == 401

    async def ana_chats() -> dict[str, Any]:
        async with await open_chat(host, granted.json()["token"]) as socket:
            await asyncio.to_thread(go, services, userId="ana")
            sent = await receive(socket)
            await confirm(socket, sent["id"], "delivered")
            await until_status(services, sent["id"], "delivered")
            return sent

    sent = asyncio.run(ana_chats())
    assert message(services, sent["id"])["customer"] == customer_of(services, "ana")


def customer_of(services: Services, user: str) -> str:
    from parcours.customers import profiles as customers

    with services.db.read() as conn:
        return customers.public_id(customers.resolve(conn, user, "FR"))


def test_internal_customer_ids_are_refused(live: tuple[Services, str]) -> None:
    services, host = live
    opt_in(services, "ana")
    internal = customer_of(services, "ana")
    # Even with a valid hash: the chat never takes a Parcours id for a person.
    answer = new_session(host, userId=internal, userHash=user_hash(IDENTITY_SECRET, internal))
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "field": "userId",
        "message": f"userId {internal!r} is a Parcours customer id, which is never "
        "accepted from a browser: pass the brand's own user id",
    }

    async def the_old_way() -> tuple[dict[str, Any], int | None]:
        # What the widget sent before visitor tokens: a write key and an id in the URL.
        url = f"ws://{host}/chat/ws?writeKey={WRITE_KEY}&userId={internal}"
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"type": "hello", "userId": internal}))
            return await closing(socket)

    frame, code = asyncio.run(the_old_way())
    assert code == 4401 and frame["field"] == "token"
    assert events_named(services, "Chat Opened") == []


def test_signed_in_customers_are_refused_without_identity_verification(
    settings: Settings, clock: SimulatedClock
) -> None:
    with serving(settings, clock) as (services, host):
        assert services.settings.identity_verification_secret == ""
        answer = new_session(host, userId="ana", userHash="00" * 32)
        assert answer.status_code == 403
        assert answer.json()["error"] == {
            "field": "userId",
            "message": "signed-in visitors are refused: identity verification is not set up "
            "(identity_verification_secret)",
        }
        assert new_session(host).status_code == 200  # anonymous visitors still chat


def test_a_session_needs_a_live_write_key(live: tuple[Services, str]) -> None:
    _, host = live
    answer = httpx.post(f"http://{host}/chat/session", json={"writeKey": "nope"})
    assert answer.status_code == 401
    assert answer.json()["error"] == {
        "field": "writeKey",
        "message": "unknown or revoked write key",
    }
    assert answer.headers["access-control-allow-origin"] == "*"
    # The widget sends its JSON as text/plain (no preflight); a page may preflight.
    plain = httpx.post(
        f"http://{host}/chat/session",
        content=json.dumps({"writeKey": WRITE_KEY}),
        headers={"Content-Type": "text/plain", "Origin": "https://shop.example.com"},
    )
    assert plain.status_code == 200 and plain.headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(
        f"http://{host}/chat/session",
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "Content-Type, Authorization"


# ---- the identity secret setting ------------------------------------------------------


def test_the_identity_secret_is_a_secret_of_its_own(tmp_path: Path) -> None:
    loaded = load_settings({"PARCOURS_IDENTITY_VERIFICATION_SECRET": IDENTITY_SECRET}, None)
    assert loaded.identity_verification_secret == IDENTITY_SECRET
    assert IDENTITY_SECRET in loaded.secrets()  # left out of the logs
    shared = "the-same-long-secret-value"
    for other in ("write_key", "admin_key", "secret_key", "metrics_token"):
        with pytest.raises(SettingsError, match="identity_verification_secret is also a key"):
            load_settings(
                {
                    "PARCOURS_IDENTITY_VERIFICATION_SECRET": shared,
                    f"PARCOURS_{other.upper()}": shared,
                },
                None,
            )
    with pytest.raises(SettingsError, match="identity_verification_secret must be at least 16"):
        load_settings({"PARCOURS_IDENTITY_VERIFICATION_SECRET": "short"}, None)


# ---- keys and tokens stay out of the logs ---------------------------------------------


@pytest.mark.processes
def test_keys_and_tokens_in_a_websocket_url_are_left_out_of_the_server_log(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = Database(f"sqlite:///{data_dir / 'parcours.db'}")
    migrate(database)
    # A key made with `parcours keys create`: in the database, not among the settings.
    site_key = create_key(database, "write", "site")
    database.dispose()
    port = free_port()
    log_file = tmp_path / "server.log"
    env = {
        **os.environ,
        "PARCOURS_LOG_LEVEL": "info",
        "PARCOURS_LOG_FORMAT": "json",
        "PARCOURS_SERVE_WORKER": "false",
    }
    command = [str(Path(sys.executable).parent / "parcours"), "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    with log_file.open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            host = f"127.0.0.1:{port}"
            wait_until_serving(server, f"http://{host}")
            answer = httpx.post(f"http://{host}/chat/session", json={"writeKey": site_key})
            token = answer.json()["token"]
            secret_hash = "ab" * 32

            async def old_and_new_widgets() -> None:
                url = f"ws://{host}/chat/ws?writeKey={site_key}&userHash={secret_hash}"
                async with websockets.connect(f"{url}&token={token}&locale=fr") as socket:
                    await socket.send(json.dumps({"type": "hello", "token": token}))
                    assert (await receive(socket))["type"] == "ready"

            asyncio.run(old_and_new_widgets())
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    [opened] = [line["message"] for line in lines if "WebSocket /chat/ws" in line["message"]]
    assert "/chat/ws?writeKey=[redacted]&userHash=[redacted]&token=[redacted]&locale=fr" in opened
    text = log_file.read_text()
    for secret in (site_key, secret_hash, token, token.split(".")[2]):
        assert secret not in text
