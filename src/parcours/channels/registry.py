"""The providers a brand configured, per channel; the sandbox for every channel left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parcours.channels.apns import ApnsProvider
from parcours.channels.base import ConfigError, Provider
from parcours.channels.chat import SiteChatProvider
from parcours.channels.email import SmtpProvider
from parcours.channels.fcm import FcmProvider, PushRouter
from parcours.channels.postmark import PostmarkProvider
from parcours.channels.push import WebPushProvider
from parcours.channels.sandbox import SandboxProvider
from parcours.channels.sms import TwilioProvider
from parcours.channels.wallet import WalletIssuer
from parcours.channels.whatsapp import MetaWhatsAppProvider

CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat")
# What each channel may be configured with (`provider = "..."` in [channels.<channel>]).
KNOWN = {
    "email": ("sandbox", "smtp", "postmark"),
    "sms": ("sandbox", "twilio"),
    "whatsapp": ("sandbox", "meta"),
    "push": ("sandbox", "webpush"),
    "wallet": ("sandbox", "apple"),
    "chat": ("site", "sandbox"),
}


@dataclass
class Providers:
    by_channel: dict[str, Provider]

    @classmethod
    def from_settings(
        cls, config: dict[str, Any], public_url: str, vapid_pem: str | None = None
    ) -> Providers:
        """Build the providers from the `channels` setting; ConfigError names what is wrong."""
        unknown = sorted(set(config) - set(CHANNELS) - {"sandbox"})
        if unknown:
            raise ConfigError(
                f"channels.{unknown[0]}: unknown channel (one of {', '.join(CHANNELS)}, "
                "or sandbox for the sandbox's settings)"
            )
        sandbox = config.get("sandbox", {})
        if not isinstance(sandbox, dict):
            raise ConfigError("channels.sandbox must be a table")
        providers: dict[str, Provider] = {}
        for channel in CHANNELS:
            section = config.get(channel, {})
            if not isinstance(section, dict):
                raise ConfigError(f"channels.{channel} must be a table")
            providers[channel] = build_provider(channel, section, sandbox, public_url, vapid_pem)
        return cls(providers)

    def for_channel(self, channel: str) -> Provider:
        return self.by_channel[channel]

    def refresh(self, *, force: bool = False) -> None:
        """Read again what may have changed (the console's providers: channels/stored.py);
        the configuration file's are fixed."""
        return None

    def close(self) -> None:
        for provider in self.by_channel.values():
            provider.close()


def build_provider(
    channel: str,
    section: dict[str, Any],
    sandbox: dict[str, Any],
    public_url: str,
    vapid_pem: str | None = None,
) -> Provider:
    """The provider of one channel from its settings' table; ConfigError names what is
    wrong (the console's settings are built here too: channels/stored.py)."""
    # The site chat needs nothing outside Parcours: it is the default for chat.
    name = section.get("provider", "site" if channel == "chat" else "sandbox")
    if name not in KNOWN[channel]:
        raise ConfigError(
            f"channels.{channel}.provider: {name!r} is not available for {channel} "
            f"(available: {', '.join(KNOWN[channel])})"
        )
    provider: Provider
    if name == "smtp":
        provider = SmtpProvider.from_config(section)
    elif name == "apple":
        provider = WalletIssuer.from_config(section, public_url)
    elif name == "postmark":
        provider = PostmarkProvider.from_config(section)
    elif name == "site":
        provider = SiteChatProvider()
    elif name == "webpush":
        if vapid_pem is None:
            raise ConfigError("channels.push: Web Push needs the VAPID key")
        provider = WebPushProvider.from_config(section, vapid_pem)
    elif name == "meta":
        provider = MetaWhatsAppProvider.from_config(section)
    elif name == "twilio":
        provider = TwilioProvider.from_config(section, public_url)
    else:
        provider = SandboxProvider.from_config(channel, sandbox)
    if channel == "push" and ("fcm" in section or "apns" in section):
        for table in ("fcm", "apns"):
            if table in section and not isinstance(section[table], dict):
                raise ConfigError(f"channels.push.{table} must be a table")
        web = provider
        mobile = FcmProvider.from_config(section["fcm"]) if "fcm" in section else web
        apple = ApnsProvider.from_config(section["apns"]) if "apns" in section else None
        provider = PushRouter(web, mobile, apple)
    return provider
