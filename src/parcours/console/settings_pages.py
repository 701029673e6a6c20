"""The Settings page: the brand (name, logo, colours, sector, languages, time zone), the
channels' providers with a check of each connection, the quiet hours and frequency caps,
and the words that ask for consent. Everyone signed in sees it; only who may change the
settings (the owner) changes them, each change audited in its own transaction. The
brand's look (its colours as a stylesheet, its logo) is served from here to the console
and to the public pages."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any
from zoneinfo import available_timezones

from babel import Locale
from babel.dates import get_day_names
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, FromPath
from sqlalchemy import Connection

from parcours import accounts, brand, channels, commerce
from parcours.brand import BrandError, BrandSettings, ConsentWording, Logo
from parcours.channels import stored
from parcours.console import provider_form, rules_form
from parcours.console.access import (
    ConsoleParts,
    Form,
    brand_defaults,
    brand_of,
    changing,
    go,
    signed_in,
)
from parcours.console.rendering import Viewer, page, render
from parcours.console.rules_form import RulesForm
from parcours.customers import PURPOSES
from parcours.http import Injected
from parcours.messaging import SECTOR_PRESETS, Policies, policies
from parcours.runtime.i18n import SHIPPED, text
from parcours.runtime.settings import MAX_REVIEW_AFTER_DAYS

PATH = "/console/settings"
TARGET = "brand"
LONG_CACHE = "public, max-age=31536000, immutable"
ZONES = tuple(sorted(zone for zone in available_timezones() if "/" in zone or zone == "UTC"))
Multipart = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)]


def _policies(parts: ConsoleParts) -> Policies:
    """The send-time rules in force: the Settings page's, else the policies files'."""
    assert parts.delivery is not None
    with parts.db.read() as conn:
        return policies.in_force(conn, parts.delivery.rules)


def _wording(parts: ConsoleParts, look: BrandSettings) -> ConsentWording:
    """The consent words in force; before any save, the shipped ones (their version 1)."""
    with parts.db.read() as conn:
        saved = brand.consent_wording(conn)
    if saved is not None:
        return saved
    texts = {x: text(x, "preferences.wording", brand=look.name) for x in SHIPPED}
    return ConsentWording(brand.SHIPPED_VERSION, texts)


def _settings_page(
    viewer: Viewer,
    parts: ConsoleParts,
    *,
    status: int = 200,
    error: str = "",
    section: str = "",
    rules_text: str | None = None,
    checks: dict[tuple[str, str], channels.ConnectionCheck] | None = None,
    saved: str = "",
    form: RulesForm | None = None,
    attempt: provider_form.Attempt | None = None,
) -> Response[bytes]:
    look = brand_of(parts)
    rules = _policies(parts)
    assert parts.delivery is not None
    parts.delivery.providers.refresh(force=True)
    return page(
        viewer,
        "settings.html",
        status=status,
        **_rules_choices(viewer, rules_form.from_policies(rules) if form is None else form),
        look=look,
        error=error,
        section=section,
        saved=saved,
        sectors=tuple(SECTOR_PRESETS),
        sector_review_days=commerce.reviews.sector_review_days(look.sector),
        most_review_days=MAX_REVIEW_AFTER_DAYS,
        languages=SHIPPED,
        zones=ZONES,
        providers=channels.configured(parts.delivery.providers),
        set_up=provider_form.channels_view(viewer, parts.delivery.providers, attempt),
        checks=checks or {},
        rules=rules,
        rules_text=rules_text
        if rules_text is not None
        else look.send_rules or policies.as_text(rules),
        text_open=rules_text is not None,
        days=get_day_names("abbreviated", locale=viewer.locale),
        wording=_wording(parts, look),
        largest_logo=brand.LARGEST_LOGO // 1024,
        min_contrast=brand.MIN_CONTRAST,
    )


def _rules_choices(viewer: Viewer, form: RulesForm) -> dict[str, Any]:
    """The rules' form and what its fields offer, named in the viewer's language."""
    names = Locale.parse(viewer.locale).territories
    countries = sorted(
        ((code, str(names.get(code, code))) for code in policies.COUNTRIES),
        key=lambda country: _sort_key(country[1]),
    )
    day_names = get_day_names("wide", locale=viewer.locale)
    return {
        "form": form,
        "countries": countries,
        "country_names": dict(countries),
        "channels": policies.CHANNELS,
        "purposes": PURPOSES,
        "periods": rules_form.PERIODS,
        "days_named": [(day, day_names[i]) for i, day in enumerate(policies.WEEKDAYS)],
    }


def _sort_key(name: str) -> str:
    """A name as a list sorts it for a reader: Égypte among the E."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()


