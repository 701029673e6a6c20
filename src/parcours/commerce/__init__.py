"""Commerce: orders with their lines, refunds and cancellations, shipments with one status
taxonomy and their scans, and returns, projected from the event log (docs/commerce.md).
Carts, the catalog and the tracking page come in later slices. Other packages use only
what this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.commerce import people, statuses
from parcours.commerce.actions import LineRefund, OrderNotFound, RefundRefused, refund
from parcours.commerce.projection import Commerce
from parcours.commerce.queries import (
    Order,
    OrderLine,
    Refund,
    RefundLine,
    Return,
    Scan,
    Shipment,
    order,
    orders_of,
    returns_of_order,
    shipment,
    shipments_of_order,
)
from parcours.commerce.returns import ReturnWindow, return_window

__all__ = [
    "Commerce",
    "LineRefund",
    "Order",
    "OrderLine",
    "OrderNotFound",
    "Refund",
    "RefundLine",
    "RefundRefused",
    "Return",
    "ReturnWindow",
    "Scan",
    "Shipment",
    "order",
    "orders_of",
    "people",
    "refund",
    "return_window",
    "returns_of_order",
    "shipment",
    "shipments_of_order",
    "statuses",
]
