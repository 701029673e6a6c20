"""Who may do what in the console: one table of permissions per role, checked on the
server before every change (docs/console.md, "People and roles")."""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["owner", "marketer", "reviewer", "support", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)

Permission = Literal[
    "users.manage",
    "keys.manage",
    "settings.change",
    "journeys.edit",
    "journeys.approve",
    "journeys.operate",
    "segments.edit",
    "templates.edit",
    "customers.change",
    "customers.export",
    "customers.erase",
    "reviews.moderate",
    "audit.read",
]
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)

_GRANTS: dict[Role, frozenset[Permission]] = {
    "owner": frozenset(PERMISSIONS),
    "marketer": frozenset(
        {
            "journeys.edit",
            "journeys.operate",
            "segments.edit",
            "templates.edit",
            "reviews.moderate",
            "audit.read",
        }
    ),
    "reviewer": frozenset({"journeys.approve", "journeys.operate", "audit.read"}),
    "support": frozenset({"customers.change", "customers.export", "customers.erase"}),
    "viewer": frozenset({"audit.read"}),
}


def may(role: str, permission: Permission) -> bool:
    """Whether a user of `role` may do what `permission` names (an unknown role: nothing)."""
    return permission in _GRANTS.get(role, frozenset())  # type: ignore[call-overload]


def is_role(value: str) -> bool:
    return value in ROLES
