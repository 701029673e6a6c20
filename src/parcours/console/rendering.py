"""How a console page is drawn: one Jinja2 environment over the console's templates, the
viewer's language for every text (the catalogue of `runtime.i18n`) and Babel for dates and
numbers, and the headers every page carries."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import Response

from parcours.accounts import Session
from parcours.brand import BrandSettings
from parcours.runtime.i18n import SHIPPED, text

_ENV = Environment(
    loader=PackageLoader("parcours.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
)
# No script, style or frame from anywhere else; no inline script (htmx is told not to
# add its own style: base.html).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the setup and invitation links carry their token
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page, and how to say things to them."""

    locale: str
    timezone: str
    brand: str
    session: Session | None = None
    look: BrandSettings | None = None  # the brand's logo and colours (settings_pages.py)

    def t(self, key: str, **values: Any) -> str:
        return text(self.locale, key, **{k: str(v) for k, v in values.items()})

    def when(self, ms: int | None) -> str:
        if ms is None:
            return ""
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return format_datetime(
            moment, format="medium", tzinfo=ZoneInfo(self.timezone), locale=self.locale
        )

    def day(self, value: date) -> str:
        return format_date(value, format="medium", locale=self.locale)

    def money(self, amount: Decimal, currency: str) -> str:
        try:
            return str(format_currency(amount, currency, locale=self.locale))
        except (ValueError, KeyError):  # not a currency Babel knows
            return f"{self.number(float(amount))} {currency}"

    def number(self, value: float) -> str:
        return str(format_decimal(value, locale=self.locale))

    def may(self, permission: str) -> bool:
        return self.session is not None and self.session.user.may(permission)  # type: ignore[arg-type]


def warm_templates() -> int:
    """Compile every page's template now (how many): Jinja compiles one the first time it
    is rendered, which made a page's first view after a start 0.2 to 1 s slower than the
    next (the customer's page, the largest). The process's first page starts it in a
    thread of its own (`render`): a process that draws no page pays nothing, and the start
    is not slowed (compiling them all costs about 2.5 s of one core)."""
    names = _ENV.list_templates(extensions=["html"])
    for name in names:
        _ENV.get_template(name)
    return len(names)


_warming = threading.Lock()
_warm_started = False


def _warm_in_the_background() -> None:
    global _warm_started
    with _warming:  # uncontended but for the first pages at once
        if _warm_started:
            return
        _warm_started = True
    threading.Thread(target=warm_templates, name="parcours-templates", daemon=True).start()


def _as_json(value: Any) -> str:
    """A value as JSON, Structs included (a template escapes it where it shows it)."""
    return msgspec.json.encode(value).decode()


_ENV.globals["as_json"] = _as_json


def render(viewer: Viewer, template: str, **values: Any) -> str:
    """`template` drawn for `viewer` (a page, or a part of one)."""
    _warm_in_the_background()
    return _ENV.get_template(template).render(v=viewer, t=viewer.t, locales=SHIPPED, **values)


def page(viewer: Viewer, template: str, status: int = 200, **values: Any) -> Response[bytes]:
    """The page `template` drawn for `viewer`, with every page's headers."""
    html = render(viewer, template, **values)
    return Response(
        html.encode("utf-8"),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


def not_found(viewer: Viewer, key: str) -> Response[bytes]:
    """404, saying in the viewer's language what is not there."""
    return page(viewer, "refused.html", status=404, reason=viewer.t(key))
