"""The outbox (one row per message attempt, keyed by its idempotency key), brand templates
and suppressed addresses."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Table, Text

from parcours.runtime.db import BigId, metadata

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("journey_id", Text, nullable=True),
    Column("run_id", BigInteger, nullable=True),
    Column("step_id", Text, nullable=True),
    Column("channel", Text, nullable=False),
    Column("template", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    # pending -> sending -> sent | failed, or pending -> cancelled (no longer wanted when
    # its delivery came: messaging/delivery.py); `status` is the furthest feedback reached.
    Column("state", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("detail", Text, nullable=False, server_default="{}"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("provider", Text, nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("address", Text, nullable=True),
    Column("locale", Text, nullable=True),
    Column("rendered", Text, nullable=True),
    Column("status", Text, nullable=True),
    Column("status_at", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("sent_at", BigInteger, nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    # When delivery last checked, claiming it to send, that the message was still wanted
    # (its journey run's goals and exits in the log; messaging/delivery.py).
    Column("checked_at", BigInteger, nullable=True),
)
Index("ix_outbox_customer", outbox.c.customer_id, outbox.c.created_at)
Index("ix_outbox_created", outbox.c.created_at, outbox.c.id)
Index("ix_outbox_provider_id", outbox.c.provider, outbox.c.provider_message_id)
Index("ix_outbox_state", outbox.c.state, outbox.c.channel)

# A brand's own message templates, overriding or adding to the shipped ones.
message_templates = Table(
    "message_templates",
    metadata,
    Column("id", Text, primary_key=True),
    Column("content", Text, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Addresses that must not be written to again (hard bounces, too many soft bounces,
# invalid numbers, removed push subscriptions), per channel; `source` says what said so
# and `outbox_id` which message it was about (messaging/suppressions.py).
suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", Text, primary_key=True),
    Column("address", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("source", Text, nullable=True),
    Column("outbox_id", BigInteger, nullable=True),
)
Index("ix_suppressions_customer", suppressions.c.customer_id)

# Every bounce, hard or soft, per address: soft ones not yet cleared (by a lifted
# suppression) are counted against the limit within its window.
bounces = Table(
    "bounces",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("outbox_id", BigInteger, nullable=True),
    Column("kind", Text, nullable=False),  # hard | soft
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),  # smtp reply | bounce message | postmark
    Column("at", BigInteger, nullable=False),
    Column("cleared_at", BigInteger, nullable=True),
)
Index("ix_bounces_address", bounces.c.channel, bounces.c.address, bounces.c.at)
Index("ix_bounces_customer", bounces.c.customer_id)
# At most one bounce per message, whoever records it first (messaging/suppressions.py).
Index("uq_bounces_outbox", bounces.c.outbox_id, unique=True)

# Mail received on the inbound endpoint that changed nothing (an auto-reply, a delay
# warning, a bounce for no message of ours...), with why: what an admin reads.
inbound_ignored = Table(
    "inbound_ignored",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", BigInteger, nullable=False),
    Column("mail_from", Text, nullable=True),  # the envelope sender
    Column("rcpt_to", Text, nullable=False),  # our address it came to
    Column("from_address", Text, nullable=True),  # the From header's address
    Column("subject", Text, nullable=True),
    Column("message_id", Text, nullable=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("outbox_id", BigInteger, nullable=True),
    Column("code", Text, nullable=False),
    Column("reason", Text, nullable=False),
)
Index("ix_inbound_ignored_received", inbound_ignored.c.received_at)
Index("ix_inbound_ignored_customer", inbound_ignored.c.customer_id)

# Browsers' Web Push subscriptions (RFC 8030): where to push and the keys to encrypt for.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("endpoint", Text, nullable=False, unique=True),
    Column("p256dh", Text, nullable=False),
    Column("auth", Text, nullable=False),
    Column("user_agent", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # The brand's user id it was made with, proven by its identity hash; NULL: made
    # anonymously (docs/security.md, Web Push).
    Column("verified_user_id", Text, nullable=True),
)
Index("ix_push_subscriptions_customer", push_subscriptions.c.customer_id)

# Apple Wallet passes issued to customers, and the devices that added them.
wallet_passes = Table(
    "wallet_passes",
    metadata,
    Column("serial", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),  # loyalty | coupon | vip
    Column("auth_token", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),  # the tag devices ask "changed since"
    # The same card's generic object in Google Wallet (`issuer.serial`), when offered there.
    Column("google_object_id", Text, nullable=True),
)
Index("ix_wallet_passes_customer", wallet_passes.c.customer_id)

# The devices that added a pass or an order: `serial` is the pass's serial number or the
# order's identifier (both random, never the same).
wallet_registrations = Table(
    "wallet_registrations",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("serial", Text, primary_key=True),
    Column("push_token", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
)
Index("ix_wallet_registrations_serial", wallet_registrations.c.serial)
Index("ix_wallet_registrations_customer", wallet_registrations.c.customer_id)

# Apple Wallet orders (order tracking): one per order of the shop, kept in step with its
# shipments; `details` holds what order.json shows (lines, total, fulfilments).
wallet_orders = Table(
    "wallet_orders",
    metadata,
    Column("identifier", Text, primary_key=True),  # orderIdentifier (random)
    Column("order_id", Text, nullable=False, unique=True),  # the shop's order id
    Column("customer_id", BigInteger, nullable=False),
    Column("auth_token", Text, nullable=False),
    # What the order shows is read from commerce (messaging/wallet_orders.py); these two
    # keep its summary when the devices were last told: open | completed | cancelled, and
    # the latest shipment's status in Apple's word.
    Column("status", Text, nullable=False),
    Column("fulfillment_status", Text, nullable=True),
    # JSON: the customer's language and the digest of what the devices were last told (a
    # row issued before commerce projected orders keeps what it showed then).
    Column("details", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),  # the tag devices ask "changed since"
)
Index("ix_wallet_orders_customer", wallet_orders.c.customer_id)
