"""Signing in and out, the second factor, and joining from the owner's setup link or an
invitation."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery
from litestar.response import Redirect

from parcours import accounts
from parcours.accounts import AccountError, SignInRefused
from parcours.console.access import (
    ConsoleParts,
    Form,
    changing,
    check_csrf,
    cleared_cookie,
    go,
    safe_next,
    session_cookie,
    session_of,
    viewer_of,
)
from parcours.console.rendering import page
from parcours.http import Injected


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


@get("/console/login", sync_to_thread=True)
def login_form(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], next: FromQuery[str] = ""
) -> Response[bytes]:
    viewer = viewer_of(request, console, None)
    with console.db.read() as conn:
        ready = accounts.has_owner(conn)
    return page(viewer, "login.html", next=safe_next(next), ready=ready, error="", email="")


@post("/console/login", status_code=200, sync_to_thread=True)
def login(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = viewer_of(request, console, None)
    target = safe_next(data.get("next"))
    try:
        signed = accounts.sign_in(
            console.db,
            email=data.get("email", ""),
            password=data.get("password", ""),
            client=_client(request),
            now=console.people_clock.now_ms(),
        )
    except SignInRefused as exc:
        status = 429 if exc.key == "accounts.too_many_attempts" else 400
        return page(
            viewer,
            "login.html",
            status=status,
            next=target,
            ready=True,
            error=viewer.t(exc.key),
            email=data.get("email", ""),
        )
    if signed.session.pending_second_factor:
        target = f"/console/second-factor?next={target}"
    redirect = go(target)
    redirect.cookies.append(session_cookie(console, signed.token, None))
    return redirect


@get("/console/second-factor", sync_to_thread=True)
def second_factor_form(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], next: FromQuery[str] = ""
) -> Response[Any]:
    session = session_of(request, console)
    if session is None:
        return go("/console/login")
    viewer = viewer_of(request, console, session)
    return page(viewer, "second_factor.html", next=safe_next(next), error="")


@post("/console/second-factor", status_code=200, sync_to_thread=True)
def second_factor(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    data: Form,
) -> Response[Any]:
    session = session_of(request, console)
    if session is None:
        return go("/console/login")
    viewer = viewer_of(request, console, session)
    check_csrf(request, viewer, data)
    try:
        accounts.confirm_second_factor(
            console.db, session, data.get("code", ""), console.people_clock.now_ms()
        )
    except AccountError as exc:
        return page(
            viewer,
            "second_factor.html",
            status=400,
            next=safe_next(data.get("next")),
            error=viewer.t(exc.key),
        )
    return go(safe_next(data.get("next")))


@post("/console/logout", status_code=200, sync_to_thread=True)
def logout(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Redirect:
    viewer = changing(request, console, None, data)
    assert viewer.session is not None
    accounts.sign_out(console.db, viewer.session)
    redirect = go("/console/login")
    redirect.cookies.append(cleared_cookie(console))
    return redirect


@get("/console/join", sync_to_thread=True)
def join_form(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], token: FromQuery[str] = ""
) -> Response[bytes]:
    viewer = viewer_of(request, console, None)
    try:
        invitation = accounts.invitation_for(console.db, token, console.people_clock.now_ms())
    except AccountError as exc:
        return page(viewer, "link_invalid.html", status=404, reason=viewer.t(exc.key))
    return page(
        viewer,
        "join.html",
        token=token,
        invitation=invitation,
        error="",
        bad_field="",
        email=invitation.email or "",
        name="",
    )


@post("/console/join", status_code=200, sync_to_thread=True)
def join(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    viewer = viewer_of(request, console, None)
    token, now = data.get("token", ""), console.people_clock.now_ms()
    try:
        user = accounts.accept_invitation(
            console.db,
            token,
            email=data.get("email", ""),
            name=data.get("name", ""),
            password=data.get("password", ""),
            now=now,
        )
    except AccountError as exc:
        try:
            invitation = accounts.invitation_for(console.db, token, now)
        except AccountError:
            return page(viewer, "link_invalid.html", status=404, reason=viewer.t(exc.key))
        return page(
            viewer,
            "join.html",
            status=400,
            token=token,
            invitation=invitation,
            error=viewer.t(exc.key, **exc.values),
            bad_field=exc.field,
            email=invitation.email or data.get("email", ""),
            name=data.get("name", ""),
        )
    signed = accounts.sign_in(
        console.db, email=user.email, password=data["password"], client=_client(request), now=now
    )
    redirect = go("/console/")
    redirect.cookies.append(session_cookie(console, signed.token, None))
    return redirect


def sign_in_routes() -> list[HTTPRouteHandler]:
    return [login_form, login, second_factor_form, second_factor, logout, join_form, join]
