"""The providers an owner sets up in the console's Settings page (docs/channels.md,
"Providers set up in the console"): email by SMTP or Postmark, SMS by Twilio, WhatsApp by
Meta's Cloud API, app push by FCM and by APNs, Wallet passes for Apple Wallet and, beside
them, for Google Wallet.

- A row is a *slot*: a channel (`email`), or one service of a channel that has several
  beside each other (`push.fcm`, `push.apns`: the `fcm` and `apns` tables of
  `[channels.push]`, Web Push staying the configuration's; `wallet.google`: the `google`
  table of `[channels.wallet]`, the same cards offered for Google Wallet, which needs
  Apple Wallet's passes set up, here or in the configuration).

- What the configuration (file or environment) sets wins: a channel whose `[channels.<x>]`
  names a `provider` is the configuration's, and the console cannot change it.
- What is secret (passwords, tokens) is sealed with AES-GCM under a key derived (HKDF) from
  the `provider_secrets_key` setting, else from a key Parcours makes and keeps in the
  database (`instance_secrets`); each channel's secrets are bound to the channel and the
  provider (associated data), and are never shown back nor audited.
- Each save counts the channel's version up in the same transaction as its audit entry.
  Every process reads the versions at most every `PROVIDERS_TTL_S` seconds, when it uses
  a provider, and builds a channel's provider again when its version changed: a change is
  in force everywhere within that time, without a restart. The process that saved builds
  it at once."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, delete, insert, select, update

from parcours.channels.base import ConfigError, OutgoingMessage, Provider, TransientFailure
from parcours.channels.registry import Providers, build_provider
from parcours.channels.tables import channel_providers
from parcours.channels.wallet import GOOGLE_WALLET_API, GoogleWalletLinks
from parcours.customers import BadEmail, check_email
from parcours.runtime.db import Database
from parcours.runtime.documents import JsonObject
from parcours.runtime.logs import redact_also
from parcours.runtime.secrets import existing_secret, instance_secret

log = logging.getLogger(__name__)

PROVIDERS_TTL_S = 5.0  # how stale a process's copy of the console's providers may be
RETIRED_FOR_S = 600.0  # a replaced provider is closed this long after (its sends finish)
LONGEST_VALUE = 2000
SEALED_PREFIX = "v1:"
KEY_SECRET_NAME = "provider-secrets-key"

LONGEST_KEY = 16000  # a key or a service account's JSON, pasted
# `origins`: web origins (https://shop.example), one or more, apart by spaces, commas or
# lines; the configuration's list.
Kind = Literal["text", "secret", "key", "port", "choice", "email", "url", "origins"]
# What a field's value must be beyond its kind (checked by `_check_content`).
Content = Literal[
    "",
    "service_account",
    "p256",
    "team_id",
    "key_id",
    "bundle_id",
    "pass_type",
    "certificate",
    "signing_key",
    "issuer_id",
    "class_suffix",
]
MOST_ORIGINS = 20


@dataclass(frozen=True)
class Field:
    """One field of a provider's form; its name is the configuration file's."""

    name: str
    kind: Kind = "text"
    required: bool = False
    default: str = ""
    choices: tuple[str, ...] = ()
    content: Content = ""

    @property
    def secret(self) -> bool:
        """Sealed, never shown back: a password or token, or a key pasted (`key`)."""
        return self.kind in ("secret", "key")


# What the console sets up, per channel and provider, in the order of the form.
FORMS: dict[tuple[str, str], tuple[Field, ...]] = {
    ("email", "smtp"): (
        Field("host", required=True),
        Field("security", "choice", default="starttls", choices=("starttls", "tls", "none")),
        Field("port", "port"),
        Field("username"),
        Field("password", "secret"),
        Field("from_address", "email", required=True),
        Field("from_name"),
        Field("reply_to", "email"),
    ),
    ("email", "postmark"): (
        Field("server_token", "secret", required=True),
        Field("from_address", "email", required=True),
        Field("from_name"),
        Field("reply_to", "email"),
        Field("message_stream", default="outbound"),
        Field("marketing_stream", default="broadcast"),
        Field("webhook_user", required=True),
        Field("webhook_password", "secret", required=True),
        Field("api_base", "url", default="https://api.postmarkapp.com"),
    ),
    ("sms", "twilio"): (
        Field("account_sid", required=True),
        Field("auth_token", "secret", required=True),
        Field("from_number"),
        Field("messaging_service_sid"),
        Field("api_base", "url", default="https://api.twilio.com"),
    ),
    ("whatsapp", "meta"): (
        Field("phone_number_id", required=True),
        Field("access_token", "secret", required=True),
        Field("app_secret", "secret", required=True),
        Field("verify_token", "secret", required=True),
        Field("api_version", default="v21.0"),
        Field("api_base", "url", default="https://graph.facebook.com"),
    ),
    ("push.fcm", "fcm"): (
        Field("service_account", "key", required=True, content="service_account"),
        Field("api_base", "url", default="https://fcm.googleapis.com"),
    ),
    ("push.apns", "apns"): (
        Field("key", "key", required=True, content="p256"),
        Field("key_id", required=True, content="key_id"),
        Field("team_id", required=True, content="team_id"),
        Field("topic", required=True, content="bundle_id"),
        Field("environment", "choice", default="production", choices=("production", "sandbox")),
        Field("api_base", "url"),  # blank: the environment's host
    ),
    ("wallet", "apple"): (
        Field("pass_type_identifier", required=True, content="pass_type"),
        Field("team_identifier", required=True, content="team_id"),
        Field("organization_name", required=True),
        Field("certificate", "key", required=True, content="certificate"),
        Field("signing_key", "key", required=True, content="signing_key"),
        Field("wwdr", "key", required=True, content="certificate"),
        Field(
            "apns_environment", "choice", default="production", choices=("production", "sandbox")
        ),
        Field("apns_api_base", "url"),  # blank: the environment's host
    ),
    ("wallet.google", "google"): (
        Field("issuer_id", required=True, content="issuer_id"),
        Field("service_account", "key", required=True, content="service_account"),
        Field("class_suffix", default="loyalty", content="class_suffix"),
        Field("origins", "origins"),
        Field("api_base", "url", default=GOOGLE_WALLET_API),
    ),
}
# The slots the console sets up, in the order of the page.
CONSOLE_CHANNELS = ("email", "sms", "whatsapp", "push.fcm", "push.apns", "wallet", "wallet.google")
# A slot that adds to a channel's own provider: it is used only beside that provider (set
# up in the console or by the configuration), and saved only when there is one.
NEEDS_OWN = frozenset({"wallet.google"})
# A form's provider as the Settings page's list and its connection test name it, where
# the names differ.
PART_NAMES = {"apple": "apple-wallet", "google": "google-wallet"}


def channel_of(slot: str) -> str:
    """The channel a slot is of (`push.fcm`: push)."""
    return slot.split(".", 1)[0]


def table_of(slot: str) -> str:
    """The table of `[channels.<channel>]` a slot fills ("" for the channel's own)."""
    return slot.split(".", 1)[1] if "." in slot else ""


class ProviderError(ValueError):
    """What the console's provider settings refuse: `key` names the problem in the
    catalogue, `field` the field it is about ("" for the whole), `values` fill it in."""

    def __init__(self, key: str, field: str = "", **values: str) -> None:
        super().__init__(key)
        self.key = key
        self.field = field
        self.values = values


class SealError(ValueError):
    """Stored secrets that cannot be opened with this key (another key, or altered)."""


# ---- sealing --------------------------------------------------------------------------------


class Sealer:
    """AES-GCM (256-bit key, 96-bit random nonce) under a key derived from `material` by
    HKDF-SHA256; the associated data binds a sealed value to its channel and provider.
    `previous` keys (a rotation) open what they sealed; only `material` seals."""

    def __init__(self, material: str, previous: Sequence[str] = ()) -> None:
        if not material:
            raise ValueError("a key is needed to seal provider secrets")
        self._aeads = [_aead_of(material)] + [_aead_of(key) for key in previous if key]

    @classmethod
    def for_database(
        cls, db: Database, configured: str, now: int, previous: Sequence[str] = ()
    ) -> Sealer:
        """The setting's key when one is set (the database then holds nothing that opens
        the secrets once they are sealed again with it), else the one Parcours made and
        keeps in the database. The previous keys open what they sealed; so does the key
        Parcours made, if it did, when a key is set (what it sealed before the setting)."""
        if not configured:
            return cls(instance_secret(db, KEY_SECRET_NAME, now), previous)
        made = existing_secret(db, KEY_SECRET_NAME)
        return cls(configured, [*previous, *([made] if made else [])])

    def seal(self, channel: str, provider: str, secrets: Mapping[str, str]) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(dict(secrets), sort_keys=True).encode()
        sealed = self._aeads[0].encrypt(nonce, plain, _bound(channel, provider))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, channel: str, provider: str, sealed: str) -> dict[str, str]:
        return self._opened(channel, provider, sealed)[0]

    def sealed_again(self, channel: str, provider: str, sealed: str) -> str | None:
        """`sealed` sealed with the current key, when a previous key sealed it; None when
        the current key did. SealError when no key opens it."""
        secrets, which = self._opened(channel, provider, sealed)
        return None if which == 0 else self.seal(channel, provider, secrets)

    def _opened(self, channel: str, provider: str, sealed: str) -> tuple[dict[str, str], int]:
        if not sealed.startswith(SEALED_PREFIX):
            raise SealError("not sealed by this version of Parcours")
        try:
            raw = base64.b64decode(sealed[len(SEALED_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise SealError("cannot be opened with this key") from None
        for which, aead in enumerate(self._aeads):
            try:
                plain = aead.decrypt(raw[:12], raw[12:], _bound(channel, provider))
            except (InvalidTag, ValueError):
                continue
            found = json.loads(plain)
            return {str(k): str(v) for k, v in found.items()}, which
        raise SealError("cannot be opened with this key")


def _aead_of(material: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"parcours channel provider secrets v1",
    ).derive(material.encode())
    return AESGCM(key)


def seal_again(db: Database, sealer: Sealer) -> list[str]:
    """Seal with the current key every provider's secrets that a previous key sealed (a
    rotation, or a key set where Parcours had made one): the channels sealed again. What
    no key opens is left as it is (the Settings page asks for it again); a row saved in
    the meantime is left to its save. The version is not counted up: what the secrets say
    has not changed. Written only when there is something to seal again."""
    c = channel_providers.c
    with db.read() as conn:
        rows = conn.execute(select(c.channel, c.provider, c.secrets)).all()
    again: list[tuple[str, str, str]] = []
    for row in rows:
        try:
            sealed = sealer.sealed_again(row.channel, row.provider, row.secrets)
        except SealError:
            continue
        if sealed is not None:
            again.append((str(row.channel), str(row.secrets), sealed))
    done: list[str] = []
    if again:
        with db.write() as conn:
            for channel, before, sealed in again:
                changed = conn.execute(
                    update(channel_providers)
                    .where(c.channel == channel, c.secrets == before)
                    .values(secrets=sealed)
                ).rowcount
                if changed:
                    done.append(channel)
    return done


def _bound(channel: str, provider: str) -> bytes:
    return f"channel_providers/{channel}/{provider}".encode()


# ---- what is stored -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A channel's provider as the console saved it. `secrets` is empty and `problem`
    says why when they cannot be opened."""

    channel: str
    provider: str
    settings: dict[str, str]
    secrets: dict[str, str]
    version: int
    updated_at: int
    updated_by: str | None
    problem: str = ""

    def section(self) -> JsonObject:
        """The provider's table, as the configuration file would hold it (a slot's
        sub-table: `[channels.push.fcm]`, without `provider`)."""
        found: JsonObject = {} if table_of(self.channel) else {"provider": self.provider}
        for one in FORMS[(self.channel, self.provider)]:
            value = self.secrets.get(one.name) if one.secret else None
            if not one.secret:
                value = self.settings.get(one.name)
            if value in (None, ""):
                continue
            if one.kind == "port":
                found[one.name] = int(value)
            elif one.kind == "origins":
                found[one.name] = origins_of(value)
            else:
                found[one.name] = value
        return found


def origins_of(text: str) -> list[str]:
    """The origins of an `origins` field: apart by spaces, commas or lines."""
    return [one for one in text.replace(",", " ").split() if one]


def stored(conn: Connection, sealer: Sealer | None) -> dict[str, Stored]:
    """Each channel's saved provider, its secrets opened (with `sealer`; None: left shut)."""
    found: dict[str, Stored] = {}
    for row in conn.execute(select(channel_providers)):
        secrets: dict[str, str] = {}
        problem = ""
        if sealer is not None:
            try:
                secrets = sealer.open(row.channel, row.provider, row.secrets)
            except SealError as exc:
                problem = str(exc)
            redact_also(_redactable(secrets))
        found[row.channel] = Stored(
            row.channel,
            row.provider,
            json.loads(row.settings),
            secrets,
            int(row.version),
            int(row.updated_at),
            row.updated_by,
            problem,
        )
    return found


def versions(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(channel_providers.c.channel, channel_providers.c.version))
    return {row.channel: int(row.version) for row in rows}


# ---- checking a form ------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A form's values, checked: what is not secret, the secrets (the stored ones where
    the form left a secret blank), which secrets it changed, and the provider's table."""

    channel: str
    provider: str
    settings: dict[str, str]
    secrets: dict[str, str]
    changed: tuple[str, ...]
    section: dict[str, Any] = field(default_factory=dict)


def check(
    channel: str,
    provider: str,
    form: Mapping[str, str],
    kept: Stored | None,
    file_section: Mapping[str, Any],
    public_url: str,
) -> Checked:
    """The form's values checked field by field (ProviderError names the field), then the
    provider built with them as the configuration file's would be."""
    fields = FORMS.get((channel, provider))
    if fields is None:
        raise ProviderError("console.providers.unknown", provider=provider)
    settings: dict[str, str] = {}
    secrets: dict[str, str] = {}
    changed: list[str] = []
    same = kept is not None and kept.provider == provider
    for one in fields:
        raw = form.get(one.name, "")
        value = raw if one.kind == "secret" else raw.strip()
        longest = LONGEST_KEY if one.kind == "key" else LONGEST_VALUE
        if len(value) > longest:
            raise ProviderError("console.providers.too_long", one.name, longest=str(longest))
        several_lines = one.kind in ("key", "origins")
        if several_lines:  # pasted over several lines: those, and tabs, are allowed
            value = value.replace("\r\n", "\n")
        allowed = "\n\t" if several_lines else ""
        if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
            raise ProviderError("console.providers.control", one.name)
        if one.secret:
            if value:
                changed.append(one.name)
            elif same and kept is not None and one.name in kept.secrets:
                value = kept.secrets[one.name]  # blank: the stored one is kept
        if not value:
            value = one.default
        if not value:
            if one.required:
                raise ProviderError("console.providers.required", one.name)
            continue
        _check_value(one, value)
        _check_content(one, value)
        (secrets if one.secret else settings)[one.name] = value
    redact_also(_redactable(secrets))
    if provider == "twilio" and not (
        settings.get("from_number") or settings.get("messaging_service_sid")
    ):
        raise ProviderError("console.providers.twilio_sender", "from_number")
    if provider == "apple":
        _check_pass_signer(secrets)
    own = Stored(channel, provider, settings, secrets, 0, 0, None).section()
    if table_of(channel):  # tested alone: the channel's other services are not needed
        section: dict[str, Any] = {table_of(channel): own}
    else:
        section = {**{k: v for k, v in file_section.items() if k not in _PROVIDER_KEYS}, **own}
    try:
        alone(channel, section, public_url).close()
    except (ConfigError, ValueError, TypeError) as exc:
        raise ProviderError("console.providers.refused", problem=str(exc)) from None
    return Checked(channel, provider, settings, secrets, tuple(changed), section)


def alone(slot: str, section: Mapping[str, Any], public_url: str) -> Provider | GoogleWalletLinks:
    """The slot's provider built from its checked section on its own, to test it: a
    channel's provider, push's FCM or APNs, or Google Wallet's links (which need no
    Apple pass to be tried)."""
    if slot == "wallet.google":
        return GoogleWalletLinks.from_config(dict(section["google"]))
    return build_provider(channel_of(slot), dict(section), {}, public_url)


def _redactable(secrets: Mapping[str, str]) -> list[str]:
    """What the logs must leave out of these secrets: each whole, and each line of a key
    (a PEM's lines, a service account's private key, as a log would quote them)."""
    found = list(secrets.values())
    for value in secrets.values():
        if "\n" not in value and "\\n" not in value:
            continue
        text = value
        try:
            document = json.loads(value)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("private_key"), str):
            text = document["private_key"]
            found.append(text)
        found.extend(line for line in text.splitlines() if len(line) >= 16)
    return found


