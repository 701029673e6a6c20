"""What every HTTP route shares, whichever transport or page it serves: the one error
envelope (`HttpError`, `error_body`), reading a body within its limits (`read_body`,
`read_json`), ids in paths and cursors, the parts a handler is handed by the composition
root (`Injected`) and the request body a route documents (`request_body`). Above the
domains, below every transport (ingest) and the HTTP API (web)."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import msgspec
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import SkipValidation

from parcours.tracking import DEPTH_MESSAGE, NUL_MESSAGE, json_too_deep, nul_path

_encode = msgspec.json.Encoder().encode
MAX_INT64 = 2**63 - 1  # every id, cursor and version is a 64-bit integer in the database


T = TypeVar("T")
# A part of the running process a handler asks for by its parameter's name (`db: Injected
# [Database]`), provided by the composition root (app.py). Not checked by Litestar on each
# call: the root built it, and Protocols such as `Clock` cannot be checked with isinstance.
Injected: TypeAlias = NamedDependency[SkipValidation[T]]
# What a route under the write key's guard (web/guards.py) says in its `opt`: the most
# bytes its body may hold (the key may be in it), the source its refusals are counted
# under, whether a refused call counts each event of a batch, and, for a route that reads
# its body before it looks for the key in it, its own answer to a body it cannot read
# (a call `(raw) -> None` raising HttpError), given before any 401.
BODY_LIMIT = "body_limit"
INGEST_SOURCE = "ingest_source"
COUNTS_BATCH = "counts_batch"
BODY_FIRST = "body_first"


def error_body(
    status: int, message: str, field: str = "", problems: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The one error envelope of the whole API (README, "Errors"): `success`, `code` and
    `message` at the top are what Segment's and RudderStack's libraries read; `error`
    names the field, and for a definition lists every problem with its line."""
    message, field = _printable(message), _printable(field)
    error: dict[str, Any] = {"field": field, "message": message}
    if problems is not None:
        error["problems"] = [
            {k: _printable(v) if isinstance(v, str) else v for k, v in p.items()} for p in problems
        ]
    return {
        "success": False,
        "code": ERROR_CODES.get(status, "server_error" if status >= 500 else "invalid_request"),
        "message": message,
        "error": error,
    }


def _printable(text: str) -> str:
    """Text JSON can carry whatever input it quotes (a lone surrogate as \\udXXX)."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_encoding",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class HttpError(Exception):
    """An error answered in the envelope of `error_body`; raised anywhere under a route,
    the application's exception handler answers it (web/errors.py)."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str = "",
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.problems = problems

    def response(self) -> Response[bytes]:
        body = error_body(self.status, self.message, self.field, self.problems)
        return Response(_encode(body), status_code=self.status, media_type="application/json")


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(body), status_code=status, media_type="application/json")


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The request body, un-gzipped if need be, refused when over `limit` bytes."""
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise HttpError(400, f"body is not valid gzip: {exc}", "body") from None
    elif encoding not in ("", "identity"):
        raise HttpError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    if len(raw) > limit:
        raise HttpError(413, f"body is larger than the limit of {limit} bytes", "body")
    return raw


async def read_json(request: Request[Any, Any, Any], limit: int, kind: type[T]) -> T:
    """The request body as `kind`; HttpError 400 naming the problem when it is not."""
    return decode_json(await read_body(request, limit), kind)


def decode_json(raw: bytes, kind: type[T]) -> T:
    """JSON as `kind`, within the limits of every body (nesting, no NUL character);
    HttpError 400 naming the field otherwise."""
    if json_too_deep(raw):
        raise HttpError(400, f"the body is {DEPTH_MESSAGE}", "body")
    try:
        value = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        field, message = validation_field(str(exc))
        raise HttpError(400, message, field or "body") from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}", "body") from None
    if b"\\u0000" in raw:
        where = nul_path(msgspec.to_builtins(value))
        if where is not None:
            raise HttpError(400, f"{where}: {NUL_MESSAGE}", where)
    return value


def object_body(raw: bytes) -> dict[str, Any]:
    """A body that must be a JSON object, within the limits of every body."""
    body = decode_json(raw, object)
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object", "body")
    return body


def validation_field(text: str) -> tuple[str, str]:
    """msgspec's "Expected `str`, got `int` - at `$.channel`" as ("channel", "channel:
    expected `str`, got `int`"); a missing or unknown field is named too."""
    message, _, where = text.partition(" - at `$")
    field = where.rstrip("`").lstrip(".")
    for lead, said in (
        ("Object missing required field `", "is required"),
        ("Object contains unknown field `", "is not a known field here"),
    ):
        if message.startswith(lead):
            name = message[len(lead) :].split("`")[0]
            field = f"{field}.{name}" if field else name
            return field, f"{field}: {said}"
    said = message[:1].lower() + message[1:]
    return field, f"{field}: {said}" if field else said


def whole_number(text: str) -> int | None:
    """The 64-bit whole number written in `text` (ASCII digits only: `str.isdigit` also
    takes `²`, which `int` refuses), or None."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_INT64:
        return None
    return int(text)


def prefixed_id(text: str, prefix: str, field: str) -> int:
    """The number of an id such as `msg_42` or `cus_42` given as a cursor; HttpError 400
    naming `field` when it is not one (a number past 64 bits included)."""
    digits = text.removeprefix(prefix)
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19 or int(digits) > MAX_INT64:
        raise HttpError(400, f"{field} is an id such as {prefix}42, not {text!r}", field)
    return int(digits)


def basic_write_key(header: str) -> str | None:
    """The write key of an `Authorization: Basic` header (`writeKey:`), or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """A JSON Schema with its `$ref`s to `$defs` replaced by what they name."""
    if isinstance(schema, dict):
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    return schema


def request_body(
    kind: Any, media_types: Iterable[str] = ("application/json",), description: str = ""
) -> type[Operation]:
    """For `operation_class=`: the route's body is `kind` (a msgspec type), in the
    document. The handler reads the body itself (within its limits, gzip, NUL and depth
    checks, `read_json`), so Litestar cannot see it from the signature."""
    generated = msgspec.json.schema(kind)
    schema = _inline(generated, generated.get("$defs", {}))
    content = {media: OpenAPIMediaType(schema=cast(Schema, schema)) for media in media_types}

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content=content, description=description or None, required=True
            )

    return WithBody
