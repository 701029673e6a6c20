"""The one name for a JSON document whose shape belongs to someone else.

A domain answers a question with a type of its own (a frozen dataclass or a msgspec
Struct). What it hands over as a document instead is named `JsonObject`, so that a reader
(and tests/test_house.py) can tell the two apart: a provider's request body (Meta,
Postmark, FCM), an Apple Wallet `pass.json`, a JSON Schema, a webhook's envelope, a
person's export, or the free-form traits and properties a brand sends us.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]

__all__ = ["JsonObject"]
