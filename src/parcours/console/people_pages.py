"""The users of the console (invite, the invitation sent by email too; change a role,
disable), each user's own account (language, second factor), and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours import accounts, messaging
from parcours.accounts import AccountError, Invitation
from parcours.console.access import ConsoleParts, Form, Refused, changing, go, signed_in
from parcours.console.rendering import Viewer, page
from parcours.http import Injected
from parcours.messaging import Handed
from parcours.runtime.i18n import SHIPPED, text

AUDIT_PAGE = 50


def _users_page(
    viewer: Viewer,
    parts: ConsoleParts,
    *,
    status: int = 200,
    error: str = "",
    new_link: str = "",
    invited: Invitation | None = None,
    emailed: Handed | None = None,
) -> Response[bytes]:
    now = parts.people_clock.now_ms()
    with parts.db.read() as conn:
        users = accounts.all_users(conn)
        invitations = accounts.pending_invitations(conn, now)
    return page(
        viewer,
        "users.html",
        status=status,
        users=users,
        invitations=invitations,
        roles=accounts.ROLES,
        error=error,
        new_link=new_link,
        invited=invited,
        emailed=emailed,
        languages=SHIPPED,
        brand_locale=parts.brand_locale,
    )


@get("/console/users", sync_to_thread=True)
def users_page(request: Request[Any, Any, Any], console: Injected[ConsoleParts]) -> Response[bytes]:
    return _users_page(signed_in(request, console), console)


@post("/console/users/invite", status_code=200, sync_to_thread=True)
def invite(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    viewer = changing(request, console, "users.manage", data)
    assert viewer.session is not None
    try:
        invitation, token = accounts.invite(
            console.db,
            viewer.session.user,
            email=data.get("email", ""),
            role=data.get("role", ""),
            now=console.people_clock.now_ms(),
        )
    except AccountError as exc:
        return _users_page(viewer, console, status=400, error=viewer.t(exc.key, **exc.values))
    link = f"{request.base_url}".rstrip("/") + f"/console/join?token={token}"
    language = data.get("language", "")
    emailed = _email_invitation(
        viewer, console, invitation, link, language if language in SHIPPED else None
    )
    return _users_page(
        viewer, console, status=201, new_link=link, invited=invitation, emailed=emailed
    )


def _email_invitation(
    viewer: Viewer, parts: ConsoleParts, invitation: Invitation, link: str, language: str | None
) -> Handed | None:
    """The invitation's link sent to the invitee through the email channel, in the
    language chosen (else the brand's); whether it went is audited and shown. The
    invitation stands either way: its link is on the page."""
    if parts.delivery is None or invitation.email is None:
        return None
    assert viewer.session is not None
    locale = language or parts.brand_locale
    if locale not in SHIPPED:
        locale = "en"
    values = {
        "brand": parts.brand,
        "inviter": viewer.session.user.name,
        "role": text(locale, f"console.role.{invitation.role}"),
        "link": link,
    }
    emailed = messaging.send_email_now(
        parts.delivery.providers,
        f"invitation:{invitation.id}",
        invitation.email,
        text(locale, "support.invitation.subject", **values),
        text(locale, "support.invitation.body", **values),
        locale,
    )
    with parts.db.write() as conn:
        accounts.record(
            conn,
            viewer.session.user.actor,
            "invitation.emailed",
            f"invitation:{invitation.id}",
            parts.clock.now_ms(),
            after={
                "email": invitation.email,
                "language": locale,
                "provider": emailed.provider,
                "sent": emailed.sent,
                "error": emailed.error,
            },
        )
    return emailed


def _users_changed(
    viewer: Viewer, parts: ConsoleParts, change: Callable[[accounts.User, int], object]
) -> Response[Any]:
    """A change to the users made by the viewer; the users' page again, with the refusal
    in the viewer's language if there is one."""
    assert viewer.session is not None
    try:
        change(viewer.session.user, parts.clock.now_ms())
    except AccountError as exc:
        return _users_page(viewer, parts, status=400, error=viewer.t(exc.key, **exc.values))
    return go("/console/users")


@post("/console/users/{user_id:int}/role", status_code=200, sync_to_thread=True)
def change_role(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    user_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, "users.manage", data)
    return _users_changed(
        viewer,
        console,
        lambda actor, now: accounts.change_role(
            console.db, actor, user_id, data.get("role", ""), now
        ),
    )


@post("/console/users/{user_id:int}/disable", status_code=200, sync_to_thread=True)
def disable(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    user_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, "users.manage", data)
    return _users_changed(
        viewer, console, lambda actor, now: accounts.disable(console.db, actor, user_id, now)
    )


@post("/console/invitations/{invitation_id:int}/revoke", status_code=200, sync_to_thread=True)
def revoke(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    invitation_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, "users.manage", data)
    return _users_changed(
        viewer,
        console,
        lambda actor, now: accounts.revoke_invitation(console.db, actor, invitation_id, now),
    )


def _account_page(
    viewer: Viewer, *, status: int = 200, error: str = "", secret: str = ""
) -> Response[bytes]:
    assert viewer.session is not None
    secret = secret or accounts.new_totp_secret()
    uri = accounts.totp_uri(secret, viewer.session.user.email, f"Parcours ({viewer.brand})")
    return page(
        viewer,
        "account.html",
        status=status,
        error=error,
        secret=secret,
        uri=uri,
        languages=SHIPPED,
    )


@get("/console/account", sync_to_thread=True)
def account_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    return _account_page(signed_in(request, console))


@post("/console/account/language", status_code=200, sync_to_thread=True)
def set_language(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, None, data)
    assert viewer.session is not None
    language = data.get("language") or None
    if language is not None and language not in SHIPPED:
        return _account_page(viewer, status=400, error=viewer.t("console.language_unknown"))
    accounts.set_locale(console.db, viewer.session.user, language)
    return go("/console/account")


@post("/console/account/second-factor", status_code=200, sync_to_thread=True)
def second_factor_on(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, None, data)
    assert viewer.session is not None
    secret = data.get("secret", "")
    try:
        accounts.enable_second_factor(
            console.db,
            viewer.session.user,
            secret,
            data.get("code", ""),
            console.people_clock.now_ms(),
        )
    except AccountError as exc:
        return _account_page(viewer, status=400, error=viewer.t(exc.key), secret=secret)
    return go("/console/account")


@post("/console/account/second-factor/off", status_code=200, sync_to_thread=True)
def second_factor_off(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, None, data)
    assert viewer.session is not None
    try:
        accounts.disable_second_factor(
            console.db, viewer.session.user, data.get("password", ""), console.people_clock.now_ms()
        )
    except AccountError as exc:
        return _account_page(viewer, status=400, error=viewer.t(exc.key))
    return go("/console/account")


@get("/console/audit", sync_to_thread=True)
def audit_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    before: FromQuery[int | None] = None,
    action: FromQuery[str] = "",
) -> Response[bytes]:
    viewer = signed_in(request, console)
    if not viewer.may("audit.read"):
        raise Refused(viewer, "accounts.not_allowed")
    with console.db.read() as conn:
        entries = accounts.entries(conn, before_id=before, limit=AUDIT_PAGE, action=action[:100])
    more = entries[-1].id if len(entries) == AUDIT_PAGE else None
    return page(viewer, "audit.html", entries=entries, more=more, action=action)


def people_routes() -> list[HTTPRouteHandler]:
    return [
        users_page,
        invite,
        change_role,
        disable,
        revoke,
        account_page,
        set_language,
        second_factor_on,
        second_factor_off,
        audit_page,
    ]