@get(PATH, sync_to_thread=True)
def settings_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    saved = request.query_params.get("saved", "")
    return _settings_page(signed_in(request, console), console, saved=saved[:20])


def _refused(viewer: Viewer, parts: ConsoleParts, exc: BrandError, section: str) -> Response[bytes]:
    values = dict(exc.values)
    if "field" in values:
        values["field"] = viewer.t(f"console.settings.{values['field']}")
    return _settings_page(
        viewer, parts, status=400, error=viewer.t(exc.key, **values), section=section
    )


def _saved(
    viewer: Viewer, parts: ConsoleParts, section: str, save: Callable[[], object]
) -> Response[Any]:
    """Run one of the brand's saves: back to its section, or its section with the reason
    it was refused."""
    try:
        save()
    except BrandError as exc:
        return _refused(viewer, parts, exc, section)
    return go(f"{PATH}?saved={section}#{section}")


def _save(
    viewer: Viewer,
    parts: ConsoleParts,
    changes: brand.Changes,
    action: str,
    *,
    reset: tuple[str, ...] = (),
    section: str,
) -> Response[Any]:
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, parts.clock.now_ms()

    def audited(conn: Connection, before: BrandSettings, after: BrandSettings) -> None:
        accounts.record(
            conn, actor, action, TARGET, now, before=before.audited(), after=after.audited()
        )

    return _saved(
        viewer,
        parts,
        section,
        lambda: brand.save(
            parts.db,
            brand_defaults(parts),
            changes,
            now,
            by=actor.email,
            reset=reset,
            sectors=SECTOR_PRESETS,
            also=audited,
        ),
    )


