"""The one protocol every provider speaks: send a rendered message under an idempotency key;
fail transiently (try again later) or permanently (this address will not work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class DeliveryFailure(Exception):
    """The provider did not take the message. `reason` is safe to show and to log.
    `soft_bounce`: the receiving mail server refused it for a reason that may pass (a full
    mailbox, a policy block, a temporary failure): counted against the address when the
    message finally fails (channels/email_bounces.py)."""

    permanent = False

    def __init__(self, reason: str, *, code: str | None = None, soft_bounce: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.soft_bounce = soft_bounce


class TransientFailure(DeliveryFailure):
    """Try again later with the same key: a timeout, a 4xx SMTP reply, an HTTP 429 or 5xx."""


class PermanentFailure(DeliveryFailure):
    """Do not try again: a 5xx SMTP reply, an invalid number, an unknown address. The
    fallback chain moves on; `suppress` says the address itself must not be used again."""

    permanent = True

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        suppress: bool = False,
        soft_bounce: bool = False,
    ) -> None:
        super().__init__(reason, code=code, soft_bounce=soft_bounce)
        self.suppress = suppress


@dataclass(frozen=True)
class OutgoingMessage:
    key: str  # the idempotency key: the same for every attempt to send this message
    outbox_id: int
    customer_id: int
    channel: str
    purpose: str
    address: str  # an email address, an E.164 number, a device token
    content: dict[str, Any]  # the rendered fields (docs/channels.md, "Templates")
    locale: str
    links: dict[str, str] = field(default_factory=dict)  # unsubscribe, open pixel, ...
    target: dict[str, Any] = field(default_factory=dict)  # e.g. a push subscription's keys


@dataclass(frozen=True)
class Feedback:
    """Something a provider reports later about a message it took: its status, when."""

    after_ms: int
    status: str  # delivered | opened | read | clicked | failed
    permanent: bool = False
    reason: str | None = None


class Provider(Protocol):
    name: str
    channel: str
    connections: int  # how many messages it may be handed at once, from as many threads

    def send(self, message: OutgoingMessage) -> str:
        """Hand the message over; return the provider's id for it. Raise DeliveryFailure."""
        ...

    def close(self) -> None: ...


class ConfigError(ValueError):
    """A provider's configuration is wrong; the message names the setting."""


def setting(config: dict[str, Any], where: str, name: str, kind: type, default: Any = None) -> Any:
    """One value of a provider's configuration, checked; `<name>_env` reads it from the
    environment instead (for secrets, which are never written in a file or a log)."""
    import os

    env_name = config.get(f"{name}_env")
    if env_name is not None:
        if not isinstance(env_name, str) or env_name not in os.environ:
            raise ConfigError(f"{where}.{name}_env: the environment variable {env_name} is not set")
        value: Any = os.environ[env_name]
        if kind is int:
            value = int(value)
        return value
    value = config.get(name, default)
    if value is None:
        raise ConfigError(f"{where}.{name} is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{name} must be {kind.__name__}, got {value!r}")
    return value
