"""The brand's logo: a PNG or a JPEG (recognised by its first bytes, whatever its name
says; SVG is refused, as it may carry scripts), at most `LARGEST_LOGO` bytes, kept in the
database and served by its digest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import Connection, delete, insert, select, update

from parcours.brand.settings import ROW, BrandError, Logo, LogoFile
from parcours.brand.tables import brand_logo
from parcours.runtime.db import Database

LARGEST_LOGO = 512 * 1024
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def media_type_of(content: bytes) -> str:
    """The logo's media type, from its first bytes; BrandError when it is not one we take."""
    if not content:
        raise BrandError("settings.logo_empty")
    if len(content) > LARGEST_LOGO:
        raise BrandError("settings.logo_large", largest=str(LARGEST_LOGO // 1024))
    for signature, media_type in _SIGNATURES:
        if content.startswith(signature):
            return media_type
    raise BrandError("settings.logo_kind")


def save_logo(
    db: Database,
    content: bytes,
    now: int,
    *,
    also: Callable[[Connection, Logo | None, Logo], None] | None = None,
) -> Logo:
    """Keep `content` as the brand's logo (checked: BrandError); `also(conn, before,
    after)` runs in the same transaction."""
    media_type = media_type_of(content)
    logo = Logo(hashlib.sha256(content).hexdigest(), media_type)
    values = {
        "media_type": media_type,
        "digest": logo.digest,
        "content": content,
        "updated_at": now,
    }
    with db.write() as conn:
        before = _logo(conn)
        if before is None:
            conn.execute(insert(brand_logo).values(id=ROW, **values))
        else:
            conn.execute(update(brand_logo).where(brand_logo.c.id == ROW).values(**values))
        if also is not None:
            also(conn, before, logo)
    return logo


def remove_logo(
    db: Database, *, also: Callable[[Connection, Logo | None], None] | None = None
) -> bool:
    """No logo any more; whether there was one."""
    with db.write() as conn:
        before = _logo(conn)
        conn.execute(delete(brand_logo).where(brand_logo.c.id == ROW))
        if also is not None:
            also(conn, before)
    return before is not None


def logo_file(conn: Connection, digest: str) -> LogoFile | None:
    """The logo whose digest is `digest`, if it is the brand's logo now."""
    row = conn.execute(
        select(brand_logo.c.media_type, brand_logo.c.content).where(
            brand_logo.c.id == ROW, brand_logo.c.digest == digest
        )
    ).first()
    return LogoFile(row.media_type, bytes(row.content)) if row else None


def _logo(conn: Connection) -> Logo | None:
    row = conn.execute(
        select(brand_logo.c.digest, brand_logo.c.media_type).where(brand_logo.c.id == ROW)
    ).first()
    return Logo(row.digest, row.media_type) if row else None
