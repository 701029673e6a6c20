"""Settings from the environment (`PARCOURS_*`) and an optional `parcours.toml`, checked."""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

ENV_PREFIX = "PARCOURS_"
# A parcel on its way this long without a report is stalled: `Shipment Stalled`, and the
# console's Shipments page by default (docs/commerce.md, "Stalled and delayed parcels").
SHIPMENT_STALLED_AFTER_HOURS = 48
# Best sellers and bought together count the orders of this many recent weeks by default
# (`recommendation_weeks`), at most a year's (docs/commerce.md, "Recommendations").
RECOMMENDATION_WEEKS = 12
MAX_RECOMMENDATION_WEEKS = 52
MAX_REVIEW_AFTER_DAYS = 365  # the most days after delivery a review may wait for
log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it and where it came from."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("parcours-data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    write_key: str = ""
    admin_key: str = ""
    default_region: str = "FR"
    shopify_webhook_secret: str = ""
    # the shops whose webhooks this Parcours serves (`brand.myshopify.com`); docs/security.md
    shopify_shops: tuple[str, ...] = ()
    policies_file: str = ""
    ingest_batch_events: int = 1000
    ingest_writers: int = 0  # 0: the default, 1 (docs/architecture.md, concurrency)
    log_level: str = "info"
    log_format: str = "auto"  # text on a terminal, JSON lines otherwise; or text, json
    brand_name: str = "Parcours demo shop"
    brand_url: str = "https://shop.example.com"
    brand_locale: str = "en"
    # the IANA time zone for customers with none known (or an invalid one): local-time
    # waits and date traits use it instead of UTC (docs/journeys.md)
    brand_timezone: str = "UTC"
    sector: str = ""
    public_url: str = ""  # where customers reach Parcours' links; default http://host:port
    secret_key: str = ""  # signs links; made and kept in the database when empty
    # seals the secrets of providers set up in the console (docs/security.md); when empty,
    # a key made and kept in the database
    provider_secrets_key: str = ""
    # keys that sealed them before (a rotation): they still open what they sealed, and
    # each process re-seals that with the key above when it starts
    provider_secrets_previous_keys: tuple[str, ...] = ()
    # the brand's server signs a chat visitor's user id with it (docs/security.md, Site chat)
    identity_verification_secret: str = ""
    # signs the generic carrier webhook's deliveries (docs/commerce.md); empty: refused
    carrier_webhook_secret: str = ""
    return_window_days: int = 0  # 0: the sector's custom, else 14 days (docs/commerce.md)
    # days after delivery before a review is asked; 0: the sector's custom, else 7
    review_after_days: int = 0
    # a cart without activity this long is announced once as Cart Abandoned; an order of
    # its customer within the window after its last activity closes it (docs/commerce.md)
    cart_abandon_after_minutes: int = 60
    cart_order_window_hours: int = 168
    shipment_stalled_after_hours: int = SHIPMENT_STALLED_AFTER_HOURS  # then Shipment Stalled
    # a variant back in stock notifies no more waiting requests than the stock returned
    back_in_stock_limit_to_stock: bool = False
    channels: dict[str, Any] = field(default_factory=dict, compare=False)
    # outbound webhooks: `secrets` (name -> signing key) and `allow_hosts` (docs/security.md)
    webhooks: dict[str, Any] = field(default_factory=dict, compare=False)
    delivery_lease_seconds: int = 300  # a send not recorded by then is made again, same key
    metrics_token: str = ""  # GET /metrics needs `Authorization: Bearer` it; empty: no metrics
    metrics_port: int = 0  # `parcours worker` serves its own /metrics there; 0: not served
    serve_worker: bool = True  # `parcours serve` runs the worker too; false: HTTP only
    worker_stale_seconds: int = 30  # a worker heartbeat older than this is not fresh
    # an idle worker looks for due jobs this often even when nothing woke it (a commit of
    # its own process that scheduled a job does; on PostgreSQL, any process's NOTIFY)
    worker_poll_seconds: int = 1
    ready_min_workers: int = 0  # /readyz fails with fewer fresh workers than this, anywhere
    shutdown_timeout_seconds: int = 20  # each of: requests in flight, the worker's batch
    # a consumable's `Replenishment Due` comes this many days before it is expected to run
    # out; a customer who spent this much in one currency is a VIP (0: none is); commerce.md
    replenishment_lead_days: int = 3
    # best sellers and "bought together" count the orders of this many weeks, this one
    # included (docs/commerce.md, "Recommendations")
    recommendation_weeks: int = RECOMMENDATION_WEEKS
    vip_spend: int = 500
    extra_sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'parcours.db').resolve()}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def secrets(self) -> set[str]:
        """Every secret these settings hold (keys, the database password, providers'
        tokens, passwords and keys), so that logs can leave them out."""
        found = {
            self.write_key,
            self.admin_key,
            self.shopify_webhook_secret,
            self.secret_key,
            self.provider_secrets_key,
            *self.provider_secrets_previous_keys,
            self.metrics_token,
            self.identity_verification_secret,
            self.carrier_webhook_secret,
        }
        _, _, authority = self.database_url.partition("://")
        credentials, at, _ = authority.rpartition("@")
        if at and ":" in credentials:
            found.add(credentials.partition(":")[2])
        found.update(_secret_strings(self.channels, secret=False))
        found.update(_secret_strings(self.webhooks, secret=False))
        return {value for value in found if len(value) >= _SHORTEST_SECRET}

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with the given values (None means keep), checked again."""
        kept = {k: v for k, v in overrides.items() if v is not None}
        updated = replace(self, **kept)
        _check(updated, "command line")
        return updated


_SHORTEST_SECRET = 6  # shorter values are too common in ordinary text to be left out of it
_SECRET_NAMES = ("secret", "token", "password", "key", "auth", "credential")


def _secret_strings(value: Any, *, secret: bool) -> list[str]:
    """The text values under a name that says it is secret (`auth_token`, `app_secret`,
    `private_key`...), at any depth of a providers' table."""
    if isinstance(value, str):
        return [value] if secret else []
    if isinstance(value, dict):
        found: list[str] = []
        for name, item in value.items():
            named = secret or any(part in str(name).lower() for part in _SECRET_NAMES)
            if named and str(name).endswith("_env") and isinstance(item, str):
                item = os.environ.get(item, "")  # `auth_token_env`: the secret is the variable's
            found += _secret_strings(item, secret=named)
        return found
    if isinstance(value, list | tuple):
        return [found for item in value for found in _secret_strings(item, secret=secret)]
    return []


