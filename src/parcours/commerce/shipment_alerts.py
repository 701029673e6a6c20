"""What Parcours itself notices of a parcel on its way (issue 21, docs/commerce.md
"Stalled and delayed parcels"): `Shipment Stalled` when no report came for the stall delay,
`Shipment Delayed` when a report moves the estimated delivery later, `Shipment Overdue`
when the estimated delivery passes and the parcel is not delivered.

Each parcel on its way, of a known customer, has one stall job under its unique key, moved
at every report to the report plus the delay, and, with an estimate, one overdue job at
the estimate's end, moved with the estimate; both are cancelled when the parcel reaches a
final status (as carts' abandonment job). The three events are source `system` and carry
`detected_by: parcours`: a carrier's own `delayed` report (Shopify's `Shipment Delayed`)
never does, and the projection takes these for no report of a parcel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from parcours.commerce import statuses
from parcours.commerce.tables import commerce_shipments
from parcours.log import Event, Reactions, append_events, internal_event, queries
from parcours.runtime.clock import iso
from parcours.runtime.queue import Job, cancel, enqueue
from parcours.runtime.settings import SHIPMENT_STALLED_AFTER_HOURS

STALLED_EVENT = "Shipment Stalled"
DELAYED_EVENT = "Shipment Delayed"
OVERDUE_EVENT = "Shipment Overdue"
DETECTED_BY = "parcours"  # the property `detected_by` of the three
JOB = "commerce.shipment_stalled"
OVERDUE_JOB = "commerce.shipment_overdue"
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class ShipmentRules:
    """How long a parcel on its way may stay without a report before it is stalled
    (`shipment_stalled_after_hours`)."""

    stalled_after_ms: int = SHIPMENT_STALLED_AFTER_HOURS * HOUR_MS


def emitted(event: Event) -> bool:
    """One of the events of this module (not a carrier's report)."""
    return (
        event.source == "system"
        and event.name in (STALLED_EVENT, DELAYED_EVENT, OVERDUE_EVENT)
        and event.properties.get("detected_by") == DETECTED_BY
    )


def job_key(shipment_id: str) -> str:
    return f"commerce:shipment-stalled:{shipment_id}"


def overdue_key(shipment_id: str) -> str:
    return f"commerce:shipment-overdue:{shipment_id}"


def watch(
    conn: Connection,
    shipment_id: str,
    customer: int | None,
    status: str,
    was_final: bool | None,
    estimated_to: int | None,
    now: int,
    rules: ShipmentRules,
) -> None:
    """After a report of a parcel: while it is on its way (of a known customer), its
    stall job at this report plus the delay (replacing the one before) and, when it has
    an estimate, its overdue job at the estimate's end; once final, both cancelled.
    `was_final` is None for a parcel first seen (final then: no job)."""
    if status in statuses.FINAL:
        if was_final is False:
            cancel(conn, job_key(shipment_id))
            cancel(conn, overdue_key(shipment_id))
        return
    if customer is not None:
        _arm(conn, shipment_id, customer, now + rules.stalled_after_ms, now)
        if estimated_to is not None:
            _arm_overdue(conn, shipment_id, customer, estimated_to, now)


def watch_from_last_report(
    conn: Connection,
    parcels: Sequence[tuple[str, int, int | None]],
    customer: int,
    now: int,
    rules: ShipmentRules,
) -> None:
    """Parcels on their way whose customer became known after their last report (their
    order came later), each with that report's time and its estimate's end: watched from
    it, as if the customer had been known then (a parcel already silent for the delay, or
    past its estimate, is announced at once)."""
    for shipment_id, last_report, estimated_to in parcels:
        _arm(conn, shipment_id, customer, last_report + rules.stalled_after_ms, now)
        if estimated_to is not None:
            _arm_overdue(conn, shipment_id, customer, estimated_to, now)


def _arm_overdue(conn: Connection, shipment_id: str, customer: int, due: int, now: int) -> None:
    """The parcel's one overdue job, at the end of its estimate (replacing the one before)."""
    _arm(conn, shipment_id, customer, due, now, kind=OVERDUE_JOB)


def _arm(
    conn: Connection, shipment_id: str, customer: int, due: int, now: int, *, kind: str = JOB
) -> None:
    """The parcel's one job of this kind (its stall job, unless told), due then (replacing
    the one before)."""
    enqueue(
        conn,
        kind,
        {"shipment": shipment_id},
        run_at=due,
        now=now,
        unique_key=job_key(shipment_id) if kind == JOB else overdue_key(shipment_id),
        customer_id=customer,
    )


def stalled(
    conn: Connection, job: Job, now: int, rules: ShipmentRules, reactions: Reactions
) -> None:
    """A parcel's stall job is due: unless a report came since (then it waits again) or
    the parcel is final or gone (erased), `Shipment Stalled` is appended, once per silence
    (its message id is the parcel's and its last report's time)."""
    shipment_id = str(job.payload.get("shipment", ""))
    row = conn.execute(
        select(commerce_shipments).where(commerce_shipments.c.shipment_id == shipment_id)
    ).first()
    if row is None or row.customer_id is None or row.status in statuses.FINAL:
        return
    last = int(row.updated_at)
    due = last + rules.stalled_after_ms
    if due > now:  # a report the job was not moved for (it always is: a safeguard)
        _arm(conn, shipment_id, int(row.customer_id), due, now)
        return
    message_id = f"commerce:shipment-stalled:{shipment_id}:{last}"
    if queries.stored_message_ids(conn, [message_id]):
        return  # this silence was announced (the job ran twice)
    props = _about(shipment_id, row._asdict())
    props.update(
        last_status=row.status,
        last_report_at=iso(last),
        hours_silent=(now - last) // HOUR_MS,
        stalled_after_hours=rules.stalled_after_ms // HOUR_MS,
        stall_key=f"{shipment_id}:{last}",  # a journey's entry key: one run per silence
    )
    event = internal_event(int(row.customer_id), STALLED_EVENT, props, now, message_id, "system")
    append_events(conn, [[event]], now, reactions)


def overdue(conn: Connection, job: Job, now: int, reactions: Reactions) -> None:
    """A parcel's overdue job is due: unless it is final or gone (erased) or its estimate
    moved later since (then it waits for that), `Shipment Overdue` is appended, once per
    estimate (its message id is the parcel's and the estimate's end)."""
    shipment_id = str(job.payload.get("shipment", ""))
    row = conn.execute(
        select(commerce_shipments).where(commerce_shipments.c.shipment_id == shipment_id)
    ).first()
    if (
        row is None
        or row.customer_id is None
        or row.status in statuses.FINAL
        or row.estimated_to is None
    ):
        return
    expected = int(row.estimated_to)
    if expected > now:  # moved later without the job (it always is: a safeguard)
        _arm_overdue(conn, shipment_id, int(row.customer_id), expected, now)
        return
    message_id = f"commerce:shipment-overdue:{shipment_id}:{expected}"
    if queries.stored_message_ids(conn, [message_id]):
        return  # this estimate's passing was announced (the job ran twice)
    props = _about(shipment_id, row._asdict())
    props.update(
        reason="estimate_passed",
        overdue_key=f"{shipment_id}:{expected}",  # a journey's entry key: one run each
        last_status=row.status,
        estimated_delivery_to=iso(expected),
        hours_overdue=(now - expected) // HOUR_MS,
    )
    if row.estimated_from is not None:
        props["estimated_delivery_from"] = iso(int(row.estimated_from))
    event = internal_event(int(row.customer_id), OVERDUE_EVENT, props, now, message_id, "system")
    append_events(conn, [[event]], now, reactions)


def slipped(
    customer: int | None,
    shipment_id: str,
    status: str,
    before: tuple[int | None, int | None],
    after: tuple[int | None, int | None],
    shipment: dict[str, Any],
    report: Event,
    now: int,
) -> Event | None:
    """`Shipment Delayed` when a report moved the estimated delivery of a parcel still on
    its way later: the end of its window (a day's estimate is a window of one time) after
    the end before. None otherwise (no estimate before, the same or an earlier one, a
    final parcel, no customer). Its message id is the parcel's and the new estimate's:
    once per slip."""
    old_from, old_to = before
    new_from, new_to = after
    if customer is None or status in statuses.FINAL or old_to is None or new_to is None:
        return None
    if new_to <= old_to:
        return None
    props = _about(shipment_id, shipment)
    props.update(
        reason="estimate_slipped",
        delay_key=f"{shipment_id}:{new_to}",  # a journey's entry key: one run per slip
        last_status=status,
        previous_estimated_delivery_to=iso(old_to),
        estimated_delivery_to=iso(new_to),
        delayed_hours=(new_to - old_to) // HOUR_MS,
    )
    if old_from is not None:
        props["previous_estimated_delivery_from"] = iso(old_from)
    if new_from is not None:
        props["estimated_delivery_from"] = iso(new_from)
    return internal_event(
        customer,
        DELAYED_EVENT,
        props,
        report.occurred_at,
        f"commerce:shipment-delayed:{shipment_id}:{new_to}",
        "system",
        received_at=now,
    )


def _about(shipment_id: str, shipment: dict[str, Any]) -> dict[str, Any]:
    """What both events say of the parcel: its ids, carrier and tracking link."""
    props: dict[str, Any] = {"shipment_id": shipment_id, "detected_by": DETECTED_BY}
    for name in ("order_id", "carrier", "tracking_number", "tracking_url"):
        if (value := shipment.get(name)) is not None:
            props[name] = value
    return props
