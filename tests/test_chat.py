"""The site chat over a real WebSocket on loopback: the customer's messages become events,
Parcours' chat messages reach the open widget, are delivered once and marked read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import WRITE_KEY, LiveServer, free_port
from tests.test_channels import CERTAIN, events_named, journey, outbox, publish
from tests.test_journeys_engine import opt_in


@pytest.fixture
def live(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, str]]:
    port = free_port()
    services = Services.open(settings.with_overrides(channels={"sandbox": CERTAIN}), clock=clock)
    try:
        with LiveServer(services, port):
            yield services, f"127.0.0.1:{port}"
    finally:
        services.close()


def test_the_widget_script_speaks_the_page_language(live: tuple[Services, str]) -> None:
    _, host = live
    french = httpx.get(f"http://{host}/chat/widget.js?lang=fr-FR")
    assert french.headers["content-type"].startswith("text/javascript")
    assert "Écrivez votre message…" in french.text and "new WebSocket" in french.text
    assert "Write a message…" in httpx.get(f"http://{host}/chat/widget.js").text


def test_a_chat_both_ways(live: tuple[Services, str]) -> None:
    services, host = live
    publish(services, journey("{channel: chat, template: t, purpose: transactional}"))

    async def conversation() -> list[dict[str, Any]]:
        url = f"ws://{host}/chat/ws?writeKey={WRITE_KEY}&anonymousId=visitor-1&locale=fr-FR"
        received: list[dict[str, Any]] = []
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"type": "message", "text": "Livrez-vous en Belgique ?"}))
            received.append(json.loads(await socket.recv()))  # the acknowledgement
            # The journey answers on the chat channel while the widget is open.
            await asyncio.to_thread(_go, services)
            message = json.loads(await asyncio.wait_for(socket.recv(), 10))
            received.append(message)
            await socket.send(json.dumps({"type": "read", "id": message["id"]}))
            for _ in range(100):  # the widget stays open until the server has it
                if outbox(services)[0]["status"] == "read":
                    break
                await asyncio.sleep(0.05)
        return received

    ack, message = asyncio.run(conversation())
    assert ack == {"type": "ack"}
    assert message["type"] == "message" and message["text"] == "Hello"
    [asked] = events_named(services, "Message Received")
    assert asked == {"channel": "chat", "text": "Livrez-vous en Belgique ?"}
    [sent] = outbox(services)
    assert sent["channel"] == "chat" and sent["provider"] == "site"
    assert sent["status"] == "read"
    assert [e["channel"] for e in events_named(services, "Message Delivered")] == ["chat"]


def _go(services: Services) -> None:
    from tests.conftest import make_event

    event = make_event("track", anonymousId="visitor-1", event="Go", at=services.clock.now_ms())
    services.writer.append_sync([event])
    services.worker.run_due()


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


def test_a_bad_write_key_is_refused(live: tuple[Services, str]) -> None:
    _, host = live

    async def attempt() -> int | None:
        url = f"ws://{host}/chat/ws?writeKey=nope&anonymousId=v"
        try:
            async with websockets.connect(url) as socket:
                await socket.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        return None

    assert asyncio.run(attempt()) in (4401, 403)
