"""Whether each configured provider can be reached with its settings, checked harmlessly
(docs/console.md, "Settings"): nothing is sent to anyone.

- SMTP: connect, EHLO, STARTTLS or TLS as configured, AUTH when a user is, NOOP, QUIT.
- Twilio, Meta's WhatsApp Cloud API, Postmark: one authenticated read of a documented
  endpoint at the configured base URL (the account, the phone number, the server).
- FCM: an access token asked of Google's token endpoint with the service account.
- APNs: a TLS connection to Apple's host (APNs has no read request).
- Apple Wallet passes: a manifest signed with the pass certificate and key (nothing to
  reach: passes are signed here).
- The sandbox, the site chat and Web Push (a push service per browser) have nothing
  outside Parcours to reach.

The answer is a key of the catalogue and its values (the console says it in the
viewer's language); the provider's own words are kept in `detail`."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from parcours.channels.apns import ApnsProvider
from parcours.channels.base import DeliveryFailure, Provider
from parcours.channels.email import SmtpProvider
from parcours.channels.fcm import SCOPE, AccessTokens, FcmProvider, PushRouter
from parcours.channels.postmark import PostmarkProvider
from parcours.channels.registry import Providers
from parcours.channels.sms import TwilioProvider
from parcours.channels.wallet import GOOGLE_WALLET_SCOPE, GoogleWalletLinks, WalletIssuer
from parcours.channels.whatsapp import MetaWhatsAppProvider

TIMEOUT_S = 10.0
LONGEST_DETAIL = 300


@dataclass(frozen=True)
class Configured:
    """A provider as the settings page lists it."""

    channel: str
    # smtp, postmark, twilio, meta, webpush, fcm, apns, apple-wallet, google-wallet, site,
    # sandbox
    name: str
    where: str  # the host or base URL it reaches; "" when it reaches nothing outside
    checkable: bool


@dataclass(frozen=True)
class ConnectionCheck:
    channel: str
    name: str
    ok: bool
    key: str  # what happened, a key of the catalogue (`settings.check.*`)
    values: dict[str, str] = field(default_factory=dict)  # fill the key's text in


def configured(providers: Providers) -> list[Configured]:
    """Each provider the settings configured, per channel (push may have three)."""
    found: list[Configured] = []
    for channel, provider in providers.by_channel.items():
        for one in _parts(provider):
            where = _where(one)
            found.append(Configured(channel, one.name, where, bool(where)))
    return found


def check_connection(
    providers: Providers, channel: str, name: str, timeout: float = TIMEOUT_S
) -> ConnectionCheck | None:
    """Check the provider `name` of `channel` (None: there is no such provider)."""
    provider = providers.by_channel.get(channel)
    return None if provider is None else check_part(channel, provider, name, timeout)


def check_part(
    channel: str, provider: Any, name: str, timeout: float = TIMEOUT_S
) -> ConnectionCheck | None:
    """Check the part `name` of a provider of `channel` (push's FCM within its router,
    Google Wallet's links within the Wallet issuer, or the provider itself); None when it
    has no such part."""
    one = next((p for p in _parts(provider) if p.name == name), None)
    if one is None:
        return None
    try:
        key, values = _check(one, timeout)
    except Exception as exc:  # whatever the provider did: said in words, never a trace
        key, values = "settings.check.failed", {"detail": _short(exc)}
    return ConnectionCheck(channel, name, key.endswith("_ok"), key, values)


def _parts(provider: Any) -> list[Any]:
    if isinstance(provider, PushRouter):
        parts = [provider.web, provider.mobile, provider.apple]
        return list({id(p): p for p in parts if p is not None}.values())
    if isinstance(provider, WalletIssuer) and provider.google is not None:
        return [provider, provider.google]
    return [provider]


def _where(provider: Any) -> str:
    if isinstance(provider, SmtpProvider):
        return f"{provider.host}:{provider.port}"
    if isinstance(
        provider,
        TwilioProvider
        | MetaWhatsAppProvider
        | PostmarkProvider
        | FcmProvider
        | ApnsProvider
        | GoogleWalletLinks,
    ):
        return str(provider.api_base)
    return ""


def _check(provider: Provider | GoogleWalletLinks, timeout: float) -> tuple[str, dict[str, str]]:
    where = _where(provider)
    if isinstance(provider, SmtpProvider):
        return _smtp(provider, timeout)
    if isinstance(provider, WalletIssuer):
        provider.signer.sign(b"{}")  # what a pass's manifest gets
        return "settings.check.signed_ok", {"where": provider.pass_type_identifier}
    try:
        if isinstance(provider, TwilioProvider):
            return _http(
                where,
                f"{provider.api_base}/2010-04-01/Accounts/{provider.account_sid}.json",
                timeout,
                auth=(provider.account_sid, provider.auth_token),
            )
        if isinstance(provider, MetaWhatsAppProvider):
            return _http(
                where,
                f"{provider.api_base}/{provider.api_version}/{provider.phone_number_id}",
                timeout,
                headers={"Authorization": f"Bearer {provider.access_token}"},
            )
        if isinstance(provider, PostmarkProvider):
            return _http(
                where,
                f"{provider.api_base}/server",
                timeout,
                headers={
                    "X-Postmark-Server-Token": provider.server_token,
                    "Accept": "application/json",
                },
            )
        if isinstance(provider, FcmProvider):
            with httpx.Client(timeout=timeout) as client:
                try:
                    AccessTokens(provider.account, SCOPE, client).get(renew=True)
                except DeliveryFailure as exc:
                    return "settings.check.refused", {"where": where, "detail": _short(exc)}
            return "settings.check.token_ok", {"where": provider.account.token_uri}
        if isinstance(provider, ApnsProvider):
            return _tls(provider.api_base, provider.ca_file, timeout)
        if isinstance(provider, GoogleWalletLinks):
            return _google_issuer(provider, timeout)
    except httpx.TimeoutException:
        return "settings.check.timeout", {"where": where, "seconds": f"{timeout:g}"}
    except httpx.HTTPError as exc:
        return "settings.check.unreachable", {"where": where, "detail": _short(exc)}
    return "settings.check.nothing", {}


def _google_issuer(links: GoogleWalletLinks, timeout: float) -> tuple[str, dict[str, str]]:
    """Google Wallet: an access token for the service account, then the issuer read with
    it (Google's `issuer.get`): the account may issue this issuer's passes."""
    with httpx.Client(timeout=timeout) as client:
        try:
            token = AccessTokens(links.account, GOOGLE_WALLET_SCOPE, client).get(renew=True)
        except DeliveryFailure as exc:
            where = links.account.token_uri
            return "settings.check.refused", {"where": where, "detail": _short(exc)}
    return _http(
        links.api_base,
        f"{links.api_base}/walletobjects/v1/issuer/{links.issuer_id}",
        timeout,
        headers={"Authorization": f"Bearer {token}"},
    )


def _http(
    where: str,
    url: str,
    timeout: float,
    *,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    response = httpx.get(url, auth=auth, headers=headers, timeout=timeout)
    if response.status_code == 200:
        return "settings.check.http_ok", {"where": where}
    detail = f"{response.status_code} {_provider_words(response)}".strip()
    if response.status_code in (401, 403):
        return "settings.check.refused", {"where": where, "detail": detail}
    return "settings.check.answered", {"where": where, "detail": detail}


def _provider_words(response: httpx.Response) -> str:
    """What the provider said of its refusal, whatever its error's shape."""
    try:
        body = response.json()
    except ValueError:
        return _short(response.text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Meta, Google
            return _short(error.get("message", ""))
        for name in ("message", "Message", "error_description"):
            if isinstance(body.get(name), str):
                return _short(body[name])
    return ""


def _smtp(provider: SmtpProvider, timeout: float) -> tuple[str, dict[str, str]]:
    where = f"{provider.host}:{provider.port}"
    context = ssl.create_default_context()
    if not provider.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        connection: smtplib.SMTP
        if provider.security == "tls":
            connection = smtplib.SMTP_SSL(
                provider.host, provider.port, timeout=timeout, context=context
            )
        else:
            connection = smtplib.SMTP(provider.host, provider.port, timeout=timeout)
        try:
            connection.ehlo()
            if provider.security == "starttls":
                if not connection.has_extn("starttls"):
                    return "settings.check.no_starttls", {"where": where}
                connection.starttls(context=context)
                connection.ehlo()
            if provider.username:
                connection.login(provider.username, provider.password or "")
            code, reply = connection.noop()
            if code != 250:
                return "settings.check.answered", {
                    "where": where,
                    "detail": f"{code} {reply.decode(errors='replace')}",
                }
            connection.quit()
        finally:
            connection.close()
    except smtplib.SMTPAuthenticationError as exc:
        return "settings.check.refused", {
            "where": where,
            "detail": f"{exc.smtp_code} {_short(_text(exc.smtp_error))}",
        }
    except smtplib.SMTPNotSupportedError:
        return "settings.check.no_auth", {"where": where}
    except smtplib.SMTPResponseException as exc:
        return "settings.check.answered", {
            "where": where,
            "detail": f"{exc.smtp_code} {_short(_text(exc.smtp_error))}",
        }
    except TimeoutError:
        return "settings.check.timeout", {"where": where, "seconds": f"{timeout:g}"}
    except ssl.SSLError as exc:
        return "settings.check.tls", {"where": where, "detail": _short(exc)}
    except (OSError, smtplib.SMTPException) as exc:
        return "settings.check.unreachable", {"where": where, "detail": _short(exc)}
    key = "settings.check.smtp_signed_in_ok" if provider.username else "settings.check.smtp_ok"
    return key, {"where": where, "security": provider.security.upper()}


def _tls(base: str, ca_file: str | None, timeout: float) -> tuple[str, dict[str, str]]:
    parts = urlsplit(base)
    host, port = parts.hostname or "", parts.port or 443
    where = f"{host}:{port}"
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except TimeoutError:
        return "settings.check.timeout", {"where": where, "seconds": f"{timeout:g}"}
    except ssl.SSLError as exc:
        return "settings.check.tls", {"where": where, "detail": _short(exc)}
    except OSError as exc:
        return "settings.check.unreachable", {"where": where, "detail": _short(exc)}
    return "settings.check.tls_ok", {"where": where}


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= LONGEST_DETAIL else text[: LONGEST_DETAIL - 1] + "…"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
