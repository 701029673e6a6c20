"""What the accounts package refuses, each naming the field at fault and the text to show,
by its key in the catalogue (`locales/<lang>/console.json`), so that the console says it
in the viewer's language."""

from __future__ import annotations


class AccountError(ValueError):
    """A refused account action: `key` names the text, `field` the input at fault."""

    def __init__(self, key: str, field: str = "", **values: str) -> None:
        super().__init__(key)
        self.key = key
        self.field = field
        self.values = values


class NotAllowed(AccountError):
    """The user's role does not grant the permission the action needs."""


class SignInRefused(AccountError):
    """Wrong email or password, or too many attempts: the same answer either way."""
