"""Returns' stages and the return window (docs/commerce.md, "The return window")."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from parcours import brand

RETURN_STAGES = ("requested", "label_sent", "received", "refunded")
RETURN_EVENTS = {
    "Return Requested": "requested",
    "Return Label Sent": "label_sent",
    "Return Received": "received",
    "Return Refunded": "refunded",
}
# The EU's withdrawal period for distance sales: the least a brand there gives.
DEFAULT_WINDOW_DAYS = 14
# Sectors whose custom is a longer window than the law's (the names of messaging's sector
# presets): clothes tried on at home, furniture and decoration seen in place, children's
# things, designer goods.
SECTOR_WINDOW_DAYS = {"fashion": 30, "home": 30, "children": 30, "luxury": 30}


@dataclass(frozen=True)
class ReturnWindow:
    """How many days after delivery a return may be requested, and why: `setting`
    (return_window_days), `sector` (its custom) or `default` (the law's)."""

    days: int
    reason: str
    sector: str


def return_window(conn: Connection, setting_days: int, configured_sector: str) -> ReturnWindow:
    """The brand's return window: the setting when set, else its sector's custom (the
    sector set on the Settings page, else the configured one), else 14 days."""
    stored = brand.send_time(conn)
    if stored is not None and stored.sector is not None:
        sector = stored.sector  # set on the Settings page ("" when it took none)
    else:
        sector = configured_sector
    if setting_days > 0:
        return ReturnWindow(setting_days, "setting", sector)
    if sector in SECTOR_WINDOW_DAYS:
        return ReturnWindow(SECTOR_WINDOW_DAYS[sector], "sector", sector)
    return ReturnWindow(DEFAULT_WINDOW_DAYS, "default", sector)