_FIELD_TYPES: dict[str, type] = {
    "data_dir": Path,
    "database_url": str,
    "host": str,
    "port": int,
    "write_key": str,
    "admin_key": str,
    "default_region": str,
    "shopify_webhook_secret": str,
    "shopify_shops": tuple,
    "policies_file": str,
    "ingest_batch_events": int,
    "ingest_writers": int,
    "log_level": str,
    "log_format": str,
    "brand_name": str,
    "brand_url": str,
    "brand_locale": str,
    "brand_timezone": str,
    "sector": str,
    "public_url": str,
    "secret_key": str,
    "provider_secrets_key": str,
    "provider_secrets_previous_keys": tuple,
    "identity_verification_secret": str,
    "carrier_webhook_secret": str,
    "return_window_days": int,
    "review_after_days": int,
    "cart_abandon_after_minutes": int,
    "cart_order_window_hours": int,
    "shipment_stalled_after_hours": int,
    "back_in_stock_limit_to_stock": bool,
    "channels": dict,
    "webhooks": dict,
    "delivery_lease_seconds": int,
    "metrics_token": str,
    "metrics_port": int,
    "serve_worker": bool,
    "worker_stale_seconds": int,
    "worker_poll_seconds": int,
    "ready_min_workers": int,
    "shutdown_timeout_seconds": int,
    "replenishment_lead_days": int,
    "recommendation_weeks": int,
    "vip_spend": int,
}


