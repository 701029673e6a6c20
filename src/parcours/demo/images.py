"""The demo's pictures, made here rather than downloaded: an SVG per product (a tile in the
brand's colours with the product's initial and a shape for its category), served at
`/demo/images/<product_id>.svg`, and the brand's logo, a small PNG (the brand settings
take PNG or JPEG only)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from html import escape

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler

from parcours.demo.sectors import Sector

IMAGES_PATH = "/demo/images"
# Nothing in these pictures is fetched or run; the policy says so to the browser too.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=86400",
}


def image_url(public_url: str, product_id: str) -> str:
    return f"{public_url.rstrip('/')}{IMAGES_PATH}/{product_id}.svg"


def product_svg(sector: Sector, product_id: str, name: str) -> str:
    """A 320×320 tile: a background tinted from the brand's colours (the tint chosen by the
    product's id, so each product keeps its own), a disc or a square, the initial."""
    digest = hashlib.sha256(product_id.encode("utf-8")).digest()
    hue = digest[0] / 255
    background = _mix(sector.primary, "#ffffff", 0.78 + 0.12 * hue)
    shape_colour = sector.accent if digest[1] % 2 else sector.primary
    if digest[2] % 2:
        shape = f'<circle cx="160" cy="150" r="{70 + digest[3] % 30}" fill="{shape_colour}"/>'
    else:
        side = 120 + digest[3] % 40
        corner = (320 - side) // 2
        shape = (
            f'<rect x="{corner}" y="{corner - 10}" width="{side}" height="{side}" rx="18" '
            f'fill="{shape_colour}"/>'
        )
    initial = escape(name[:1].upper() or "?")
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="320" '
        f'viewBox="0 0 320 320" role="img" aria-label="{escape(name)}">'
        f'<rect width="320" height="320" fill="{background}"/>{shape}'
        '<text x="160" y="172" text-anchor="middle" font-family="Georgia, serif" '
        f'font-size="64" fill="#ffffff">{initial}</text>'
        f'<text x="160" y="290" text-anchor="middle" font-family="sans-serif" font-size="18" '
        f'fill="#222222">{escape(name)}</text></svg>'
    )


def images_route(pictures: dict[str, str]) -> HTTPRouteHandler:
    """`GET /demo/images/<product_id>.svg` for the catalog's products (404 otherwise)."""

    @get(f"{IMAGES_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
    def demo_image(name: str) -> Response[bytes]:
        picture = pictures.get(name.removesuffix(".svg")) if name.endswith(".svg") else None
        if picture is None:
            raise NotFoundException()
        return Response(
            picture.encode("utf-8"), media_type="image/svg+xml; charset=utf-8", headers=_HEADERS
        )

    return demo_image


def logo_png(primary: str, accent: str, size: int = 96) -> bytes:
    """The brand's logo: a disc in its main colour holding a smaller one in its accent,
    on a transparent ground, as a PNG."""
    centre = (size - 1) / 2
    outer, inner = size * 0.48, size * 0.22
    main, second = _rgb(primary), _rgb(accent)
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # no filter
        for x in range(size):
            distance = ((x - centre) ** 2 + (y - centre + size * 0.08) ** 2) ** 0.5
            if distance <= inner:
                rows += bytes((*second, 255))
            elif ((x - centre) ** 2 + (y - centre) ** 2) ** 0.5 <= outer:
                rows += bytes((*main, 255))
            else:
                rows += bytes((0, 0, 0, 0))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _mix(colour: str, other: str, share: float) -> str:
    """`colour` mixed with `share` of `other`."""
    first, second = _rgb(colour), _rgb(other)
    mixed = (round(a + (b - a) * share) for a, b in zip(first, second, strict=True))
    return "#" + "".join(f"{value:02x}" for value in mixed)
