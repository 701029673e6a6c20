"""The sandbox provider: takes every message, sends nothing out, and plays back delivery,
open, read, click and failure feedback at set rates and delays, the same for the same seed.

It is the default for every channel on the embedded run: the outbox (GET /api/outbox)
shows each message as the customer would see it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from parcours.channels.base import ConfigError, Feedback, OutgoingMessage, setting

# Channels whose messages are "read" (WhatsApp, chat, SMS has no read receipts) or "opened".
_READ = {"whatsapp", "chat"}
_OPEN = {"email", "push", "wallet"}


@dataclass
class SandboxProvider:
    channel: str
    seed: str = "parcours"
    fail_rate: float = 0.02
    delivered_rate: float = 0.98
    open_rate: float = 0.45
    click_rate: float = 0.25  # of those who opened or read
    delivered_after_ms: int = 2_000
    opened_after_ms: int = 20 * 60_000
    clicked_after_ms: int = 2 * 60_000
    name: str = "sandbox"
    connections: int = 1

    @classmethod
    def from_config(cls, channel: str, config: dict[str, Any]) -> SandboxProvider:
        where = "channels.sandbox"
        provider = cls(
            channel,
            seed=str(config.get("seed", "parcours")),
            fail_rate=setting(config, where, "fail_rate", float, 0.02),
            delivered_rate=setting(config, where, "delivered_rate", float, 0.98),
            open_rate=setting(config, where, "open_rate", float, 0.45),
            click_rate=setting(config, where, "click_rate", float, 0.25),
            delivered_after_ms=setting(config, where, "delivered_after_ms", int, 2_000),
            opened_after_ms=setting(config, where, "opened_after_ms", int, 20 * 60_000),
            clicked_after_ms=setting(config, where, "clicked_after_ms", int, 2 * 60_000),
        )
        for name in ("fail_rate", "delivered_rate", "open_rate", "click_rate"):
            if not 0.0 <= getattr(provider, name) <= 1.0:
                raise ConfigError(f"{where}.{name} must be between 0 and 1")
        return provider

    def send(self, message: OutgoingMessage) -> str:
        digest = hashlib.sha256(f"{self.seed}:{message.key}".encode()).hexdigest()
        return f"sbx_{digest[:24]}"

    def feedback(self, message: OutgoingMessage) -> list[Feedback]:
        """What happens to this message, decided by the seed and its key alone."""
        draw = random.Random(f"{self.seed}:{message.key}")
        if draw.random() < self.fail_rate:
            reason = {
                "email": "550 5.1.1 mailbox unavailable (sandbox)",
                "sms": "30003 unreachable destination handset (sandbox)",
                "whatsapp": "131026 message undeliverable (sandbox)",
            }.get(self.channel, "the device is no longer registered (sandbox)")
            return [Feedback(self.delivered_after_ms, "failed", permanent=True, reason=reason)]
        if draw.random() >= self.delivered_rate:
            return []  # no news: neither delivered nor failed
        events = [Feedback(self.delivered_after_ms, "delivered")]
        engaged = self.channel in _READ | _OPEN and draw.random() < self.open_rate
        if engaged:
            status = "read" if self.channel in _READ else "opened"
            at = self.delivered_after_ms + int(self.opened_after_ms * (0.2 + draw.random()))
            events.append(Feedback(at, status))
            if draw.random() < self.click_rate:
                events.append(Feedback(at + self.clicked_after_ms, "clicked"))
        return events

    def close(self) -> None:
        return None
