"""API keys in the console: write keys for the shop's and the site's tracking calls, admin
keys for the admin API, each belonging to a user and limited, if chosen, to scopes of the
admin API; shown once when made, revoked here. Each change is in the audit log, written in
the key's own transaction."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from sqlalchemy import Connection

from parcours import accounts
from parcours.console.access import ConsoleParts, Form, changing, go, signed_in
from parcours.console.rendering import Viewer, page
from parcours.http import Injected, whole_number
from parcours.runtime.keys import (
    SCOPES,
    KeyKind,
    KeyNameTaken,
    create_key,
    list_keys,
    revoke_key,
)


def _keys_page(
    viewer: Viewer,
    parts: ConsoleParts,
    *,
    status: int = 200,
    error: str = "",
    secret: str = "",
) -> Response[bytes]:
    with parts.db.read() as conn:
        users = {user.id: user for user in accounts.all_users(conn)}
    keys = list(reversed(list_keys(parts.db)))
    return page(
        viewer,
        "keys.html",
        status=status,
        keys=keys,
        users=users,
        scopes=SCOPES,
        error=error,
        secret=secret,
    )


@get("/console/keys", sync_to_thread=True)
def keys_page(request: Request[Any, Any, Any], console: Injected[ConsoleParts]) -> Response[bytes]:
    return _keys_page(signed_in(request, console), console)


@post("/console/keys", status_code=200, sync_to_thread=True)
def new_key(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    viewer = changing(request, console, "keys.manage", data)
    # The ticked scopes (a form sends each as `scope.<name>`): none ticked, none limit.
    chosen = [scope for scope in SCOPES if data.get(f"scope.{scope}") == "on"]
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()
    kind: KeyKind = "admin" if data.get("kind") == "admin" else "write"
    owner_id = whole_number(data.get("user", "")) or viewer.session.user.id
    with console.db.read() as conn:
        owner = accounts.user_by_id(conn, owner_id)
    if data.get("kind") not in ("write", "admin") or owner is None or owner.disabled_at:
        return _keys_page(viewer, console, status=400, error=viewer.t("console.keys.invalid"))
    # An admin key is one person's: its name is its user's address.
    name = owner.email if kind == "admin" else " ".join(data.get("name", "").split())[:200]
    if not name:
        return _keys_page(viewer, console, status=400, error=viewer.t("console.keys.name"))
    scopes = chosen if kind == "admin" else []

    def audited(conn: Connection, key_id: int) -> None:
        accounts.record(
            conn,
            actor,
            "key.created",
            f"key:{key_id}",
            now,
            after={"kind": kind, "name": name, "user": owner.email, "scopes": scopes or None},
        )

    try:
        secret = create_key(
            console.db, kind, name, user_id=owner.id, scopes=scopes or None, also=audited
        )
    except KeyNameTaken:
        return _keys_page(viewer, console, status=409, error=viewer.t("console.keys.taken"))
    return _keys_page(viewer, console, status=201, secret=secret)


@post("/console/keys/{key_id:int}/revoke", status_code=200, sync_to_thread=True)
def revoke(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    key_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, "keys.manage", data)
    assert viewer.session is not None
    actor, now = viewer.session.user.actor, console.clock.now_ms()
    before = next((key for key in list_keys(console.db) if key.id == key_id), None)

    def audited(conn: Connection, revoked: int) -> None:
        accounts.record(
            conn,
            actor,
            "key.revoked",
            f"key:{revoked}",
            now,
            before=None
            if before is None
            else {"kind": before.kind, "name": before.name, "scopes": before.scopes},
        )

    if not revoke_key(console.db, key_id, also=audited):
        return _keys_page(viewer, console, status=404, error=viewer.t("console.keys.unknown"))
    return go("/console/keys")


def keys_routes() -> list[HTTPRouteHandler]:
    return [keys_page, new_key, revoke]