# Keys of a channel's table that choose or set up its provider: the console's replace them
# all; the others (SMS prices, the email bounce rule...) stay the configuration's.
_PROVIDER_KEYS = frozenset(
    {"provider", *(one.name for fields in FORMS.values() for one in fields)}
    | {f"{one.name}_env" for fields in FORMS.values() for one in fields}
)


def _check_value(one: Field, value: str) -> None:
    if one.kind == "port":
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ProviderError("console.providers.port", one.name)
    elif one.kind == "choice":
        if value not in one.choices:
            raise ProviderError(
                "console.providers.choice", one.name, choices=", ".join(one.choices)
            )
    elif one.kind == "email":
        try:
            check_email(value)
        except BadEmail as exc:
            raise ProviderError("console.providers.email", one.name, problem=str(exc)) from None
    elif one.kind == "url" and (not value.startswith(("https://", "http://")) or len(value) < 10):
        raise ProviderError("console.providers.url", one.name)
    elif one.kind == "origins":
        found = origins_of(value)
        if len(found) > MOST_ORIGINS:
            raise ProviderError("console.providers.origins_many", one.name, most=str(MOST_ORIGINS))
        for origin in found:
            if not _is_origin(origin):
                raise ProviderError("console.providers.origin", one.name, origin=origin[:100])


