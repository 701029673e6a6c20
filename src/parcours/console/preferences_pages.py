"""The preference centre: a customer's page, reached from every marketing message (its
link, and the unsubscribe page), in the brand's name and the customer's language, where
they choose on which channels they hear from the brand's marketing, or stop it all. Each
change is recorded as consent with its proof: the words shown, their version, the time,
and "preference centre" as the source. The words and their version are the ones in force
on the Settings page (parcours.brand), the shipped ones until it changes them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect

from parcours import brand
from parcours.console.access import ConsoleParts, Form, brand_of
from parcours.console.rendering import Viewer, page
from parcours.customers import CONSENT_EVENT, profiles
from parcours.http import Injected
from parcours.log import internal_event
from parcours.messaging import BadLink, PreferencesLink
from parcours.runtime.i18n import accept_language

CHANNELS = ("email", "sms", "whatsapp", "push")
SOURCE = "preference centre"


def _customer_of(parts: ConsoleParts, token: str) -> int | None:
    assert parts.links is not None
    try:
        return parts.links.signer.verify("preferences", token, PreferencesLink).customer
    except BadLink:
        return None


def _viewer(request: Request[Any, Any, Any], parts: ConsoleParts, customer_id: int) -> Viewer:
    traits: dict[str, Any] = {}
    if customer_id:
        with parts.db.read() as conn:
            traits = profiles.traits_of(conn, [customer_id]).get(customer_id, {})
    look = brand_of(parts)
    candidates = (
        traits.get("locale") if isinstance(traits.get("locale"), str) else None,
        accept_language(request.headers.get("accept-language")),
    )
    # The customer's language if the brand offers it (Settings page), else the brand's.
    offered = (str(c).replace("_", "-").split("-")[0].lower() for c in candidates if c)
    locale = next((x for x in offered if x in look.languages), look.locale)
    return Viewer(locale=locale, timezone=look.timezone, brand=look.name, look=look)


def _wording(parts: ConsoleParts, viewer: Viewer) -> tuple[str, str]:
    """The words that ask for consent in the viewer's language, and their version."""
    with parts.db.read() as conn:
        saved = brand.consent_wording(conn)
    if saved is not None and saved.texts.get(viewer.locale):
        return saved.texts[viewer.locale], saved.version
    return viewer.t("preferences.wording", brand=viewer.brand), brand.SHIPPED_VERSION


def _subscribed(parts: ConsoleParts, customer_id: int) -> dict[str, bool]:
    with parts.db.read() as conn:
        states = profiles.current_consents(conn, customer_id) if customer_id else []
    granted = {s.channel for s in states if s.purpose == "marketing" and s.status == "granted"}
    return {channel: channel in granted for channel in CHANNELS}


def _invalid(request: Request[Any, Any, Any], parts: ConsoleParts) -> Response[bytes]:
    """A link we did not sign: nothing of anyone shown."""
    viewer = _viewer(request, parts, 0)
    return page(
        viewer,
        "preferences.html",
        status=404,
        invalid=True,
        subscribed={},
        saved=False,
        channels=CHANNELS,
    )


@get("/p/{token:str}", sync_to_thread=True, include_in_schema=False)
def preferences_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], token: FromPath[str]
) -> Response[bytes]:
    customer_id = _customer_of(console, token)
    if customer_id is None:
        return _invalid(request, console)
    viewer = _viewer(request, console, customer_id)
    return page(
        viewer,
        "preferences.html",
        invalid=False,
        subscribed=_subscribed(console, customer_id),
        saved=request.query_params.get("saved") == "1",
        channels=CHANNELS,
        wording=_wording(console, viewer)[0],
    )


@post("/p/{token:str}", status_code=200, sync_to_thread=True, include_in_schema=False)
def save_preferences(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    token: FromPath[str],
    data: Form,
) -> Response[Any]:
    customer_id = _customer_of(console, token)
    if customer_id is None:
        return _invalid(request, console)
    if customer_id == 0:  # the link of a test send: shown, never acted on
        return Redirect(f"/p/{token}?saved=1", status_code=303)
    viewer = _viewer(request, console, customer_id)
    before = _subscribed(console, customer_id)
    everything_off = "none" in data
    wording, version = _wording(console, viewer)
    now = console.clock.now_ms()
    events = []
    for channel in CHANNELS:
        wanted = not everything_off and data.get(channel) == "on"
        if wanted == before[channel]:
            continue
        status = "granted" if wanted else "withdrawn"
        events.append(
            internal_event(
                customer_id,
                CONSENT_EVENT,
                {
                    "channel": channel,
                    "purpose": "marketing",
                    "status": status,
                    "source": SOURCE,
                    "wording": wording,
                    "wording_version": version,
                },
                now,
                f"preferences:{customer_id}:{channel}:{status}:{now}",
                "channel",
            )
        )
    if events:
        assert console.appender is not None
        console.appender.append_sync(events)
    return Redirect(f"/p/{token}?saved=1", status_code=303)


def preferences_routes() -> list[HTTPRouteHandler]:
    return [preferences_page, save_preferences]
