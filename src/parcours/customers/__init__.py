"""Customers: one profile per person, identities and merges, traits, consent, export and erasure.

Other packages use only what this face lists (tests/test_house.py).
"""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.customers import consent, profiles
from parcours.customers.consent import CHANNELS, CONSENT_EVENT, PURPOSES
from parcours.customers.identity import (
    BadEmail,
    check_email,
    identity_of,
    normalise_email,
    phone_country,
)
from parcours.customers.origins import Origin, erase_origin, erase_unattributed, origin_customers
from parcours.customers.people import CUSTOMER_TABLES, OrderBook, People, erase_customer_rows
from parcours.customers.profiles import CustomerNotFound, erase, export, history, public_id
from parcours.customers.projection import (
    MERGE_EVENT,
    decimal_of,
    identity_resolver,
    order_key,
    order_total,
)
from parcours.customers.verification import CHAT_VISITOR_PREFIX, IdentityRefused, verified_user_id

__all__ = [
    "CHANNELS",
    "CHAT_VISITOR_PREFIX",
    "CONSENT_EVENT",
    "CUSTOMER_TABLES",
    "MERGE_EVENT",
    "PURPOSES",
    "BadEmail",
    "CustomerNotFound",
    "IdentityRefused",
    "OrderBook",
    "Origin",
    "People",
    "check_email",
    "consent",
    "decimal_of",
    "erase",
    "erase_customer_rows",
    "erase_origin",
    "erase_unattributed",
    "export",
    "history",
    "identity_of",
    "identity_resolver",
    "normalise_email",
    "order_key",
    "order_total",
    "origin_customers",
    "phone_country",
    "profiles",
    "public_id",
    "verified_user_id",
]
