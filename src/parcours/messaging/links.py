"""Signed links in messages: unsubscribe (one click, RFC 8058), the open pixel and click
tracking. A link carries what it is about and an HMAC of it; nothing else is trusted, so
the click redirect goes only to the address that was signed (no open redirect)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from html import escape, unescape
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class BadLink(ValueError):
    """A link that was not made by us, or was changed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Signer:
    secret: bytes

    def sign(self, purpose: str, data: dict[str, Any]) -> str:
        body = _b64(_encode(data))
        mac = hmac.new(self.secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac[:18])}"

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        expected = hmac.new(self.secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
        try:
            valid = hmac.compare_digest(_unb64(mac), expected[:18])
            data = _decode(_unb64(body)) if valid else None
        except (ValueError, msgspec.DecodeError):
            raise BadLink("this link is not valid") from None
        if not isinstance(data, dict):
            raise BadLink("this link is not valid")
        return data


@dataclass(frozen=True)
class Links:
    """The links of one message."""

    signer: Signer
    base_url: str  # where Parcours answers, e.g. https://parcours.example.com
    wallet_orders: bool = False  # Wallet orders are configured: offer "Add to Apple Wallet"

    def unsubscribe(self, outbox_id: int, customer_id: int, channel: str) -> str:
        token = self.signer.sign("unsubscribe", {"m": outbox_id, "c": customer_id, "ch": channel})
        return f"{self.base_url}/u/{token}"

    def open_pixel(self, outbox_id: int) -> str:
        return f"{self.base_url}/t/o/{self.signer.sign('open', {'m': outbox_id})}.gif"

    def click(self, outbox_id: int, url: str) -> str:
        return f"{self.base_url}/t/c/{self.signer.sign('click', {'m': outbox_id, 'u': url})}"

    def for_order(self, order: dict[str, Any] | None) -> dict[str, str]:
        """The links a message about an order offers: `wallet_order`, the signed .order of
        that order for Apple Wallet (when Wallet orders are configured)."""
        if not self.wallet_orders or not order or order.get("order_id") is None:
            return {}
        token = self.signer.sign("order", {"o": str(order["order_id"])})
        return {"wallet_order": f"{self.base_url}/wallet/orders/add/{token}.order"}


_HREF = re.compile(r'href="(https?://[^"]+)"', re.I)


def track_html(html: str, links: Links, outbox_id: int, keep: set[str]) -> str:
    """Every http(s) link through the click redirect (except those in `keep`, such as the
    unsubscribe link), and the open pixel before the end of the body."""

    def rewrite(match: re.Match[str]) -> str:
        url = unescape(match.group(1))
        if url in keep or url.startswith(links.base_url + "/"):
            return match.group(0)
        return f'href="{escape(links.click(outbox_id, url), quote=True)}"'

    tracked = _HREF.sub(rewrite, html)
    pixel = (
        f'<img src="{escape(links.open_pixel(outbox_id), quote=True)}" width="1" height="1" '
        'alt="" style="display:block;border:0;width:1px;height:1px">'
    )
    at = tracked.lower().rfind("</body>")
    return tracked[:at] + pixel + tracked[at:] if at >= 0 else tracked + pixel


# The smallest transparent GIF, answered by the open pixel.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