def _is_origin(text: str) -> bool:
    """An https origin: the scheme and a host (a port at most), no path, query or user."""
    if not text.startswith("https://"):
        return False
    host, _, port = text[len("https://") :].partition(":")
    labels = host.split(".")
    return (
        bool(host)
        and (not port or (port.isdigit() and 1 <= int(port) <= 65535))
        and all(
            label and label.isascii() and all(c.isalnum() or c == "-" for c in label)
            for label in labels
        )
    )


def _check_content(one: Field, value: str) -> None:
    """What a key, an identifier, a service account must be, named on its field."""
    if one.content == "service_account":
        _check_service_account(one.name, value)
    elif one.content == "p256":
        key = _private_key(one.name, value)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ProviderError("console.providers.p256", one.name)
    elif one.content == "team_id":
        if len(value) != 10 or not value.isascii() or not value.isalnum():
            raise ProviderError("console.providers.team_id", one.name)
    elif one.content == "key_id":
        if len(value) > 32 or not value.isascii() or not value.isalnum():
            raise ProviderError("console.providers.key_id", one.name)
    elif one.content == "pass_type" and not value.startswith("pass."):
        raise ProviderError("console.providers.pass_type", one.name)
    elif one.content == "certificate":
        _certificate(one.name, value)
    elif one.content == "signing_key":
        key = _private_key(one.name, value)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ProviderError("console.providers.signing_key", one.name)
    elif one.content == "issuer_id" and not (value.isascii() and value.isdigit()):
        raise ProviderError("console.providers.issuer_id", one.name)
    elif one.content == "class_suffix" and not (
        value.isascii() and all(c.isalnum() or c in "._-" for c in value)
    ):
        raise ProviderError("console.providers.class_suffix", one.name)
    elif one.content == "bundle_id" and (
        not value.isascii()
        or not all(c.isalnum() or c in ".-_" for c in value)
        or "." not in value.strip(".")
    ):
        raise ProviderError("console.providers.bundle_id", one.name)


