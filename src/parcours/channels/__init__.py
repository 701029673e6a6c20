"""Channels: one module per provider behind one small protocol (base.py), and the registry
that builds the providers a brand configured (registry.py)."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.channels import postmark, sms, stored, whatsapp, whatsapp_buttons
from parcours.channels.base import (
    ConfigError,
    DeliveryFailure,
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
)
from parcours.channels.chat import Visitor, VisitorTokens
from parcours.channels.connection_check import (
    Configured,
    ConnectionCheck,
    check_connection,
    check_part,
    configured,
)
from parcours.channels.email_bounces import HARD, SENDER_CODE, SOFT, classify
from parcours.channels.email_inbound import Ignored, InboundHandler, InboundMail, Report
from parcours.channels.email_tags import EmailTags, hand_to
from parcours.channels.push import application_server_key, make_vapid_key
from parcours.channels.registry import Providers, build_provider
from parcours.channels.sms import Pricing
from parcours.channels.wallet import ORDER_MEDIA_TYPE, WalletIssuer, WalletOrders
from parcours.channels.whatsapp import WhatsAppPricing

__all__ = [
    "HARD",
    "ORDER_MEDIA_TYPE",
    "SENDER_CODE",
    "SOFT",
    "ConfigError",
    "Configured",
    "ConnectionCheck",
    "DeliveryFailure",
    "EmailTags",
    "Ignored",
    "InboundHandler",
    "InboundMail",
    "OutgoingMessage",
    "PermanentFailure",
    "Pricing",
    "Provider",
    "Providers",
    "Report",
    "TransientFailure",
    "Visitor",
    "VisitorTokens",
    "WalletIssuer",
    "WalletOrders",
    "WhatsAppPricing",
    "application_server_key",
    "build_provider",
    "check_connection",
    "check_part",
    "classify",
    "configured",
    "hand_to",
    "make_vapid_key",
    "postmark",
    "sms",
    "stored",
    "whatsapp",
    "whatsapp_buttons",
]
