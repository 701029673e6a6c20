"""A message's words: what its template sees (docs/channels.md, "Templates"), the links it
carries, and its rendering in the customer's language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from parcours import brand, commerce
from parcours.customers import profiles as customers
from parcours.messaging import templates as message_templates
from parcours.messaging.links import Links
from parcours.runtime.clock import Clock, SystemClock
from parcours.runtime.documents import JsonObject
from parcours.runtime.settings import RECOMMENDATION_WEEKS

# The events whose properties are a cart (`cart` in a template): the shopper's, and
# commerce's `Cart Abandoned`, which names the cart's items, total and recovery link as
# they do (docs/commerce.md).
CART_EVENTS = {"Checkout Started", "Cart Viewed", "Product Added", "Cart Updated", "Cart Abandoned"}


@dataclass(frozen=True)
class Brand:
    name: str
    url: str
    locale: str
    sector: str


@dataclass(frozen=True)
class PreviewContext:
    """What a template sees in a preview, for a real customer: `values`, the document the
    template engine reads (the customer's traits and the event's properties, free-form),
    and the customer's language as their traits say (None when they say none)."""

    values: JsonObject
    locale: str | None


@dataclass(frozen=True)
class Renderer:
    brand: Brand
    links: Links
    clock: Clock = field(default_factory=SystemClock)  # what `recommendations()` counts from
    recommendation_weeks: int = RECOMMENDATION_WEEKS  # the setting: best sellers' window

    def render(
        self, conn: Connection, row: Any, detail: dict[str, Any], links: dict[str, str]
    ) -> message_templates.Rendered:
        """An outbox row's template rendered for its customer and channel; TemplateProblem
        names what is missing."""
        template = message_templates.get(conn, row.template)
        context = self.context(
            conn,
            row.customer_id,
            row.channel,
            row.purpose,
            detail.get("event") or {},
            links,
        )
        return message_templates.render(
            template, row.channel, context, _locale(context), self.brand.locale
        )

    def context(
        self,
        conn: Connection,
        customer_id: int,
        channel: str,
        purpose: str,
        event: dict[str, Any],
        links: dict[str, str],
    ) -> dict[str, Any]:
        """What a template sees (docs/channels.md, "Templates")."""
        traits, computed = customers.traits_view(conn, customer_id)
        if "first_name" not in traits and isinstance(traits.get("firstName"), str):
            traits["first_name"] = traits["firstName"]
        if "last_name" not in traits and isinstance(traits.get("lastName"), str):
            traits["last_name"] = traits["lastName"]
        customer = {**computed, **traits, "id": f"cus_{customer_id}"}
        properties = event.get("properties") or {}
        name = event.get("event") or ""
        order = properties if name.startswith("Order") else None
        stored = brand.send_time(conn)  # the name set on the Settings page, if one was
        brand_name = stored.name if stored is not None and stored.name else self.brand.name
        return {
            "customer": customer,
            "event": {**event, "event": name, "properties": properties},
            "cart": properties if name in CART_EVENTS else None,
            "order": order,
            "brand": {"name": brand_name, "url": self.brand.url},
            "links": {
                "shop": self.brand.url,
                **self.links.for_order(order),
                **self.links.about_order(properties),  # `tracking`: the order's page
                **links,
            },
            "message": {"channel": channel, "purpose": purpose},
            "recommendations": _recommender(
                conn,
                customer_id,
                properties.get("order_id"),
                self.clock.now_ms(),
                self.recommendation_weeks,
            ),
        }

    def preview_context(
        self, conn: Connection, customer_id: int, channel: str, event: dict[str, Any]
    ) -> PreviewContext:
        """The context of a preview: a real customer, a sample unsubscribe link."""
        links = {
            "unsubscribe": self.links.unsubscribe(0, customer_id, channel),
            "preferences": self.links.preferences(0),
        }
        context = self.context(conn, customer_id, channel, "marketing", event, links)
        return PreviewContext(context, _locale(context))

    def links_of(self, row: Any) -> dict[str, str]:
        """Marketing messages carry an unsubscribe link (and email its one-click headers)
        and a link to the preference centre; transactional ones do not, since they cannot
        be unsubscribed from. A test send shows the links as the customer would see them."""
        if row.purpose not in ("marketing", "test"):
            return {}
        customer = 0 if row.purpose == "test" else row.customer_id  # 0: a link that does nothing
        return {
            "unsubscribe": self.links.unsubscribe(row.id, customer, row.channel),
            "preferences": self.links.preferences(customer),
        }


def _recommender(
    conn: Connection, customer_id: int, order_id: Any, now: int, weeks: int
) -> Callable[..., list[dict[str, Any]]]:
    """`recommendations(limit=4)` in a template: commerce's products for this customer
    (and the event's order, when it names one), each a mapping of `product_id`, `name`,
    `url`, `image_url`, `category`, `price` (exact decimal text, for `money`), `currency`
    and `reason` (replenish, bought_together, viewed, best_seller). Read when the
    template calls it, once per limit asked."""
    for_order = str(order_id) if isinstance(order_id, str | int) and order_id != "" else None
    asked: dict[int, list[dict[str, Any]]] = {}

    def recommendations(limit: int = 4) -> list[dict[str, Any]]:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError("recommendations(limit): the limit is a whole number, 1 to 12")
        if limit not in asked:
            found = commerce.recommendations(
                conn, customer_id, now=now, for_order=for_order, limit=limit, weeks=weeks
            )
            asked[limit] = [
                {
                    "product_id": item.product_id,
                    "name": item.name,
                    "url": item.url,
                    "image_url": item.image_url,
                    "category": item.category,
                    "price": None if item.price is None else str(item.price),
                    "currency": item.currency,
                    "reason": item.reason,
                }
                for item in found
            ]
        return asked[limit]

    return recommendations


def _locale(context: dict[str, Any]) -> str | None:
    """The customer's language in a template's context, when their traits give one."""
    locale = context["customer"].get("locale")
    return locale if isinstance(locale, str) else None


__all__ = ["CART_EVENTS", "Brand", "PreviewContext", "Renderer"]
