"""The consent ledger's vocabulary, and reading consent changes out of events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHANNELS = ("email", "sms", "whatsapp", "push", "wallet")
PURPOSES = ("transactional", "marketing")
STATUSES = ("granted", "withdrawn")
CONSENT_EVENT = "Consent Updated"


class ConsentError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class ConsentChange:
    channel: str
    purpose: str
    status: str
    source: str | None
    wording: str | None
    wording_version: str | None


def from_trait(value: Any, where: str = "traits.consent") -> list[ConsentChange]:
    """`traits.consent` of an identify call.

    Shape: {"email": {"marketing": true}, "sms": {"marketing": "withdrawn"},
            "source": "signup form", "wording": "...", "wording_version": "v3"}
    """
    if not isinstance(value, dict):
        raise ConsentError(where, "must be an object of channel -> {purpose: status}")
    source = _optional_text(value, "source", where)
    wording = _optional_text(value, "wording", where)
    version = _optional_text(value, "wording_version", where)
    changes: list[ConsentChange] = []
    for channel, purposes in value.items():
        if channel in ("source", "wording", "wording_version"):
            continue
        _check_channel(channel, f"{where}.{channel}")
        if not isinstance(purposes, dict):
            raise ConsentError(f"{where}.{channel}", "must be an object of purpose -> status")
        for purpose, status in purposes.items():
            _check_purpose(purpose, f"{where}.{channel}.{purpose}")
            changes.append(
                ConsentChange(
                    channel,
                    purpose,
                    _status(status, f"{where}.{channel}.{purpose}"),
                    source,
                    wording,
                    version,
                )
            )
    return changes


def from_properties(properties: dict[str, Any], where: str = "properties") -> ConsentChange:
    """The properties of a `Consent Updated` event."""
    channel = properties.get("channel")
    purpose = properties.get("purpose")
    _check_channel(channel, f"{where}.channel")
    _check_purpose(purpose, f"{where}.purpose")
    assert isinstance(channel, str) and isinstance(purpose, str)
    return ConsentChange(
        channel,
        purpose,
        _status(properties.get("status"), f"{where}.status"),
        _optional_text(properties, "source", where),
        _optional_text(properties, "wording", where),
        _optional_text(properties, "wording_version", where),
    )


def _check_channel(channel: Any, where: str) -> None:
    if channel not in CHANNELS:
        raise ConsentError(where, f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")


def _check_purpose(purpose: Any, where: str) -> None:
    if purpose not in PURPOSES:
        raise ConsentError(where, f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")


def _status(value: Any, where: str) -> str:
    if value is True or value == "granted":
        return "granted"
    if value is False or value == "withdrawn":
        return "withdrawn"
    raise ConsentError(where, f"status must be granted, withdrawn, true or false, got {value!r}")


def _optional_text(document: dict[str, Any], key: str, where: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConsentError(f"{where}.{key}", "must be text")
    return value
