"""The brand as its owner sets it in the console (docs/console.md, "Settings"): its name,
logo, colours, sector, the languages offered to customers, its time zone, the send-time
rules, and the versions of the words that ask for consent; each layered over the
configuration file's values. Other packages use only what this face lists."""

from parcours.brand.consent import (
    SHIPPED_VERSION,
    ConsentWording,
    consent_wording,
    save_consent_wording,
)
from parcours.brand.logo import LARGEST_LOGO, logo_file, media_type_of, remove_logo, save_logo
from parcours.brand.settings import (
    MIN_CONTRAST,
    SEND_TIME_TTL_S,
    BrandError,
    BrandSettings,
    Changes,
    Defaults,
    Logo,
    LogoFile,
    SendTime,
    check,
    contrast,
    current,
    save,
    send_time,
)

__all__ = [
    "LARGEST_LOGO",
    "MIN_CONTRAST",
    "SEND_TIME_TTL_S",
    "SHIPPED_VERSION",
    "BrandError",
    "BrandSettings",
    "Changes",
    "ConsentWording",
    "Defaults",
    "Logo",
    "LogoFile",
    "SendTime",
    "check",
    "consent_wording",
    "contrast",
    "current",
    "logo_file",
    "media_type_of",
    "remove_logo",
    "save",
    "save_consent_wording",
    "save_logo",
    "send_time",
]
