"""Settings from the environment (`PARCOURS_*`) and an optional `parcours.toml`, checked."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import phonenumbers

ENV_PREFIX = "PARCOURS_"


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
    policies_file: str = ""
    ingest_batch_events: int = 1000
    ingest_writers: int = 0  # 0: 1 on SQLite, 4 on PostgreSQL
    http_workers: int = 1
    # serve on SQLite: the writer in a process of its own (with http_workers = 1; POSIX)
    writer_process: bool = True
    log_level: str = "info"
    brand_name: str = "Parcours demo shop"
    brand_url: str = "https://shop.example.com"
    brand_locale: str = "en"
    sector: str = ""
    public_url: str = ""  # where customers reach Parcours' links; default http://host:port
    secret_key: str = ""  # signs links; made and kept in the database when empty
    channels: dict[str, Any] = field(default_factory=dict, compare=False)
    delivery_lease_seconds: int = 300  # a send not recorded by then is made again, same key
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

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with the given values (None means keep), checked again."""
        kept = {k: v for k, v in overrides.items() if v is not None}
        updated = replace(self, **kept)
        _check(updated, "command line")
        return updated


_FIELD_TYPES: dict[str, type] = {
    "data_dir": Path,
    "database_url": str,
    "host": str,
    "port": int,
    "write_key": str,
    "admin_key": str,
    "default_region": str,
    "shopify_webhook_secret": str,
    "policies_file": str,
    "ingest_batch_events": int,
    "ingest_writers": int,
    "http_workers": int,
    "writer_process": bool,
    "log_level": str,
    "brand_name": str,
    "brand_url": str,
    "brand_locale": str,
    "sector": str,
    "public_url": str,
    "secret_key": str,
    "channels": dict,
    "delivery_lease_seconds": int,
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
            values[key] = _convert(key, value, f"{path}")
        sources.append(str(path))
    for name in _FIELD_TYPES:
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _convert(name, env[env_name], f"environment variable {env_name}")
    settings = Settings(**values, extra_sources=tuple(sources))
    _check(settings, "settings")
    return settings


def _convert(name: str, value: Any, where: str) -> Any:
    if name not in _FIELD_TYPES:
        known = ", ".join(sorted(_FIELD_TYPES))
        raise SettingsError(f"{where}: unknown setting {name!r} (known: {known})")
    wanted = _FIELD_TYPES[name]
    if wanted is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise SettingsError(f"{where}: {name} must be true or false, got {value!r}")
    if wanted is int:
        if isinstance(value, bool):
            raise SettingsError(f"{where}: {name} must be a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: {name} must be a whole number, got {value!r}") from None
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
    if not 1 <= settings.http_workers <= 64:
        raise SettingsError(
            f"{where}: http_workers must be between 1 and 64, got {settings.http_workers}"
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
    if not 1 <= settings.delivery_lease_seconds <= 86_400:
        raise SettingsError(
            f"{where}: delivery_lease_seconds must be between 1 and 86400, "
            f"got {settings.delivery_lease_seconds}"
        )
    if settings.brand_locale not in ("en", "fr"):
        raise SettingsError(
            f"{where}: brand_locale must be en or fr, got {settings.brand_locale!r}"
        )
    if settings.public_url and not settings.public_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"{where}: public_url must start with http:// or https://, got {settings.public_url!r}"
        )
    if settings.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise SettingsError(
            f"{where}: log_level must be debug, info, warning or error, got {settings.log_level!r}"
        )


__all__ = ["Settings", "SettingsError", "load_settings"]