@post(f"{PATH}/brand", status_code=200, sync_to_thread=True)
def save_brand(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = changing(request, console, "settings.change", data)
    languages = tuple(x for x in SHIPPED if data.get(f"language-{x}") == "on")
    days = _whole(data["review_after_days"]) if "review_after_days" in data else None
    changes = brand.Changes(
        name=data.get("name", ""),
        primary=data.get("primary", "").strip(),
        accent=data.get("accent", "").strip(),
        sector=data.get("sector", ""),
        languages=languages,
        timezone=data.get("timezone", "").strip(),
        review_after_days=days,
    )
    return _save(viewer, console, changes, "settings.brand_changed", section="brand")


def _whole(text: str) -> int:
    """A whole number typed in a form (blank: 0); -1 for anything else, which the brand's
    check refuses with its range."""
    text = text.strip()
    if not text:
        return 0
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else -1


@post(f"{PATH}/logo", status_code=200, sync_to_thread=True)
def save_logo(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Multipart
) -> Response[Any]:
    fields = {k: v for k, v in data.items() if isinstance(v, str)}
    viewer = changing(request, console, "settings.change", fields)
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()
    upload = data.get("logo")
    content = b""
    if isinstance(upload, UploadFile):
        content = upload.file.read(brand.LARGEST_LOGO + 1)

    def audited(conn: Connection, before: Logo | None, after: Logo) -> None:
        accounts.record(
            conn,
            actor,
            "settings.logo_changed",
            TARGET,
            now,
            before=None if before is None else {"logo": before.digest},
            after={"logo": after.digest, "media_type": after.media_type, "bytes": len(content)},
        )

    return _saved(
        viewer, console, "brand", lambda: brand.save_logo(console.db, content, now, also=audited)
    )


@post(f"{PATH}/logo/remove", status_code=200, sync_to_thread=True)
def remove_logo(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = changing(request, console, "settings.change", data)
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()

    def audited(conn: Connection, before: Logo | None) -> None:
        if before is not None:
            accounts.record(
                conn, actor, "settings.logo_removed", TARGET, now, before={"logo": before.digest}
            )

    brand.remove_logo(console.db, also=audited)
    return go(f"{PATH}?saved=brand#brand")


@post(f"{PATH}/rules", status_code=200, sync_to_thread=True)
def save_rules(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = changing(request, console, "settings.change", data)
    if "reset" in data:  # back to the policies files' rules
        return _save(
            viewer,
            console,
            brand.Changes(),
            "settings.rules_reset",
            reset=("send_rules",),
            section="rules",
        )
    written = data.get("rules", "").replace("\r\n", "\n")
    try:
        policies.rules_from_text(written)
    except policies.PolicyError as exc:
        return _settings_page(
            viewer,
            console,
            status=400,
            error=viewer.t("console.settings.rules_invalid", problem=str(exc)),
            section="rules",
            rules_text=written,
        )
    return _save(
        viewer,
        console,
        brand.Changes(send_rules=written),
        "settings.rules_changed",
        section="rules",
    )


@post(f"{PATH}/rules/form", status_code=200, sync_to_thread=True)
def save_rules_form(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """The rules' form: a rule added or removed draws it again (nothing saved); saving
    checks the document it makes as the text's is checked and saves it as text, so the
    two edit the same rules."""
    viewer = changing(request, console, "settings.change", data)
    form = rules_form.from_form(data)
    if not form.draft:
        try:
            rules = policies.rules_from_document(rules_form.document(form))
        except policies.PolicyError as exc:
            form.place(exc)
        else:
            return _save(
                viewer,
                console,
                brand.Changes(send_rules=policies.as_text(rules)),
                "settings.rules_changed",
                section="rules",
            )
    status = 400 if form.has_errors else 200
    if request.headers.get("hx-request"):
        html = render(viewer, "_settings_rules.html", **_rules_choices(viewer, form))
        return Response(html.encode(), status_code=status, media_type="text/html; charset=utf-8")
    return _settings_page(viewer, console, status=status, section="rules", form=form)


@post(f"{PATH}/wording", status_code=200, sync_to_thread=True)
def save_wording(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = changing(request, console, "settings.change", data)
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()

    def audited(conn: Connection, before: ConsentWording | None, after: ConsentWording) -> None:
        accounts.record(
            conn,
            actor,
            "settings.wording_changed",
            TARGET,
            now,
            before=None if before is None else {"version": before.version, **before.texts},
            after={"version": after.version, **after.texts},
        )

    texts = {x: data.get(f"wording-{x}", "") for x in SHIPPED}
    return _saved(
        viewer,
        console,
        "wording",
        lambda: brand.save_consent_wording(console.db, texts, now, by=actor.email, also=audited),
    )


@post(f"{PATH}/check", status_code=200, sync_to_thread=True)
def check_provider(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    """Check one provider's connection: the answer alone for HTMX, else the whole page."""
    viewer = changing(request, console, "settings.change", data)
    assert console.delivery is not None
    channel, name = data.get("channel", ""), data.get("provider", "")
    result = channels.check_connection(console.delivery.providers, channel, name)
    if result is None:
        return _settings_page(
            viewer, console, status=404, error=viewer.t("console.settings.no_provider")
        )
    if request.headers.get("hx-request"):
        html = render(viewer, "_settings_check.html", check=result)
        return Response(html.encode(), media_type="text/html; charset=utf-8")
    return _settings_page(viewer, console, checks={(channel, name): result}, section="providers")


def _attempt(
    request: Request[Any, Any, Any],
    console: ConsoleParts,
    data: dict[str, str],
    *,
    saving: bool,
) -> tuple[Viewer, stored.LiveProviders, provider_form.Attempt, stored.Checked | None]:
    """A provider's form posted by an owner, checked (its problem kept in the attempt);
    to be saved, a slot that adds to its channel's provider needs one (tested, not)."""
    viewer = changing(request, console, "settings.change", data)
    assert console.delivery is not None
    live = console.delivery.providers
    channel, name = data.get("channel", ""), data.get("provider", "")
    if not isinstance(live, stored.LiveProviders) or (channel, name) not in stored.FORMS:
        raise NotFoundException()
    values = provider_form.posted_values(data, channel, name)
    if stored.by_configuration(live.config, channel):
        error = stored.ProviderError("console.providers.by_configuration")
        return viewer, live, provider_form.Attempt(channel, name, values, error), None
    with console.db.read() as conn:
        saved = stored.stored(conn, live.sealer)
    kept = saved.get(channel)
    try:
        checked = stored.check(
            channel, name, data, kept, live.config.get(channel, {}), live.public_url
        )
    except stored.ProviderError as exc:
        return viewer, live, provider_form.Attempt(channel, name, values, exc), None
    own = stored.channel_of(channel)
    if saving and channel in stored.NEEDS_OWN and not stored.has_own(live.config, saved, own):
        error = stored.ProviderError("console.providers.needs_own", slot=own)
        return viewer, live, provider_form.Attempt(channel, name, values, error), None
    return viewer, live, provider_form.Attempt(channel, name, values), checked


@post(f"{PATH}/providers/test", status_code=200, sync_to_thread=True)
def try_provider(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    """Test a provider's connection with the form's values (the stored secret where one
    is left blank), saving nothing: the answer alone for HTMX, else the whole page."""
    viewer, live, attempt, checked = _attempt(request, console, data, saving=False)
    if checked is not None:
        # push.fcm: the push channel's FCM alone; wallet.google: Google Wallet's links
        one = stored.alone(attempt.channel, checked.section, live.public_url)
        name = stored.PART_NAMES.get(attempt.provider, attempt.provider)
        try:
            result = channels.check_part(stored.channel_of(attempt.channel), one, name)
        finally:
            one.close()
        attempt = replace(attempt, check=result)
    if request.headers.get("hx-request"):  # answered in place, a refusal too (HTMX swaps a 200)
        html = render(
            viewer,
            "_settings_check.html",
            check=attempt.check,
            problem=provider_form.problem_text(viewer, attempt.error) if attempt.error else "",
        )
        return Response(html.encode(), media_type="text/html; charset=utf-8")
    status = 400 if attempt.error is not None else 200
    return _settings_page(viewer, console, status=status, section="providers", attempt=attempt)


@post(f"{PATH}/providers/save", status_code=200, sync_to_thread=True)
def save_provider(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """Save a provider's settings, checked first; audited in the same transaction, the
    secrets said "changed" or "kept", never written."""
    viewer, live, attempt, checked = _attempt(request, console, data, saving=True)
    if checked is None:
        return _settings_page(viewer, console, status=400, section="providers", attempt=attempt)
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()

    def audited(conn: Connection, before: Any, after: Any) -> None:
        accounts.record(
            conn,
            actor,
            "settings.provider_changed",
            f"channels.{attempt.channel}",
            now,
            before=before,
            after=after,
        )

    stored.save(console.db, live.sealer, checked, now, by=actor.email, also=audited)
    live.refresh(force=True)
    return go(f"{PATH}?saved=providers#providers")


@post(f"{PATH}/providers/remove", status_code=200, sync_to_thread=True)
def remove_provider(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """Forget a channel's provider set up here: back to the configuration's (the sandbox)."""
    viewer = changing(request, console, "settings.change", data)
    assert console.delivery is not None and viewer.session is not None
    channel = data.get("channel", "")
    if channel not in stored.CONSOLE_CHANNELS:
        raise NotFoundException()
    actor, now = viewer.session.user.actor, console.clock.now_ms()

    def audited(conn: Connection, before: Any, after: Any) -> None:
        accounts.record(
            conn, actor, "settings.provider_removed", f"channels.{channel}", now, before=before
        )

    stored.remove(console.db, channel, also=audited)
    console.delivery.providers.refresh(force=True)
    return go(f"{PATH}?saved=providers#providers")


@get("/console/brand/{version:int}/look.css", sync_to_thread=True)
def look_css(console: Injected[ConsoleParts], version: FromPath[int]) -> Response[bytes]:
    """The brand's colours as custom properties, for the console and the public pages
    (cached for good under its version's address; another version's answer is not)."""
    look = brand_of(console)
    css = (
        f":root {{ --accent: {look.primary}; --brand-primary: {look.primary}; "
        f"--brand-accent: {look.accent}; --brand-accent-ink: #ffffff; }}\n"
    )
    cache = LONG_CACHE if version == look.version else "no-cache"
    return Response(
        css.encode(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )


@get("/console/brand/logo/{digest:str}", sync_to_thread=True)
def logo(console: Injected[ConsoleParts], digest: FromPath[str]) -> Response[bytes]:
    """The brand's logo by its digest: a new logo has a new address, so each is cached
    for good."""
    with console.db.read() as conn:
        found = brand.logo_file(conn, digest[:64])
    if found is None:
        return Response(b"", status_code=404, headers={"Cache-Control": "no-store"})
    return Response(
        found.content,
        media_type=found.media_type,
        headers={
            "Cache-Control": LONG_CACHE,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        },
    )


def settings_routes() -> list[HTTPRouteHandler]:
    return [
        settings_page,
        save_brand,
        save_logo,
        remove_logo,
        save_rules,
        save_rules_form,
        save_wording,
        check_provider,
        try_provider,
        save_provider,
        remove_provider,
        look_css,
        logo,
    ]
