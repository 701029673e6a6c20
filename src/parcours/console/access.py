"""Who is signed in to the console, and what a request must show before it changes
anything: the session's signed cookie, its CSRF token on every POST, and the permission
the change needs (docs/console.md, "Sign-in, sessions, CSRF")."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from parcours import accounts, brand
from parcours.accounts import Permission, Session
from parcours.brand import BrandSettings
from parcours.console.rendering import Viewer, page
from parcours.customers import People
from parcours.log import Appender
from parcours.messaging import Delivery, Links
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.i18n import accept_language, pick_locale
from parcours.runtime.settings import RECOMMENDATION_WEEKS, SHIPMENT_STALLED_AFTER_HOURS

COOKIE = "parcours_console"
# A form's fields, as Litestar reads an urlencoded body (`data: Form`).
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class ConsoleParts:
    """What the console's handlers are handed by the composition root (app.py)."""

    db: Database
    clock: Clock
    cookie_secret: str
    secure_cookies: bool
    brand: str
    timezone: str
    brand_locale: str
    queues: tuple[str, ...] = ()  # the worker's queues, for the overview's health
    stale_ms: int = 30_000  # a worker's heartbeat older than this is stale
    default_region: str = "FR"  # how a phone number typed without its country is read
    people: People | None = None  # each package's hooks for a person erased
    links: Links | None = None  # the signed links of messages (the preference centre's)
    delivery: Delivery | None = None  # for previews: a message's context, as it would go
    appender: Appender | None = None  # the way into the log (consents given on a page)
    sector: str = ""  # the configured sector, under the one set on the Settings page
    return_window_days: int = 0  # the setting (0: the sector's custom): the tracking page's
    review_after_days: int = 0  # the setting (0: the sector's custom), under the page's
    stalled_after_hours: int = SHIPMENT_STALLED_AFTER_HOURS  # the setting: Shipments' default
    recommendation_weeks: int = RECOMMENDATION_WEEKS  # the setting: best sellers' window
    # People's own time (sessions, sign-in, second factor, invitations): `clock` but in the
    # demo, whose clock runs faster (runtime/clock.py, `wall_clock`).
    wall: Clock | None = None

    @property
    def people_clock(self) -> Clock:
        return self.wall or self.clock


def brand_defaults(parts: ConsoleParts) -> brand.Defaults:
    """The configuration's values of the brand, which the Settings page's are over."""
    return brand.Defaults(
        parts.brand, parts.sector, parts.timezone, parts.brand_locale, parts.review_after_days
    )


def brand_of(parts: ConsoleParts) -> BrandSettings:
    """The brand as the Settings page set it, over the configuration's values."""
    with parts.db.read() as conn:
        return brand.current(conn, brand_defaults(parts))


class SignInNeeded(Exception):
    """No live session: the console's exception handler sends the browser to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(Exception):
    """A change the viewer may not make, or a POST without the session's CSRF token."""

    def __init__(self, viewer: Viewer, key: str) -> None:
        super().__init__(key)
        self.viewer = viewer
        self.key = key


def viewer_of(
    request: Request[Any, Any, Any], parts: ConsoleParts, session: Session | None
) -> Viewer:
    locale = pick_locale(
        session.user.locale if session else None,
        accept_language(request.headers.get("accept-language")),
        parts.brand_locale,
    )
    look = brand_of(parts)
    return Viewer(
        locale=locale, timezone=look.timezone, brand=look.name, session=session, look=look
    )


def session_of(request: Request[Any, Any, Any], parts: ConsoleParts) -> Session | None:
    token = accounts.token_of_cookie(parts.cookie_secret, request.cookies.get(COOKIE))
    return accounts.session_of(parts.db, token, parts.people_clock.now_ms())


def signed_in(request: Request[Any, Any, Any], parts: ConsoleParts) -> Viewer:
    """The viewer of a page that needs a signed-in user (fully: second factor given)."""
    session = session_of(request, parts)
    if session is None or session.pending_second_factor:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(target)
    return viewer_of(request, parts, session)


def changing(
    request: Request[Any, Any, Any],
    parts: ConsoleParts,
    permission: Permission | None,
    form: dict[str, str],
) -> Viewer:
    """The viewer of a POST that changes something: refused (403) without the session's
    CSRF token or without `permission`, whatever the page showed."""
    viewer = signed_in(request, parts)
    check_csrf(request, viewer, form)
    if permission is not None and not viewer.may(permission):
        raise Refused(viewer, "accounts.not_allowed")
    return viewer


def check_csrf(request: Request[Any, Any, Any], viewer: Viewer, form: dict[str, str]) -> None:
    assert viewer.session is not None
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not hmac.compare_digest(given.encode(), viewer.session.csrf_token.encode()):
        raise Refused(viewer, "console.csrf_refused")


def session_cookie(parts: ConsoleParts, token: str, max_age: int | None) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=accounts.sign_cookie(parts.cookie_secret, token),
        path="/",
        httponly=True,
        samesite="lax",
        secure=parts.secure_cookies,
        max_age=max_age,
    )


def cleared_cookie(parts: ConsoleParts) -> Cookie:
    return Cookie(
        key=COOKIE,
        value="",
        path="/",
        httponly=True,
        samesite="lax",
        secure=parts.secure_cookies,
        max_age=0,
    )


def go(path: str) -> Redirect:
    """After a change: to the page that shows it (303, so that a reload does not repeat it)."""
    return Redirect(path, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith("/console") and not value.startswith("//"):
        return value
    return "/console/"


def sign_in_redirect(exc: SignInNeeded) -> Redirect:
    return Redirect(f"/console/login?next={quote(exc.next_path, safe='')}", status_code=303)


def refused_page(exc: Refused) -> Response[bytes]:
    return page(exc.viewer, "refused.html", status=403, reason=exc.viewer.t(exc.key))
