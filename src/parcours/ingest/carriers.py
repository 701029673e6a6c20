"""Shipment reports from carriers: the generic carrier webhook (signed with HMAC-SHA256)
and the CSV import, each mapped onto `Shipment Updated` events (docs/commerce.md). Pure
functions, no database: `carrier_http.py` calls them and appends the events."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from parcours.commerce import statuses
from parcours.runtime.clock import parse_iso

SIGNATURE_HEADER = "X-Parcours-Signature"
EVENT = "Shipment Updated"
CSV_REQUIRED = ("shipment_id", "order_id", "status", "occurred_at")
CSV_OPTIONAL = (
    "carrier",
    "tracking_number",
    "tracking_url",
    "location",
    "estimated_delivery_from",
    "estimated_delivery_to",
)
_WORDS = ", ".join(sorted(statuses.WORDS))


class CarrierError(ValueError):
    """A report that cannot be mapped; `field` names what is wrong in it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class CarrierUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """One scan a carrier (or an aggregator) reports about a parcel."""

    event_id: str
    shipment_id: str
    order_id: str
    status: str
    occurred_at: str
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    location: str | None = None
    estimated_delivery_from: str | None = None
    estimated_delivery_to: str | None = None


def verify_signature(secret: str, raw_body: bytes, header_value: str | None) -> bool:
    """`sha256=` and the hex HMAC-SHA256 of the raw body, compared in constant time."""
    if not secret or not header_value:
        return False
    given = header_value.strip().removeprefix("sha256=").strip().lower()
    expected = hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode("ascii", "replace"), expected.encode("ascii"))


def sign(secret: str, raw_body: bytes) -> str:
    """What a carrier puts in X-Parcours-Signature."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def webhook_event(raw_body: bytes) -> dict[str, Any]:
    """The `Shipment Updated` event (Segment spec JSON) of one signed delivery."""
    try:
        update = msgspec.json.decode(raw_body, type=CarrierUpdate)
    except msgspec.ValidationError as exc:
        raise CarrierError(f"the body does not fit: {exc}", "body") from None
    except msgspec.DecodeError as exc:
        raise CarrierError(f"not valid JSON: {exc}", "body") from None
    if not update.event_id.strip():
        raise CarrierError("event_id is required", "event_id")
    return _event(
        f"carrier:{update.event_id.strip()}",
        "carrier",
        {name: getattr(update, name) for name in (*CSV_REQUIRED, *CSV_OPTIONAL)},
    )


def shipments_from_csv(text: str) -> list[dict[str, Any]]:
    """The `Shipment Updated` events of a CSV file of scans (a header line, then one scan
    a line); a bad line refuses the file, naming its number (the header is line 1)."""
    reader = csv.DictReader(io.StringIO(text))
    check_csv_header(reader.fieldnames or [])
    found: list[dict[str, Any]] = []
    for number, row in enumerate(reader, start=2):
        try:
            found.append(
                shipment_from_row({name: row.get(name) for name in reader.fieldnames or []})
            )
        except CarrierError as exc:
            raise CarrierError(f"line {number}: {exc}", exc.field) from None
    return found


def check_csv_header(names: Sequence[str]) -> None:
    """Refuse a header without the required columns (it is line 1)."""
    missing = [name for name in CSV_REQUIRED if name not in names]
    if missing:
        raise CarrierError(f"line 1: the header lacks {', '.join(missing)}", "header")


def shipment_from_row(row: Mapping[str, str | None]) -> dict[str, Any]:
    """The `Shipment Updated` event of one line of the CSV file, read as a dict; its
    message id is made of the shipment, the status and the time."""
    values = {name: (value or "").strip() or None for name, value in row.items()}
    for name in CSV_REQUIRED:
        if not values.get(name):
            raise CarrierError(f"{name} is required", name)
    key = "|".join(str(values[name]) for name in ("shipment_id", "status", "occurred_at"))
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return _event(f"csv:{digest}", "import", values)


def _event(message_id: str, origin: str, values: dict[str, Any]) -> dict[str, Any]:
    status = str(values["status"]).strip().lower()
    if not statuses.is_known(status):
        raise CarrierError(f"status {status!r} is not one of: {_WORDS}", "status")
    properties: dict[str, Any] = {"status": status}
    for name in ("shipment_id", "order_id", *CSV_OPTIONAL):
        value = values.get(name)
        if value is not None and str(value).strip():
            properties[name] = str(value).strip()
    for name in ("occurred_at", "estimated_delivery_from", "estimated_delivery_to"):
        value = values.get(name)
        if value:
            try:
                parse_iso(str(value))
            except ValueError:
                raise CarrierError(
                    f"{name} must be an ISO 8601 time, got {str(value)[:40]!r}", name
                ) from None
    properties.pop("occurred_at", None)
    return {
        "type": "track",
        "event": EVENT,
        "messageId": message_id,
        "timestamp": values["occurred_at"],
        "properties": properties,
        # no person named: the order's customer is found by its id (customers.projection)
        "context": {"source": origin},
    }
