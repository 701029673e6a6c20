"""The demo's first run: the brand (name, colours, logo, sector, languages), its catalog,
its customers with their consents, and every ready-made journey approved and live. Each
through the door the console or the shop would take: the brand's settings saved, the
events appended through the writer (each with a message id of its own, so a second run
stores nothing again), the journeys drafted, submitted, approved and put live."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from parcours import brand
from parcours.demo.images import logo_png
from parcours.demo.people import Person
from parcours.demo.simulator import Doors, subscribe_to_push
from parcours.demo.stories import PUSH_CONSENT, push_subscription
from parcours.demo.world import DAY, World
from parcours.journeys import LifecycleError, ready_made, versions
from parcours.log import Event
from parcours.messaging import SECTOR_PRESETS
from parcours.runtime.clock import iso
from parcours.tracking import parse_event

if TYPE_CHECKING:
    from parcours.services import Services

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

BRAND_LANGUAGE = "fr"  # the fictional brands are French, and sell in France and Britain
BRAND_TIMEZONE = "Europe/Paris"
# Who drafted the journeys and who approved them, as their versions record it: the demo
# itself, named as such (approval asks for a second name).
EDITOR = "Parcours demo (ready-made gallery)"
APPROVER = "Parcours demo (approved automatically)"
CHUNK = 500
PUSH_SHARE = 0.35  # of the seeded customers, subscribed to the site's notifications


def seed(services: Services, world: World) -> int:
    """Seed the demo; how many events were stored (0 when all were there already)."""
    now = services.clock.now_ms()
    _brand(services, world, now)
    stored = _append(services, _catalog(world, now), now)
    stored += _append(services, [_profile(world, person, now) for person in world.customers], now)
    _push_subscriptions(services, world, now)
    live = put_journeys_live(services, now)
    log.info("demo seeded: %s events, %s journeys put live", stored, live)
    return stored


def _brand(services: Services, world: World, now: int) -> None:
    sector = world.sector
    settings = services.settings
    defaults = brand.Defaults(
        settings.brand_name, settings.sector, settings.brand_timezone, settings.brand_locale
    )
    changes = brand.Changes(
        name=sector.brand,
        primary=sector.primary,
        accent=sector.accent,
        sector=sector.preset,
        languages=("en", "fr"),
        timezone=BRAND_TIMEZONE,
    )
    brand.save(services.db, defaults, changes, now, by="Parcours demo", sectors=SECTOR_PRESETS)
    brand.save_logo(services.db, logo_png(sector.primary, sector.accent), now)


def _catalog(world: World, now: int) -> list[dict[str, Any]]:
    """A `Product Updated` per product, as the shop's catalog reports it: its names in
    both languages (the brand's in `name`), category, images, price, stock per variant."""
    sector = world.sector
    documents: list[dict[str, Any]] = []
    for number, item in enumerate(world.catalog):
        spec = item.spec
        sizes = spec.sizes or (None,)
        variants = [
            {
                "variant_id": item.variant_id(size),
                "sku": item.sku(size),
                "variant": size,
                "prices": {"EUR": str(item.price)},
                # One product of the catalog is sold out from the start.
                "stock": 0 if number == len(world.catalog) - 1 else 12 + (number * 7) % 40,
            }
            for size in sizes
        ]
        properties: dict[str, Any] = {
            "product_id": item.product_id,
            "name": sector.name(spec, BRAND_LANGUAGE),
            "names": {language: sector.name(spec, language) for language in ("en", "fr")},
            "category": sector.category(spec, BRAND_LANGUAGE),
            "brand": sector.brand,
            "url": item.url,
            "image_url": item.image,
            "images": [item.image],
            "consumable": spec.consumable,
            "variants": variants,
        }
        if spec.usage_days:
            properties["usage_days"] = spec.usage_days
        documents.append(
            {
                "type": "track",
                "event": "Product Updated",
                "messageId": f"demo-{world.seed}-product-{item.product_id}",
                "timestamp": iso(now - 30 * DAY),
                "properties": properties,
            }
        )
    return documents


def refresh_pictures(services: Services, world: World) -> int:
    """The catalog's pictures at the address they are served from now (the demo started
    again on another host or port), as the shop's catalog reports a change."""
    now = services.clock.now_ms()
    documents = [
        {
            "type": "track",
            "event": "Product Updated",
            "messageId": f"demo-{world.seed}-pictures-{item.product_id}-{now}",
            "timestamp": iso(now),
            "properties": {
                "product_id": item.product_id,
                "image_url": item.image,
                "images": [item.image],
            },
        }
        for item in world.catalog
    ]
    return _append(services, documents, now)


def _profile(world: World, person: Person, now: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": person.user_id,
        "messageId": f"demo-{world.seed}-person-{person.number}",
        "timestamp": iso(now - person.joined_days_ago * DAY),
        "context": person.context(),
        "traits": person.traits(),
    }


def _push_subscriptions(services: Services, world: World, now: int) -> int:
    """About a third of the customers accepted the shop's notifications prompt: the site
    recorded their consent, and its script gave their browser's subscription
    (`POST /v1/push/subscribe`)."""
    forms, consents = [], []
    for person in world.customers:
        form = push_subscription(world.seed, person, PUSH_SHARE)
        if form is None:
            continue
        forms.append({**form, "messageId": f"demo-{world.seed}-push-{person.number}"})
        consents.append(
            {
                "type": "track",
                "event": "Consent Updated",
                "userId": person.user_id,
                "messageId": f"demo-{world.seed}-push-consent-{person.number}",
                "timestamp": iso(now - person.joined_days_ago * DAY + 60_000),
                "context": person.context(),
                "properties": PUSH_CONSENT,
            }
        )
    _append(services, consents, now)
    doors = Doors(services.db, services.writer, services.reactions)
    return subscribe_to_push(doors, forms, now)


def _append(services: Services, documents: list[dict[str, Any]], now: int) -> int:
    events: list[Event] = [
        parse_event(
            _encode(document),
            source="api",
            received_at=now,
            identity_required="userId" in document,
        )
        for document in documents
    ]
    stored = 0
    for first in range(0, len(events), CHUNK):
        stored += services.writer.append_sync(events[first : first + CHUNK]).stored
    return stored


def put_journeys_live(services: Services, now: int) -> int:
    """Every ready-made journey not defined yet, drafted, submitted, approved and put live
    as the console does it, by the demo under two names; how many went live."""
    with services.db.read() as conn:
        present = {version.journey_id for version in versions.versions(conn)}
    live = 0
    for item in ready_made():
        if item.journey_id in present:
            continue
        try:
            versions.publish(services.db, item.source, EDITOR, APPROVER, now)
        except LifecycleError as exc:  # a journey the gallery ships that cannot go live
            log.warning("the demo could not put %s live: %s", item.journey_id, exc)
            continue
        live += 1
    return live
