"""Commerce: orders with their lines, refunds and cancellations, shipments with one status
taxonomy and their scans, and returns, projected from the event log (docs/commerce.md).
Carts, the catalog and the tracking page come in later slices. Other packages use only
what this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.commerce import back_in_stock, people, reviews, statuses
from parcours.commerce.actions import LineRefund, OrderNotFound, RefundRefused, refund
from parcours.commerce.back_in_stock import BackInStockError, StockRequest, stock_requests
from parcours.commerce.carts import Cart, CartItem, cart_of, carts_of
from parcours.commerce.catalog import (
    CatalogImported,
    CatalogImportError,
    Product,
    Variant,
    import_catalog,
    import_events,
    product,
    products,
    stock_of,
    variant,
)
from parcours.commerce.projection import Commerce
from parcours.commerce.queries import (
    Order,
    OrderLine,
    Refund,
    RefundLine,
    Return,
    Scan,
    Shipment,
    ShipmentLine,
    order,
    orders_of,
    return_counts,
    return_window_of,
    returns_list,
    returns_of_order,
    returns_of_orders,
    shipment,
    shipment_counts,
    shipments_delayed,
    shipments_latest,
    shipments_of_order,
    shipments_of_orders,
    shipments_stalled,
)
from parcours.commerce.recommendations import (
    ProductViews,
    Recommendation,
    product_views,
    recommendations,
)
from parcours.commerce.replenishment import Replenishment, replenishments_of
from parcours.commerce.returns import ReturnWindow, return_window
from parcours.commerce.reviews import Review, ReviewRefused, review_of_order, review_photo

__all__ = [
    "BackInStockError",
    "Cart",
    "CartItem",
    "CatalogImportError",
    "CatalogImported",
    "Commerce",
    "LineRefund",
    "Order",
    "OrderLine",
    "OrderNotFound",
    "Product",
    "ProductViews",
    "Recommendation",
    "Refund",
    "RefundLine",
    "RefundRefused",
    "Replenishment",
    "Return",
    "ReturnWindow",
    "Review",
    "ReviewRefused",
    "Scan",
    "Shipment",
    "ShipmentLine",
    "StockRequest",
    "Variant",
    "back_in_stock",
    "cart_of",
    "carts_of",
    "import_catalog",
    "import_events",
    "order",
    "orders_of",
    "people",
    "product",
    "product_views",
    "products",
    "recommendations",
    "refund",
    "replenishments_of",
    "return_counts",
    "return_window",
    "return_window_of",
    "returns_list",
    "returns_of_order",
    "returns_of_orders",
    "review_of_order",
    "review_photo",
    "reviews",
    "shipment",
    "shipment_counts",
    "shipments_delayed",
    "shipments_latest",
    "shipments_of_order",
    "shipments_of_orders",
    "shipments_stalled",
    "statuses",
    "stock_of",
    "stock_requests",
    "variant",
]