def _certificate(name: str, pem: str) -> x509.Certificate:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ProviderError("console.providers.certificate", name, problem="no BEGIN CERTIFICATE")
    try:
        found = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        problem = str(exc).split("\n", 1)[0][:200]
        raise ProviderError("console.providers.certificate", name, problem=problem) from None
    if found.not_valid_after_utc.timestamp() < time.time():
        raise ProviderError(
            "console.providers.certificate_expired",
            name,
            when=found.not_valid_after_utc.date().isoformat(),
        )
    return found


def _check_pass_signer(secrets: Mapping[str, str]) -> None:
    """The Pass Type ID certificate is the key's, and was issued by the WWDR given."""
    certificate = _certificate("certificate", secrets["certificate"])
    key = _private_key("signing_key", secrets["signing_key"])
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != (
        certificate.public_key().public_bytes(serialization.Encoding.DER, public)
    ):
        raise ProviderError("console.providers.key_mismatch", "signing_key")
    wwdr = _certificate("wwdr", secrets["wwdr"])
    if certificate.issuer != wwdr.subject:
        raise ProviderError("console.providers.wwdr_mismatch", "wwdr")


def _private_key(name: str, pem: str) -> Any:
    if "-----BEGIN" not in pem:
        raise ProviderError("console.providers.pem", name, problem="no -----BEGIN line")
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise ProviderError("console.providers.pem_encrypted", name) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        problem = str(exc).split("\n", 1)[0][:200]
        raise ProviderError("console.providers.pem", name, problem=problem) from None