def load_settings(
    environ: dict[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Read `parcours.toml` (if any) then the environment, which wins; raise SettingsError."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: list[str] = []
    path = config_file or Path(env.get(f"{ENV_PREFIX}CONFIG", "parcours.toml"))
    if config_file is not None or path.exists() or f"{ENV_PREFIX}CONFIG" in env:
        if not path.exists():
            raise SettingsError(f"configuration file {path} does not exist")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
        for key, value in table.items():
            if key in REMOVED:
                _removed(key, value, f"{path}")
                continue
            values[key] = _convert(key, value, f"{path}")
        sources.append(str(path))
    for name in REMOVED:
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            _removed(name, env[env_name], f"environment variable {env_name}")
    for name in _FIELD_TYPES:
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _convert(name, env[env_name], f"environment variable {env_name}")
    settings = Settings(**values, extra_sources=tuple(sources))
    _check(settings, "settings")
    return settings


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


# Settings that no longer exist: a value asking for what is gone is refused, with what to do
# instead; one asking for what is now the only way (the old default's opposite for
# writer_process, one HTTP process) is ignored with a warning, so that an upgrade starts.
REMOVED: dict[str, tuple[frozenset[str], str]] = {
    "writer_process": (
        frozenset(_FALSE),
        "writer_process was removed: on SQLite, `parcours serve` is one process "
        '(docs/architecture.md, "One topology per database")',
    ),
    "http_workers": (
        frozenset({"1"}),
        "http_workers was removed: on PostgreSQL, run several `parcours serve` processes "
        "behind your load balancer (docs/operations.md); on SQLite, serve is one process",
    ),
}


def _removed(name: str, value: Any, where: str) -> None:
    harmless, why = REMOVED[name]
    if str(value).strip().lower() in harmless:
        log.warning("%s: %s; %s = %s asks for nothing more and is ignored", where, why, name, value)
        return
    raise SettingsError(f"{where}: {why}")


def _convert(name: str, value: Any, where: str) -> Any:
    if name not in _FIELD_TYPES:
        known = ", ".join(sorted(_FIELD_TYPES))
        raise SettingsError(f"{where}: unknown setting {name!r} (known: {known})")
    wanted = _FIELD_TYPES[name]
    if wanted is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise SettingsError(f"{where}: {name} must be true or false, got {value!r}")
    if wanted is int:
        if isinstance(value, bool):
            raise SettingsError(f"{where}: {name} must be a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: {name} must be a whole number, got {value!r}") from None
    if wanted is tuple:
        listed = _text_list(name, value, where)
        return tuple(item.lower() for item in listed) if name == "shopify_shops" else listed
    if wanted is dict:
        if isinstance(value, str):  # from the environment: JSON
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise SettingsError(f"{where}: {name} must be a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: {name} must be a table of tables, got {value!r}")
        return value
    if wanted is Path:
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: {name} must be a path, got {value!r}")
        return Path(value)
    if not isinstance(value, str):
        raise SettingsError(f"{where}: {name} must be text, got {value!r}")
    return value


def _check(settings: Settings, where: str) -> None:
    if not 0 < settings.port < 65536:
        raise SettingsError(f"{where}: port must be between 1 and 65535, got {settings.port}")
    if not 1 <= settings.ingest_batch_events <= 10_000:
        raise SettingsError(
            f"{where}: ingest_batch_events must be between 1 and 10000, "
            f"got {settings.ingest_batch_events}"
        )
    if settings.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise SettingsError(
            f"{where}: default_region must be a two-letter region code such as FR or US, "
            f"got {settings.default_region!r}"
        )
    if not 0 <= settings.ingest_writers <= 64:
        raise SettingsError(
            f"{where}: ingest_writers must be between 0 and 64, got {settings.ingest_writers}"
        )
    url = settings.database_url
    if url and not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise SettingsError(
            f"{where}: database_url must start with sqlite:// or postgresql://, got {url!r}"
        )
    if settings.policies_file and not Path(settings.policies_file).is_file():
        raise SettingsError(f"{where}: policies_file {settings.policies_file} does not exist")
    if not 0 <= settings.review_after_days <= MAX_REVIEW_AFTER_DAYS:
        raise SettingsError(
            f"{where}: review_after_days must be between 0 (the sector's custom) and "
            f"{MAX_REVIEW_AFTER_DAYS}, got {settings.review_after_days}"
        )
    if not 0 <= settings.return_window_days <= 3650:
        raise SettingsError(
            f"{where}: return_window_days must be between 0 (the default) and 3650, "
            f"got {settings.return_window_days}"
        )
    if not 1 <= settings.cart_abandon_after_minutes <= 43_200:
        raise SettingsError(
            f"{where}: cart_abandon_after_minutes must be between 1 and 43200 (30 days), "
            f"got {settings.cart_abandon_after_minutes}"
        )
    if not 0 <= settings.cart_order_window_hours <= 8_760:
        raise SettingsError(
            f"{where}: cart_order_window_hours must be between 0 and 8760 (a year), "
            f"got {settings.cart_order_window_hours}"
        )
    if not 1 <= settings.shipment_stalled_after_hours <= 1_440:
        raise SettingsError(
            f"{where}: shipment_stalled_after_hours must be between 1 and 1440 (60 days), "
            f"got {settings.shipment_stalled_after_hours}"
        )
    if not 1 <= settings.recommendation_weeks <= MAX_RECOMMENDATION_WEEKS:
        raise SettingsError(
            f"{where}: recommendation_weeks must be between 1 and {MAX_RECOMMENDATION_WEEKS}, "
            f"got {settings.recommendation_weeks}"
        )
    if not 0 <= settings.replenishment_lead_days <= 365:
        raise SettingsError(
            f"{where}: replenishment_lead_days must be between 0 and 365, "
            f"got {settings.replenishment_lead_days}"
        )
    if settings.vip_spend < 0:
        raise SettingsError(
            f"{where}: vip_spend must be 0 (no VIP) or more, got {settings.vip_spend}"
        )
    if not 1 <= settings.delivery_lease_seconds <= 86_400:
        raise SettingsError(
            f"{where}: delivery_lease_seconds must be between 1 and 86400, "
            f"got {settings.delivery_lease_seconds}"
        )
    if settings.brand_locale not in ("en", "fr"):
        raise SettingsError(
            f"{where}: brand_locale must be en or fr, got {settings.brand_locale!r}"
        )
    if not _is_zone(settings.brand_timezone):
        raise SettingsError(
            f"{where}: brand_timezone must be an IANA time zone such as Europe/Paris, "
            f"got {settings.brand_timezone!r}"
        )
    if settings.public_url and not settings.public_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"{where}: public_url must start with http:// or https://, got {settings.public_url!r}"
        )
    if settings.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise SettingsError(
            f"{where}: log_level must be debug, info, warning or error, got {settings.log_level!r}"
        )
    if settings.log_format not in ("auto", "text", "json"):
        raise SettingsError(
            f"{where}: log_format must be auto, text or json, got {settings.log_format!r}"
        )
    if not 0 <= settings.metrics_port < 65536:
        raise SettingsError(
            f"{where}: metrics_port must be between 0 (none) and 65535, got {settings.metrics_port}"
        )
    if 0 < len(settings.provider_secrets_key) < 16:
        raise SettingsError(
            f"{where}: provider_secrets_key must be at least 16 characters "
            "(a random value such as the output of `openssl rand -hex 32`)"
        )
    for number, key in enumerate(settings.provider_secrets_previous_keys, 1):
        if len(key) < 16:
            raise SettingsError(
                f"{where}: provider_secrets_previous_keys: key {number} must be at least 16 "
                "characters (as provider_secrets_key was)"
            )
    _check_webhooks(settings, where)
    _check_shopify_shops(settings, where)
    _check_identity_verification_secret(settings, where)
    _check_range(where, "worker_stale_seconds", settings.worker_stale_seconds, 3, 3600)
    _check_range(where, "worker_poll_seconds", settings.worker_poll_seconds, 1, 3600)
    _check_range(where, "ready_min_workers", settings.ready_min_workers, 0, 1000)
    _check_range(where, "shutdown_timeout_seconds", settings.shutdown_timeout_seconds, 1, 600)


_SHORTEST_WEBHOOK_SECRET = 16


def _check_webhooks(settings: Settings, where: str) -> None:
    """`[webhooks]`: signing keys of their own (never a key that also checks what comes
    in, so a signed delivery cannot pass for an inbound call) and hosts allowed by name."""
    table = settings.webhooks
    unknown = set(table) - {"secrets", "allow_hosts", "ca_file"}
    if unknown:
        raise SettingsError(
            f"{where}: webhooks has unknown keys {sorted(unknown)} "
            "(known: allow_hosts, ca_file, secrets)"
        )
    ca_file = table.get("ca_file")
    if ca_file is not None and not (isinstance(ca_file, str) and Path(ca_file).is_file()):
        raise SettingsError(f"{where}: webhooks.ca_file {ca_file!r} is not a file")
    hosts = table.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise SettingsError(f"{where}: webhooks.allow_hosts must be a list of host names")
    keys = table.get("secrets", {})
    if not isinstance(keys, dict):
        raise SettingsError(f"{where}: webhooks.secrets must be a table of name = key")
    inbound = replace(settings, webhooks={}).secrets()
    for name, key in keys.items():
        if not re.match(r"^[a-z0-9_]{1,64}$", str(name)):
            raise SettingsError(
                f"{where}: webhooks.secrets.{name}: a name is lowercase letters, digits and _"
            )
        if not isinstance(key, str) or len(key) < _SHORTEST_WEBHOOK_SECRET:
            raise SettingsError(
                f"{where}: webhooks.secrets.{name} must be text of at least "
                f"{_SHORTEST_WEBHOOK_SECRET} characters"
            )
        if key in inbound:
            raise SettingsError(
                f"{where}: webhooks.secrets.{name} is also a key Parcours holds for something "
                "else (an API key, an inbound webhook secret, a provider's token): give "
                "outbound webhooks keys of their own"
            )


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return bool(name)


def _check_range(where: str, name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{where}: {name} must be between {low} and {high}, got {value}")


_SHORTEST_IDENTITY_SECRET = 16


def _check_identity_verification_secret(settings: Settings, where: str) -> None:
    """Long, and used for nothing else: whoever holds it can sign in as any customer."""
    secret = settings.identity_verification_secret
    if not secret:
        return
    if len(secret) < _SHORTEST_IDENTITY_SECRET:
        raise SettingsError(
            f"{where}: identity_verification_secret must be at least {_SHORTEST_IDENTITY_SECRET} "
            "characters (a random value such as the output of `openssl rand -hex 32`)"
        )
    if secret in replace(settings, identity_verification_secret="").secrets():
        raise SettingsError(
            f"{where}: identity_verification_secret is also a key Parcours holds for something "
            "else (an API key, the link-signing key, a webhook or provider secret): give it "
            "a value of its own"
        )


# A shop as Shopify names it in X-Shopify-Shop-Domain: its permanent myshopify.com domain.
SHOPIFY_SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]{0,99}\.myshopify\.com")


def _text_list(name: str, value: Any, where: str) -> tuple[str, ...]:
    """A TOML array of texts, or (from the environment) texts separated by commas; each
    without its surrounding spaces."""
    what = "shop domains" if name == "shopify_shops" else "texts"
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise SettingsError(f"{where}: {name} must be a list of {what}, got {value!r}")
    if not all(isinstance(item, str) for item in items):
        raise SettingsError(f"{where}: {name} must be a list of {what}, got {value!r}")
    return tuple(item.strip() for item in items)


def _check_shopify_shops(settings: Settings, where: str) -> None:
    seen: set[str] = set()
    for shop in settings.shopify_shops:
        if not SHOPIFY_SHOP_DOMAIN.fullmatch(shop):
            raise SettingsError(
                f"{where}: shopify_shops: {shop!r} is not a shop's myshopify.com domain "
                "(such as brand.myshopify.com, as Shopify sends it in X-Shopify-Shop-Domain)"
            )
        if shop in seen:
            raise SettingsError(f"{where}: shopify_shops lists {shop} twice")
        seen.add(shop)


__all__ = ["SHOPIFY_SHOP_DOMAIN", "Settings", "SettingsError", "load_settings"]
