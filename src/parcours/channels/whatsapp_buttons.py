"""Buttons on a WhatsApp message (docs/channels.md, "WhatsApp buttons"): up to three reply
buttons, each an `id` that comes back in Meta's webhook when it is tapped and a `title`
of at most 20 characters; or one URL button, a `title` and an https `url` (with, for an
approved template whose URL button ends in a variable, the `suffix` that fills it).

Checked twice: when the template is saved (what its text alone says: the count, the
ids, a title written out, the scheme of the address) and once rendered for a customer
(a title or an address computed by Jinja). Each check returns what is wrong, or None."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from parcours.runtime.documents import JsonObject

MAX_BUTTONS = 3  # reply buttons WhatsApp shows on one message
MAX_TITLE = 20  # characters of a button's title (Meta's limit)
MAX_INTERACTIVE_TEXT = 1024  # characters of the text of a message with buttons (Meta's)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_REPLY_KEYS = frozenset({"id", "title"})
_URL_KEYS = frozenset({"title", "url", "suffix"})
_SHAPE = "{id, title} for a reply button or {title, url} for a URL button"


def _has_jinja(text: str) -> bool:
    return any(mark in text for mark in ("{{", "{%", "{#"))


def source_problem(buttons: Any) -> str | None:
    """What is wrong with the `buttons` of a template as written, or None."""
    if not isinstance(buttons, list) or not buttons:
        return f"expected a list of buttons, each {_SHAPE}"
    if len(buttons) > MAX_BUTTONS:
        return f"{len(buttons)} buttons: WhatsApp shows at most {MAX_BUTTONS} on a message"
    seen: set[str] = set()
    kinds: set[str] = set()
    for n, button in enumerate(buttons):
        where = f"[{n}]"
        if not isinstance(button, dict):
            return f"{where}: expected {_SHAPE}"
        kind = "url" if "url" in button else "reply"
        kinds.add(kind)
        allowed = _URL_KEYS if kind == "url" else _REPLY_KEYS
        unknown = sorted(set(button) - allowed)
        if unknown:
            return (
                f"{where}: unknown field {unknown[0]} for a {kind} button "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        for name, value in button.items():
            if not isinstance(value, str):
                return f"{where}.{name}: expected text"
        title = button.get("title")
        if not title or not title.strip():
            return f"{where}.title: a button needs a title"
        if not _has_jinja(title) and len(title) > MAX_TITLE:
            return (
                f"{where}.title: {title!r} has {len(title)} characters; "
                f"a WhatsApp button's title has at most {MAX_TITLE}"
            )
        if kind == "reply":
            ident = button.get("id", "")
            if not _ID.fullmatch(ident):
                return (
                    f"{where}.id: {ident!r} must be 1 to 64 letters, digits, '_', '-', '.' "
                    "or ':' (it comes back in the webhook when the button is tapped)"
                )
            if ident in seen:
                return f"{where}.id: {ident!r} is used by another button"
            seen.add(ident)
        elif not button["url"].lower().startswith("https://"):
            return (
                f"{where}.url: {button['url'][:60]!r} must start with https:// "
                "(written out, not computed)"
            )
    if kinds == {"url", "reply"} or (kinds == {"url"} and len(buttons) > 1):
        return (
            "either up to 3 reply buttons or one URL button: WhatsApp does not put both, "
            "nor two URL buttons, on a message"
        )
    return None


def rendered_problem(buttons: list[dict[str, str]], text: str | None) -> str | None:
    """What is wrong with the buttons once rendered for a customer, or None."""
    for n, button in enumerate(buttons):
        title = button.get("title", "").strip()
        if not title:
            return f"[{n}].title is empty once rendered"
        if len(title) > MAX_TITLE:
            return (
                f"[{n}].title: {title!r} has {len(title)} characters once rendered; "
                f"a WhatsApp button's title has at most {MAX_TITLE}"
            )
        if "url" in button:
            parts = urlsplit(button["url"].strip())
            if parts.scheme != "https" or not parts.netloc:
                return f"[{n}].url: {button['url'][:60]!r} is not an https address once rendered"
    if text is not None and len(text) > MAX_INTERACTIVE_TEXT:
        return (
            f"the text has {len(text)} characters; with buttons WhatsApp takes at most "
            f"{MAX_INTERACTIVE_TEXT}"
        )
    return None


def interactive(text: str, buttons: list[dict[str, str]]) -> JsonObject:
    """The `interactive` object of a message inside the 24-hour window: reply buttons
    (`type: button`) or one URL button (`type: cta_url`), as Meta documents them."""
    if "url" in buttons[0]:
        return {
            "type": "cta_url",
            "body": {"text": text},
            "action": {
                "name": "cta_url",
                "parameters": {
                    "display_text": buttons[0]["title"].strip(),
                    "url": buttons[0]["url"].strip(),
                },
            },
        }
    return {
        "type": "button",
        "body": {"text": text},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": b["id"], "title": b["title"].strip()}}
                for b in buttons
            ]
        },
    }


def template_components(buttons: list[dict[str, str]]) -> list[JsonObject]:
    """The button components of an approved template, in the order of its buttons: a
    quick reply's payload is the button's id (Meta sends it back when it is tapped); a
    URL button's parameter is its `suffix` (a URL button without one is static: Meta
    wants nothing for it)."""
    components: list[dict[str, Any]] = []
    for index, button in enumerate(buttons):
        if "url" in button:
            if not button.get("suffix"):
                continue
            sub_type, parameter = "url", {"type": "text", "text": button["suffix"]}
        else:
            sub_type, parameter = "quick_reply", {"type": "payload", "payload": button["id"]}
        components.append(
            {
                "type": "button",
                "sub_type": sub_type,
                "index": str(index),
                "parameters": [parameter],
            }
        )
    return components


__all__ = [
    "MAX_BUTTONS",
    "MAX_TITLE",
    "interactive",
    "rendered_problem",
    "source_problem",
    "template_components",
]