def _check_service_account(name: str, value: str) -> None:
    try:
        document = json.loads(value)
    except ValueError as exc:
        raise ProviderError("console.providers.not_json", name, problem=str(exc)) from None
    if not isinstance(document, dict):
        raise ProviderError("console.providers.not_json", name, problem="not an object")
    for key in ("client_email", "private_key", "project_id", "token_uri"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            raise ProviderError("console.providers.account_missing", name, missing=key)
    if not document["token_uri"].startswith(("https://", "http://")):
        raise ProviderError("console.providers.account_missing", name, missing="token_uri")
    try:
        key = _private_key(name, document["private_key"])
    except ProviderError as exc:
        raise ProviderError(
            "console.providers.account_key", name, problem=exc.values.get("problem", "")
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProviderError("console.providers.account_not_rsa", name)


# ---- saving ---------------------------------------------------------------------------------

Audit = Callable[[Connection, dict[str, Any] | None, dict[str, Any] | None], None]


def save(
    db: Database,
    sealer: Sealer,
    checked: Checked,
    now: int,
    *,
    by: str | None,
    also: Audit | None = None,
) -> int:
    """Save a checked form as its channel's provider, its version counted up; `also(conn,
    before, after)` runs in the same transaction with what the audit log may keep.
    Returns the channel's new version."""
    sealed = sealer.seal(checked.channel, checked.provider, checked.secrets)
    with db.write() as conn:
        row = conn.execute(
            select(channel_providers)
            .where(channel_providers.c.channel == checked.channel)
            .with_for_update()
        ).first()
        values = {
            "provider": checked.provider,
            "settings": json.dumps(checked.settings, sort_keys=True),
            "secrets": sealed,
            "updated_at": now,
            "updated_by": by,
        }
        if row is None:
            version = 1
            conn.execute(
                insert(channel_providers).values(channel=checked.channel, version=1, **values)
            )
            before = None
        else:
            version = int(row.version) + 1
            conn.execute(
                update(channel_providers)
                .where(channel_providers.c.channel == checked.channel)
                .values(version=version, **values)
            )
            before = _audited(sealer, row)
        after: dict[str, Any] = {"provider": checked.provider, **checked.settings}
        for name in sorted(checked.secrets):
            after[name] = "changed" if name in checked.changed else "kept"
        if also is not None:
            also(conn, before, after)
    return version


def remove(db: Database, channel: str, *, also: Audit | None = None) -> bool:
    """Forget the channel's provider set up in the console (back to the configuration's,
    else the sandbox); False when there was none."""
    with db.write() as conn:
        row = conn.execute(
            select(channel_providers).where(channel_providers.c.channel == channel)
        ).first()
        if row is None:
            return False
        conn.execute(delete(channel_providers).where(channel_providers.c.channel == channel))
        if also is not None:
            also(conn, _audited(None, row), None)
    return True


def _audited(sealer: Sealer | None, row: Any) -> dict[str, Any]:
    """A stored row as the audit log keeps it: its settings, and which secrets were set."""
    found: dict[str, Any] = {"provider": row.provider, **json.loads(row.settings)}
    if sealer is not None:
        try:
            found.update(
                {name: "set" for name in sealer.open(row.channel, row.provider, row.secrets)}
            )
        except SealError:
            found["secrets"] = "unreadable"
    return found


def hint(secret: str) -> str:
    """What the console shows of a stored secret: its last four characters when it is long
    enough for them to tell nothing, else nothing."""
    return secret[-4:] if len(secret) >= 20 else ""


# ---- in force -------------------------------------------------------------------------------


@dataclass
class Unavailable:
    """A channel whose stored settings cannot be used (a key that does not open them):
    its messages wait (a transient failure) rather than go to the sandbox."""

    channel: str
    why: str
    name: str = "unavailable"
    connections: int = 1

    def send(self, message: OutgoingMessage) -> str:
        raise TransientFailure(f"the {self.channel} provider set up in the console: {self.why}")

    def close(self) -> None:
        return None


def by_configuration(config: Mapping[str, Any], slot: str) -> bool:
    """Whether the configuration (file or environment) sets the slot's provider: it wins
    (a channel's: its `provider`; push's FCM or APNs: its `fcm` or `apns` table)."""
    section = config.get(channel_of(slot))
    return isinstance(section, dict) and (table_of(slot) or "provider") in section


def has_own(config: Mapping[str, Any], saved: Mapping[str, Stored], channel: str) -> bool:
    """Whether the channel has a provider of its own beside the sandbox, set up in the
    console (`saved`) or by the configuration: what a slot of `NEEDS_OWN` adds to."""
    if channel in saved:
        return True
    section = config.get(channel)
    return isinstance(section, dict) and section.get("provider", "sandbox") != "sandbox"


def _channel_section(
    config: Mapping[str, Any], channel: str, found: Mapping[str, Stored]
) -> dict[str, Any]:
    """The channel's table with what the console set up laid over the configuration's:
    a channel's provider replaces the configuration's provider keys; a slot's table
    (`fcm`, `apns`) joins the channel's (Web Push's settings stay)."""
    section: dict[str, Any] = dict(config.get(channel, {}))
    for slot, one in found.items():
        if channel_of(slot) != channel:
            continue
        if table_of(slot):
            section[table_of(slot)] = one.section()
        else:
            section = {k: v for k, v in section.items() if k not in _PROVIDER_KEYS}
            section.update(one.section())
    return section


class LiveProviders(Providers):
    """The configuration's providers with the console's laid over them, read again at
    most every `ttl` seconds when a provider is asked for."""

    def __init__(
        self,
        db: Database,
        config: dict[str, Any],
        public_url: str,
        sealer: Sealer,
        *,
        vapid_pem: str | None = None,
        prepare: Callable[[Provider], None] = lambda provider: None,
        ttl: float = PROVIDERS_TTL_S,
    ) -> None:
        super().__init__(dict(Providers.from_settings(config, public_url, vapid_pem).by_channel))
        self.db = db
        self.config = config
        self.public_url = public_url
        self.vapid_pem = vapid_pem
        self.sealer = sealer
        self.prepare = prepare
        self.ttl = ttl
        self.problems: dict[str, str] = {}  # channel -> why its stored settings are not used
        self._files = dict(self.by_channel)
        self._seen: dict[str, int] = {}
        self._built: dict[str, tuple[tuple[str, int], ...]] = {}  # channel -> slots' versions
        self._next = 0.0
        self._lock = threading.Lock()
        self._retired: list[tuple[float, Provider]] = []
        for provider in self.by_channel.values():
            prepare(provider)
        self.refresh(force=True)

    def for_channel(self, channel: str) -> Provider:
        self.refresh()
        return self.by_channel[channel]

    def refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._next:
            return
        # One thread reads at a time; the others go on with the providers they have.
        if not self._lock.acquire(blocking=force):
            return
        try:
            with self.db.read() as conn:
                seen = versions(conn)
                if seen != self._seen:
                    self._use(stored(conn, self.sealer))
                    self._seen = seen
            self._next = time.monotonic() + self.ttl
            self._close_retired()
        finally:
            self._lock.release()

    def _use(self, found: dict[str, Stored]) -> None:
        updated = dict(self.by_channel)
        problems: dict[str, str] = {}
        built = dict(self._built)
        sandbox = self.config.get("sandbox", {})
        for channel in dict.fromkeys(channel_of(slot) for slot in CONSOLE_CHANNELS):
            mine = {
                slot: one
                for slot, one in found.items()
                if channel_of(slot) == channel and not by_configuration(self.config, slot)
            }
            for slot in sorted(NEEDS_OWN & set(mine)):
                if not has_own(self.config, mine, channel):
                    del mine[slot]  # beside no provider of its channel: not used
            key = tuple(sorted((slot, one.version) for slot, one in mine.items()))
            unusable = [one.problem for one in mine.values() if one.problem]
            if not mine:
                wanted = self._files[channel]
                built.pop(channel, None)
            elif key == self._built.get(channel) and channel not in self.problems:
                continue
            elif unusable:
                problems[channel] = unusable[0]
                wanted = Unavailable(channel, unusable[0])
            else:
                section = _channel_section(self.config, channel, mine)
                try:
                    wanted = build_provider(
                        channel, section, sandbox, self.public_url, self.vapid_pem
                    )
                except (ConfigError, ValueError, TypeError) as exc:
                    problems[channel] = str(exc)
                    wanted = Unavailable(channel, str(exc))
                else:
                    self.prepare(wanted)
            if mine:
                built[channel] = key
            if wanted is not updated[channel]:
                if updated[channel] is not self._files[channel]:
                    self._retired.append((time.monotonic(), updated[channel]))
                updated[channel] = wanted
        for channel, why in problems.items():
            log.error("the %s provider set up in the console cannot be used: %s", channel, why)
        self.problems = problems
        self._built = built
        self.by_channel = updated  # one assignment: a reader sees the old or the new

    def _close_retired(self) -> None:
        now = time.monotonic()
        keep: list[tuple[float, Provider]] = []
        for since, provider in self._retired:
            if now - since >= RETIRED_FOR_S:
                provider.close()
            else:
                keep.append((since, provider))
        self._retired = keep

    def close(self) -> None:
        for _, provider in self._retired:
            provider.close()
        self._retired = []
        closed = {id(p) for p in self.by_channel.values()}
        super().close()
        for provider in self._files.values():
            if id(provider) not in closed:
                provider.close()
