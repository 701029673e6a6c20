"""The tables the commerce package owns (docs/commerce.md): orders with their lines and
refunds, shipments with their scans, and returns. Money is exact decimal text, times are
milliseconds. Every row carries the customer (None while a shipment's, refund's or
return's order is unknown and the event named nobody)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, Table, Text, text

from parcours.runtime.db import BigId, metadata

commerce_orders = Table(
    "commerce_orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("source", Text, nullable=False),  # site | shopify | import | admin | ...
    Column("number", Text, nullable=True),  # what the shop shows (#1001)
    Column("status", Text, nullable=False),  # placed | cancelled
    Column("currency", Text, nullable=False),
    Column("subtotal", Text, nullable=True),
    Column("discount", Text, nullable=True),
    Column("coupon", Text, nullable=True),
    Column("shipping", Text, nullable=True),
    Column("tax", Text, nullable=True),
    Column("total", Text, nullable=False),
    Column("refunded", Text, nullable=False),  # never above total
    Column("placed_at", BigInteger, nullable=False),
    Column("cancelled_at", BigInteger, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_commerce_orders_customer", commerce_orders.c.customer_id, commerce_orders.c.placed_at)

commerce_order_lines = Table(
    "commerce_order_lines",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("product_id", Text, nullable=True),
    Column("variant_id", Text, nullable=True),
    Column("sku", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("image_url", Text, nullable=True),
    Column("price", Text, nullable=False),  # one unit's
    Column("quantity", Integer, nullable=False),
    Column("refunded_quantity", Integer, nullable=False),
    Column("refunded_amount", Text, nullable=False),
)
Index("ix_commerce_order_lines_customer", commerce_order_lines.c.customer_id)

commerce_refunds = Table(
    "commerce_refunds",
    metadata,
    Column("refund_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("source", Text, nullable=False),
    Column("reported", Text, nullable=False),  # the amount the event gave
    Column("amount", Text, nullable=False),  # what it counted: never past what was paid
    Column("currency", Text, nullable=True),
    Column("lines", Text, nullable=False),  # JSON: the products it named
    Column("applied", Boolean, nullable=False),  # false while its order is unknown
    Column("occurred_at", BigInteger, nullable=False),
)
Index("ix_commerce_refunds_order", commerce_refunds.c.order_id)
Index("ix_commerce_refunds_customer", commerce_refunds.c.customer_id)

# An `Order Cancelled` of an order not known yet (webhooks come in any order): kept until
# the order comes, then applied to it and gone (migration 0042).
commerce_cancellations = Table(
    "commerce_cancellations",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    Column("occurred_at", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)
Index("ix_commerce_cancellations_customer", commerce_cancellations.c.customer_id)

commerce_shipments = Table(
    "commerce_shipments",
    metadata,
    Column("shipment_id", Text, primary_key=True),
    Column("order_id", Text, nullable=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("carrier", Text, nullable=True),
    Column("tracking_number", Text, nullable=True),
    Column("tracking_url", Text, nullable=True),
    Column("status", Text, nullable=False),  # the taxonomy (commerce/statuses.py)
    Column("progress", Integer, nullable=False),  # the furthest stage's rank
    Column("status_at", BigInteger, nullable=False),
    Column("first_status", Text, nullable=False),
    Column("estimated_from", BigInteger, nullable=True),
    Column("estimated_to", BigInteger, nullable=True),
    Column("estimate_at", BigInteger, nullable=True),  # when the estimate was reported
    # The end of the first estimate recorded: a later estimate past it is a delay, seen
    # before either passes (migration 0041).
    Column("first_estimated_to", BigInteger, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_commerce_shipments_order", commerce_shipments.c.order_id)
Index("ix_commerce_shipments_customer", commerce_shipments.c.customer_id)
# The console's lists of parcels (migration 0031): counts per status and a status's
# latest, the stalled and latest of all, the delayed by their estimate.
Index(
    "ix_commerce_shipments_status_updated",
    commerce_shipments.c.status,
    commerce_shipments.c.updated_at,
)
Index("ix_commerce_shipments_updated", commerce_shipments.c.updated_at)
Index("ix_commerce_shipments_estimated", commerce_shipments.c.estimated_to)
_SLIPPED = text("estimated_to > first_estimated_to")
Index(  # the parcels whose estimate moved later than the first: a lookup, not a scan
    "ix_commerce_shipments_slipped",
    commerce_shipments.c.estimated_to,
    sqlite_where=_SLIPPED,
    postgresql_where=_SLIPPED,
)

commerce_shipment_scans = Table(
    "commerce_shipment_scans",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shipment_id", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("message_id", Text, nullable=False),
    Column("reported", Text, nullable=False),  # the word as it came
    Column("status", Text, nullable=True),  # in the taxonomy; None: no stage
    Column("location", Text, nullable=True),
    Column("source", Text, nullable=False),
    Column("applied", Boolean, nullable=False),  # whether it moved the status
    Column("occurred_at", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)
Index("ix_commerce_shipment_scans_shipment", commerce_shipment_scans.c.shipment_id)
Index("ix_commerce_shipment_scans_customer", commerce_shipment_scans.c.customer_id)
Index(  # the carriers' "delayed" reports, for the delayed parcels' list
    "ix_commerce_shipment_scans_reported",
    commerce_shipment_scans.c.reported,
    commerce_shipment_scans.c.shipment_id,
)

commerce_returns = Table(
    "commerce_returns",
    metadata,
    Column("return_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("status", Text, nullable=False),  # requested | label_sent | received | refunded
    Column("reason", Text, nullable=True),
    Column("requested_at", BigInteger, nullable=True),
    Column("label_sent_at", BigInteger, nullable=True),
    Column("received_at", BigInteger, nullable=True),
    Column("refunded_at", BigInteger, nullable=True),
    Column("window_days", Integer, nullable=True),
    Column("within_window", Boolean, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_commerce_returns_order", commerce_returns.c.order_id)
Index("ix_commerce_returns_customer", commerce_returns.c.customer_id)

# ---- carts and the catalog (migration 0028) ---------------------------------------------

commerce_carts = Table(
    "commerce_carts",
    metadata,
    # `cart:<cart_id>`, `checkout:<checkout_id>`, or `customer:<id>:<message id>` for a
    # cart the events named by no id (commerce/carts.py)
    Column("cart_key", Text, primary_key=True),
    Column("cart_id", Text, nullable=True),
    Column("checkout_id", Text, nullable=True),
    Column("order_id", Text, nullable=True),  # the order its checkout named, or that closed it
    Column("customer_id", BigInteger, nullable=True),
    Column("status", Text, nullable=False),  # open | abandoned | ordered | recovered
    Column("currency", Text, nullable=True),
    Column("value", Text, nullable=False),
    Column("items", Text, nullable=False),  # JSON: the cart's lines
    Column("item_count", Integer, nullable=False),  # the sum of their quantities
    Column("recovery_url", Text, nullable=True),  # checkout_url, else cart_url
    Column("source", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_activity_at", BigInteger, nullable=False),
    Column("checkout_started_at", BigInteger, nullable=True),
    Column("abandoned_at", BigInteger, nullable=True),
    Column("ordered_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_commerce_carts_cart_id", commerce_carts.c.cart_id)
Index("ix_commerce_carts_checkout_id", commerce_carts.c.checkout_id)
Index("ix_commerce_carts_order_id", commerce_carts.c.order_id)
Index("ix_commerce_carts_customer", commerce_carts.c.customer_id, commerce_carts.c.status)
# The console's page of carts (migration 0039): the latest active, of all or of a status,
# a page at a time; the carts abandoned over a period, counted per status.
Index("ix_commerce_carts_activity", commerce_carts.c.last_activity_at, commerce_carts.c.cart_key)
Index(
    "ix_commerce_carts_status_activity",
    commerce_carts.c.status,
    commerce_carts.c.last_activity_at,
    commerce_carts.c.cart_key,
)
Index("ix_commerce_carts_abandoned", commerce_carts.c.status, commerce_carts.c.abandoned_at)

commerce_products = Table(
    "commerce_products",
    metadata,
    Column("product_id", Text, primary_key=True),
    Column("name", Text, nullable=True),
    Column("description", Text, nullable=True),
    Column("category", Text, nullable=True),
    Column("brand", Text, nullable=True),
    Column("url", Text, nullable=True),
    Column("image_url", Text, nullable=True),
    Column("images", Text, nullable=False),  # JSON: its image links, the main one first
    Column("consumable", Boolean, nullable=False),
    Column("usage_days", Integer, nullable=True),  # how long one lasts, for a consumable
    Column("source", Text, nullable=False),  # catalog | shopify | import | seen
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # When the catalog deleted it (`Product Deleted`): withdrawn, its stock 0; None: live.
    Column("deleted_at", BigInteger, nullable=True),
)

commerce_variants = Table(
    "commerce_variants",
    metadata,
    Column("variant_id", Text, primary_key=True),  # a product without variants: its own id
    Column("product_id", Text, nullable=False),
    Column("sku", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("image_url", Text, nullable=True),
    Column("prices", Text, nullable=False),  # JSON: currency -> exact decimal text
    Column("stock", Integer, nullable=True),  # None: not reported
    Column("stock_locations", Text, nullable=True),  # JSON: location -> available (Shopify)
    Column("inventory_item_id", Text, nullable=True),  # Shopify's, for its inventory levels
    Column("stock_at", BigInteger, nullable=True),  # when the stock was last reported
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_commerce_variants_product", commerce_variants.c.product_id)
Index("ix_commerce_variants_sku", commerce_variants.c.sku)
Index("ix_commerce_variants_inventory_item", commerce_variants.c.inventory_item_id)

# ---- replenishment, views and what sells together (migration 0030) ----------------------

commerce_replenishments = Table(
    "commerce_replenishments",
    metadata,
    # One row per customer and consumable product they bought (commerce/replenishment.py).
    Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
    Column("product_id", Text, primary_key=True),
    Column("last_order_id", Text, nullable=False),
    Column("last_ordered_at", BigInteger, nullable=False),
    Column("quantity", Integer, nullable=False),  # units of the last order
    Column("orders", Integer, nullable=False),  # orders of it, cancelled and refunded ones out
    Column("basis", Text, nullable=False),  # usage | own_pace | unknown
    Column("pace_ms", BigInteger, nullable=True),  # how long one unit lasts them
    Column("depletes_at", BigInteger, nullable=True),  # expected to run out
    Column("due_at", BigInteger, nullable=True),  # when `Replenishment Due` is appended
    Column("announced_at", BigInteger, nullable=True),  # when it was, for the last order
    Column("updated_at", BigInteger, nullable=False),
)

commerce_product_views = Table(
    "commerce_product_views",
    metadata,
    # `Product Viewed` counted per customer, product and day (UTC).
    Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
    Column("product_id", Text, primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),  # days since 1970-01-01
    Column("views", Integer, nullable=False),
    Column("last_viewed_at", BigInteger, nullable=False),
)

commerce_bought_together = Table(
    "commerce_bought_together",
    metadata,
    # Orders holding both products, kept both ways (a, b) and (b, a), per week of their
    # placing (weeks since 1970-01-01, migration 0034).
    Column("product_id", Text, primary_key=True),
    Column("week", Integer, primary_key=True, autoincrement=False),
    Column("other_id", Text, primary_key=True),
    Column("orders", Integer, nullable=False),
)
Index("ix_commerce_bought_together_week", commerce_bought_together.c.week)

commerce_product_sales = Table(
    "commerce_product_sales",
    metadata,
    Column("product_id", Text, primary_key=True),
    Column("week", Integer, primary_key=True, autoincrement=False),  # of their placing
    Column("orders", Integer, nullable=False),  # orders holding it
    Column("units", Integer, nullable=False),
)
Index("ix_commerce_product_sales_week", commerce_product_sales.c.week)

commerce_counted_orders = Table(
    "commerce_counted_orders",
    metadata,
    # The orders counted in the two tables above, with what was counted (JSON
    # [[product, units], ...] in their lines' order): a cancellation takes back exactly
    # that, once (migration 0034).
    Column("order_id", Text, primary_key=True),
    Column("week", Integer, nullable=False),
    Column("products", Text, nullable=False),
)
Index("ix_commerce_counted_orders_week", commerce_counted_orders.c.week)
Index("ix_commerce_products_category", commerce_products.c.category)

# ---- back in stock and reviews (migration 0029) -----------------------------------------

commerce_stock_requests = Table(
    "commerce_stock_requests",
    metadata,
    Column("request_id", BigId, primary_key=True, autoincrement=True),  # their arrival order
    Column("customer_id", BigInteger, nullable=False),
    Column("product_id", Text, nullable=False),
    Column("variant_id", Text, nullable=False),
    Column("channel", Text, nullable=False),  # email
    Column("status", Text, nullable=False),  # waiting | notified
    Column("message_id", Text, nullable=False),  # the `Back In Stock Requested` event's
    # the consent's proof: the words the shopper agreed to, their version, where, when
    Column("consent_wording", Text, nullable=False),
    Column("consent_version", Text, nullable=True),
    Column("page_url", Text, nullable=True),
    Column("requested_at", BigInteger, nullable=False),
    Column("notified_at", BigInteger, nullable=True),
    Column("stock_returned", Integer, nullable=True),  # the stock that notified it
)
Index(
    "ix_commerce_stock_requests_waiting",
    commerce_stock_requests.c.variant_id,
    commerce_stock_requests.c.status,
    commerce_stock_requests.c.request_id,
)
Index(
    "ix_commerce_stock_requests_customer",
    commerce_stock_requests.c.customer_id,
    commerce_stock_requests.c.variant_id,
)

commerce_reviews = Table(
    "commerce_reviews",
    metadata,
    Column("order_id", Text, primary_key=True),  # one review per order
    Column("customer_id", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("locale", Text, nullable=False),
    Column("photo_type", Text, nullable=True),  # image/jpeg | image/png | image/webp
    Column("photo_size", Integer, nullable=True),
    Column("submissions", Integer, nullable=False),  # 1, then each change
    Column("submitted_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # moderation (migration 0032): published | hidden, and who changed it last, when
    Column("status", Text, nullable=False, server_default="published"),
    Column("moderated_by", Text, nullable=True),
    Column("moderated_at", BigInteger, nullable=True),
)
Index("ix_commerce_reviews_customer", commerce_reviews.c.customer_id)
Index("ix_commerce_reviews_submitted", commerce_reviews.c.submitted_at)
Index("ix_commerce_reviews_status", commerce_reviews.c.status, commerce_reviews.c.submitted_at)

commerce_review_ratings = Table(
    "commerce_review_ratings",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("product_id", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("rating", Integer, nullable=False),  # 1 to 5
)
Index("ix_commerce_review_ratings_customer", commerce_review_ratings.c.customer_id)
Index("ix_commerce_review_ratings_product", commerce_review_ratings.c.product_id)

commerce_review_photos = Table(
    "commerce_review_photos",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),  # at most 5 MB, checked by its bytes
)
Index("ix_commerce_review_photos_customer", commerce_review_photos.c.customer_id)
