"""Messaging: templates and rendering, the outbox, channel choice and the send-time policies,
delivery (claim, per-channel preparers, providers, outcomes, fallback), suppressions,
Wallet passes and orders. Other packages use only what this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.messaging import (
    choice,
    metrics,
    passes,
    people,
    policies,
    reasons,
    subscriptions,
    suppressions,
    templates,
    wallet_orders,
)
from parcours.messaging.choice import SECTOR_PRESETS
from parcours.messaging.delivery import Brand, Delivery, outbox_page
from parcours.messaging.direct import Handed, send_email_now
from parcours.messaging.links import (
    PIXEL_GIF,
    BadLink,
    ClickLink,
    Links,
    OpenLink,
    OrderLink,
    PassLink,
    PreferencesLink,
    ReviewLink,
    Signer,
    TrackingLink,
    UnsubscribeLink,
)
from parcours.messaging.outbox import (
    QUEUE,
    Intent,
    OutboxMessage,
    RunMessage,
    add_intent,
    cancel_run_intents,
    messages_of_runs,
    public_message_id,
)
from parcours.messaging.outbox_rows import ChatMessage, unconfirmed_chat_messages
from parcours.messaging.passes import WalletPass
from parcours.messaging.policies import Policies, hold_sends, read_ahead_sends
from parcours.messaging.subscriptions import SubscriptionError
from parcours.messaging.suppressions import BadCursor, Bounce, BounceRule, IgnoredMail, Suppression
from parcours.messaging.templates import (
    MessageTemplate,
    TemplateProblem,
    TemplateSummary,
    brand_templates,
    shipped,
)
from parcours.messaging.wallet_orders import WalletOrder
from parcours.messaging.wallet_updates import WalletUpdates

__all__ = [
    "PIXEL_GIF",
    "QUEUE",
    "SECTOR_PRESETS",
    "BadCursor",
    "BadLink",
    "Bounce",
    "BounceRule",
    "Brand",
    "ChatMessage",
    "ClickLink",
    "Delivery",
    "Handed",
    "IgnoredMail",
    "Intent",
    "Links",
    "MessageTemplate",
    "OpenLink",
    "OrderLink",
    "OutboxMessage",
    "PassLink",
    "Policies",
    "PreferencesLink",
    "ReviewLink",
    "RunMessage",
    "Signer",
    "SubscriptionError",
    "Suppression",
    "TemplateProblem",
    "TemplateSummary",
    "TrackingLink",
    "UnsubscribeLink",
    "WalletOrder",
    "WalletPass",
    "WalletUpdates",
    "add_intent",
    "brand_templates",
    "cancel_run_intents",
    "choice",
    "hold_sends",
    "messages_of_runs",
    "metrics",
    "outbox_page",
    "passes",
    "people",
    "policies",
    "public_message_id",
    "read_ahead_sends",
    "reasons",
    "send_email_now",
    "shipped",
    "subscriptions",
    "suppressions",
    "templates",
    "unconfirmed_chat_messages",
    "wallet_orders",
]
