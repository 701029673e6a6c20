"""Message templates: per locale and per channel content, sandboxed Jinja2, checked before use.

A template is a mapping of locale to channel to fields (docs/channels.md). Templates ship
with Parcours (`templates/*.yaml` beside this file) and a brand adds or overrides them in
the `message_templates` table. Rendering is strict: a variable that is not there is an
error naming it, never a blank in a sent message. Email bodies written in MJML are
compiled to HTML with their CSS inlined once per template version; Jinja runs per message.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import html as html_module
import math
import re
import string
import threading
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

import babel
import babel.dates
import babel.numbers
import css_inline
import msgspec
import yaml
from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from mjml import mjml_to_html
from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from parcours.channels import whatsapp_buttons
from parcours.messaging.tables import message_templates
from parcours.runtime.db import transaction_note
from parcours.runtime.documents import JsonObject

SHIPPED_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"
SENDABLE_CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat")

# Fields per channel: (required, optional). WhatsApp is either a free-form `text` (inside
# the 24-hour window) or an approved template reference.
FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "email": (frozenset({"subject"}), frozenset({"html", "mjml", "text", "preheader"})),
    "sms": (frozenset({"text"}), frozenset()),
    "push": (frozenset({"title", "body"}), frozenset({"url", "image"})),
    "whatsapp": (
        frozenset(),
        frozenset({"text", "template", "language", "category", "parameters", "buttons"}),
    ),
    "wallet": (frozenset({"header", "body"}), frozenset({"url"})),
    "chat": (frozenset({"text"}), frozenset()),
}
WHATSAPP_CATEGORIES = ("marketing", "utility", "authentication")
# The names a template may use at its top level (docs/channels.md, "Templates").
CONTEXT_NAMES = frozenset(
    {"customer", "event", "cart", "order", "brand", "links", "message", "recommendations"}
)

_TEMPLATE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class TemplateProblem(ValueError):
    """A template is unknown, malformed or cannot be rendered; the message says where."""


# A template as the brand writes it: locale -> channel -> field -> value.
TemplateContent: TypeAlias = dict[str, dict[str, JsonObject]]


@dataclass(frozen=True)
class MessageTemplate:
    id: str
    content: TemplateContent
    origin: str  # "shipped" or "brand"

    @functools.cached_property
    def version(self) -> str:  # looked up at every render: computed once
        return hashlib.sha256(_encode(self.content)).hexdigest()[:16]

    def channels(self) -> set[str]:
        return {channel for per_locale in self.content.values() for channel in per_locale}

    def locale_for(self, channel: str, wanted: str | None, brand_locale: str) -> str | None:
        """The customer's language, else the brand's, else English, else any that has it."""
        tried = [wanted, (wanted or "").split("-")[0], brand_locale, DEFAULT_LOCALE]
        for locale in tried:
            if locale and channel in self.content.get(locale, {}):
                return locale
        for locale in sorted(self.content):
            if channel in self.content[locale]:
                return locale
        return None


# Every name a plain dict has as an attribute (its methods, its dunders).
_DICT_ATTRIBUTES = frozenset(dir(dict))


# ---- sandbox limits ----------------------------------------------------------------------
# A template is written by an admin key's holder and runs for every customer; it must not
# take the worker's memory or time (docs/security.md, "Input limits"). Jinja's sandbox keeps
# a template from Python's internals; these keep it small, checked when the template is
# saved (what can be computed from its text alone) and when it renders (everything else):
MAX_RANGE = 10_000  # items in one range()
MAX_STEPS = 100_000  # loop iterations and calls, in one field's render
MAX_OUTPUT = 512 * 1024  # characters of one rendered field
MAX_VALUE = 100_000  # length of a text or list made by an operator, a filter or a method
MAX_POWER_BITS = 4_096  # size of a number made by **

# The steps left to the render in progress (None outside a render: compiling, checking).
_steps: ContextVar[list[int] | None] = ContextVar("parcours_template_steps", default=None)


def _step() -> None:
    left = _steps.get()
    if left is not None:
        left[0] -= 1
        if left[0] < 0:
            raise SecurityError(f"the template takes more than {MAX_STEPS} loop steps and calls")


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what} (the limit is {MAX_VALUE:,})")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _checked_binop(operator: str, left: Any, right: Any) -> Any:
    """`*`, `**` and `%` with the sizes of their results bounded before they are made."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if _sized(sequence) and isinstance(times, int) and _sized(sequence) * times > MAX_VALUE:
                raise _refuse(f"repeating a text or list {times} times makes it too long")
        return left * right
    if operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * math.log2(abs(left)) > MAX_POWER_BITS
        ):
            raise SecurityError(f"{left} ** {right} is too large a number")
        return left**right
    if operator == "%" and isinstance(left, str):
        _check_percent_format(left)
    return left % right


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(text: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(text):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_VALUE):
                raise _refuse(f"a width of {number} in {text[:40]!r} is too wide")


def _check_format_string(text: str) -> None:
    """str.format: no replacement field wider than the limit, no nested width."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # format() itself says what is wrong
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise SecurityError("a format width given by another field is not accepted")
        for number in re.findall(r"\d+", spec or ""):
            if int(number) > MAX_VALUE:
                raise _refuse(f"a width of {number} is too wide")


def _limited_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range() of {len(numbers)} items: the limit is {MAX_RANGE:,}")
    return numbers


# Filters whose numeric arguments say how long the result is.
_SIZED_FILTERS = ("center", "indent", "batch", "slice", "tojson", "wordwrap", "truncate")
# Methods of str that pad to a width.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # The value filtered comes first, after the environment or evaluation context for the
    # filters that take one: its own size is bounded already; the arguments after it are
    # the sizes asked for.
    first = 1 if getattr(function, "jinja_pass_arg", None) is None else 2

    def guarded(*args: Any, **kwargs: Any) -> Any:
        for argument in (*args[first:], *kwargs.values()):
            if (
                isinstance(argument, int)
                and not isinstance(argument, bool)
                and abs(argument) > MAX_VALUE
            ):
                raise _refuse(f"{name}({argument}) would make too long a text")
        if name == "format" and args:
            _check_percent_format(str(args[0]))
        if name == "replace":
            _check_replace(*[a for a in args[first - 1 :] if isinstance(a, str)][:3])
        return function(*args, **kwargs)

    functools.update_wrapper(guarded, function)
    return guarded


def _check_replace(text: str = "", old: str = "", new: str = "", *_: str) -> None:
    if not new:
        return
    times = len(text) + 1 if old == "" else text.count(old)
    if len(text) + times * len(new) > MAX_VALUE:
        raise _refuse("replace() would make too long a text")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox (immutable: a template cannot grow a list or a dict in a loop), with
    the limits above, and one shortcut: `customer.first_name` on a plain dict. Jinja tries
    the attribute first, which for a dict can only fail (an exception per lookup, the
    sandbox's largest cost in a render, measured) unless the name is one of dict's own;
    the item is what it then returns, and so does this, directly."""

    intercepted_binops = frozenset({"*", "**", "%"})  # also kept from constant folding

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _checked_binop(operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes (a macro, a method, a function) is a step."""
        _step()
        name = getattr(obj, "__name__", "")
        if isinstance(getattr(obj, "__self__", None), str):
            if name in _PADDING_METHODS and any(isinstance(a, int) and a > MAX_VALUE for a in args):
                raise _refuse(f"{name}() to a width of more than the limit")
            if name == "replace":
                _check_replace(obj.__self__, *[a for a in args if isinstance(a, str)][:2])
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_string(value.__self__)
        return wrapped

    def guarded_loop(self, items: Iterable[Any]) -> Iterator[Any]:
        """What every `{% for %}` iterates over (see `_parse`): one step per item."""
        for item in items:
            _step()
            yield item

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            guard = nodes.EnvironmentAttribute("guarded_loop", lineno=loop.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree


def _limited(env: _Environment) -> _Environment:
    env.globals["range"] = _limited_range
    for name in ("namespace", "lipsum"):  # a namespace grows across iterations; lipsum(n)
        env.globals.pop(name, None)
    for name in (*_SIZED_FILTERS, "format", "replace"):
        env.filters[name] = _guard_filter(name, env.filters[name])
    return env


_env = _limited(
    _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
)
_html_env = _limited(_Environment(undefined=StrictUndefined, autoescape=True))


def _render_field(compiled: Any, context: dict[str, Any]) -> str:
    """One field, within the steps and the output size of the limits."""
    if isinstance(compiled, _Fixed):
        return compiled.text
    token = _steps.set([MAX_STEPS])
    try:
        parts: list[str] = []
        size = 0
        for part in compiled.generate(context):
            size += len(part)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the text rendered is longer than {MAX_OUTPUT:,} characters")
            parts.append(part)
        return "".join(parts)
    finally:
        _steps.reset(token)


def _limit_problem(parsed: nodes.Template) -> str | None:
    """What the template's text alone shows to be over the limits: a constant range()
    too long, a constant expression too large (`{{ 'x' * 10**9 }}`, a filter given a huge
    width); None when nothing is."""
    for node in parsed.find_all(nodes.Expr):
        if isinstance(node, nodes.Call | nodes.BinExpr | nodes.Filter):
            try:
                _constant(node)
            except (SecurityError, OverflowError, MemoryError) as exc:
                return str(exc)
            except Exception:  # not constant, or an error that only a render can tell
                continue
    return None


def _constant(node: nodes.Expr) -> Any:
    """The value of a constant expression, computed under the limits; raises Impossible
    (or another error) when it is not constant."""
    if isinstance(node, nodes.BinExpr) and node.operator in _Environment.intercepted_binops:
        return _checked_binop(node.operator, _constant(node.left), _constant(node.right))
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
        and not node.kwargs
    ):
        return _limited_range(*[_constant(argument) for argument in node.args])
    if isinstance(node, nodes.Filter) and node.name in ("center", "indent", "batch", "format"):
        value = _constant(node.node) if node.node is not None else None
        arguments = [_constant(argument) for argument in node.args]
        return _env.filters[node.name](value, *arguments)
    return node.as_const(nodes.EvalContext(_env))


# ---- amounts and dates in the customer's language (Babel) --------------------------------
# `{{ order.total | money(order.currency) }}` gives `129,00 €` to a French reader and
# `€129.00` to an English one; `{{ event.timestamp | date }}` gives `21 septembre 2026`, in
# the customer's time zone. The language is the one the content was chosen in
# (`message.locale`). A missing value gives an empty text, as `default('')` would.


@functools.lru_cache(maxsize=64)
def _babel_locale(locale: str) -> babel.Locale:
    try:
        return babel.Locale.parse(locale.replace("-", "_"))
    except (ValueError, babel.UnknownLocaleError):
        return babel.Locale.parse(DEFAULT_LOCALE)


def _reader(context: Context) -> babel.Locale:
    message = context.get("message")
    locale = message.get("locale") if isinstance(message, dict) else None
    return _babel_locale(locale if isinstance(locale, str) else DEFAULT_LOCALE)


@pass_context
def _money(context: Context, amount: Any, currency: Any = None) -> str:
    if isinstance(amount, Undefined) or amount is None or amount == "":
        return ""
    try:
        value = Decimal(str(amount).strip())
    except ArithmeticError:
        return str(amount)  # not a number: shown as it came
    if not value.is_finite():
        return str(amount)
    locale = _reader(context)
    if isinstance(currency, str) and re.fullmatch(r"[A-Za-z]{3}", currency.strip()):
        return babel.numbers.format_currency(value, currency.strip().upper(), locale=locale)
    return babel.numbers.format_decimal(value, format="#,##0.00", locale=locale)


_DATE_FORMATS = ("short", "medium", "long", "full")


@pass_context
def _date(context: Context, value: Any, format: str = "long") -> str:
    if isinstance(value, Undefined) or value is None or value == "":
        return ""
    if format not in _DATE_FORMATS:
        raise TemplateError(f"date: the format is one of {', '.join(_DATE_FORMATS)}")
    when: datetime.date
    if isinstance(value, datetime.date):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value  # not a date: shown as it came
    else:
        return str(value)
    if isinstance(when, datetime.datetime) and when.tzinfo is not None:
        customer = context.get("customer")
        zone = customer.get("timezone") if isinstance(customer, dict) else None
        with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):  # unknown zone
            when = when.astimezone(zoneinfo.ZoneInfo(zone)) if isinstance(zone, str) else when
    return babel.dates.format_date(when, format=format, locale=_reader(context))


for _each in (_env, _html_env):
    _each.filters["money"] = _money
    _each.filters["date"] = _date


def check(template_id: str, source: Any) -> MessageTemplate:
    """Parse and check a template's content; raise TemplateProblem naming the field."""
    if not isinstance(template_id, str) or not re.fullmatch(
        r"[a-z0-9][a-z0-9_.-]{0,99}", template_id
    ):
        raise TemplateProblem(
            f"template id {template_id!r} must be lowercase letters, digits, '-', '_' or '.'"
        )
    if not isinstance(source, dict) or not source:
        raise TemplateProblem(f"{template_id}: expected a mapping of locale to channels")
    content: dict[str, dict[str, dict[str, Any]]] = {}
    for locale, channels in source.items():
        where = f"{template_id}.{locale}"
        if not isinstance(locale, str) or not re.fullmatch(r"[a-z]{2}(-[A-Z]{2})?", locale):
            raise TemplateProblem(f"{where}: a locale is 'en', 'fr' or 'fr-CA'")
        if not isinstance(channels, dict) or not channels:
            raise TemplateProblem(f"{where}: expected a mapping of channel to fields")
        content[locale] = {}
        for channel, fields in channels.items():
            content[locale][channel] = _check_channel(f"{where}.{channel}", channel, fields)
    return MessageTemplate(template_id, content, "shipped")


def _check_channel(where: str, channel: str, fields: Any) -> dict[str, Any]:
    if channel not in FIELDS:
        raise TemplateProblem(f"{where}: unknown channel (one of {', '.join(FIELDS)})")
    if not isinstance(fields, dict):
        raise TemplateProblem(f"{where}: expected a mapping of fields")
    required, optional = FIELDS[channel]
    missing = sorted(required - fields.keys())
    if missing:
        raise TemplateProblem(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(fields.keys() - required - optional)
    if unknown:
        raise TemplateProblem(
            f"{where}: unknown field {unknown[0]} "
            f"(allowed: {', '.join(sorted(required | optional))})"
        )
    if channel == "email" and not ({"html", "mjml", "text"} & fields.keys()):
        raise TemplateProblem(f"{where}: an email needs html, mjml or text")
    if channel == "email" and {"html", "mjml"} <= fields.keys():
        raise TemplateProblem(f"{where}: give html or mjml, not both")
    if channel == "whatsapp":
        if "text" not in fields and "template" not in fields:
            raise TemplateProblem(
                f"{where}: give text (free-form, inside the 24-hour window), template (an "
                "approved template's name, for any time), or both"
            )
        if "template" in fields:
            if fields.get("category") not in WHATSAPP_CATEGORIES:
                raise TemplateProblem(
                    f"{where}.category: one of {', '.join(WHATSAPP_CATEGORIES)} is required"
                )
            if not isinstance(fields.get("parameters", []), list):
                raise TemplateProblem(f"{where}.parameters: expected a list")
        if "buttons" in fields:
            problem = whatsapp_buttons.source_problem(fields["buttons"])
            if problem is not None:
                joint = "" if problem.startswith("[") else ": "
                raise TemplateProblem(f"{where}.buttons{joint}{problem}")
    for name, value in fields.items():
        if name == "buttons":  # their shape checked above, each of their texts here
            for n, button in enumerate(value):
                for key, text in button.items():
                    _check_source(f"{where}.buttons[{n}].{key}", text)
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str):
                raise TemplateProblem(f"{where}.{name}: expected text")
            _check_source(f"{where}.{name}", item)
    if "mjml" in fields:
        _compile_mjml(where, fields["mjml"])
    return dict(fields)


def _check_source(where: str, text: str) -> None:
    try:
        parsed = _env.parse(text)
    except TemplateError as exc:
        raise TemplateProblem(f"{where}: {exc}") from exc
    unknown = sorted(meta.find_undeclared_variables(parsed) - CONTEXT_NAMES)
    if unknown:
        raise TemplateProblem(
            f"{where}: unknown variable {unknown[0]!r} (a template may use "
            f"{', '.join(sorted(CONTEXT_NAMES))})"
        )
    for node in parsed.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise TemplateProblem(f"{where}: templates cannot include or import other files ({node})")
    over = _limit_problem(parsed)
    if over is not None:
        raise TemplateProblem(f"{where}: {over}")


# ---- the store ---------------------------------------------------------------------------

_shipped: dict[str, MessageTemplate] | None = None
_shipped_lock = threading.Lock()


def shipped() -> dict[str, MessageTemplate]:
    """The templates that ship with Parcours, read once."""
    global _shipped
    with _shipped_lock:
        if _shipped is None:
            found: dict[str, MessageTemplate] = {}
            for path in sorted(SHIPPED_DIR.glob("*.yaml")):
                document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                for template_id, source in document.items():
                    if template_id in found:
                        raise TemplateProblem(f"{path.name}: {template_id} is defined twice")
                    found[template_id] = check(template_id, source)
            _shipped = found
        return _shipped


def get(conn: Connection, template_id: str) -> MessageTemplate:
    """The brand's version of a template if it has one, else the shipped one. Read once per
    transaction: a batch of steps or deliveries uses a few templates many times, and a query
    per message was a tenth of a delivery batch's statements (`save` forgets it)."""
    cached: dict[str, MessageTemplate] = transaction_note(conn, _CACHE)
    template = cached.get(template_id)
    if template is None:
        template = cached[template_id] = _read(conn, template_id)
    return template


_CACHE = "parcours_templates"


def _read(conn: Connection, template_id: str) -> MessageTemplate:
    row = conn.execute(
        select(message_templates.c.content).where(message_templates.c.id == template_id)
    ).first()
    if row is not None:
        return MessageTemplate(template_id, _decode(row.content), "brand")
    template = shipped().get(template_id)
    if template is None:
        raise TemplateProblem(f"unknown template {template_id!r}")
    return template


def save(conn: Connection, template_id: str, source: Any, user: str, now: int) -> MessageTemplate:
    """Check, then add or replace the brand's template (nothing is written if it is wrong)."""
    template = check(template_id, source)
    conn.info.pop(_CACHE, None)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(message_templates).values(
        id=template_id,
        content=_encode(template.content).decode(),
        updated_by=user,
        updated_at=now,
    )
    new = statement.excluded
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[message_templates.c.id],
            set_={
                "content": new.content,
                "updated_by": new.updated_by,
                "updated_at": new.updated_at,
            },
        )
    )
    return MessageTemplate(template_id, template.content, "brand")


def brand_templates(conn: Connection) -> dict[str, TemplateContent]:
    """The brand's own templates: id -> content."""
    query = select(message_templates.c.id, message_templates.c.content).order_by(
        message_templates.c.id
    )
    return {row.id: _decode(row.content) for row in conn.execute(query)}


class TemplateSummary(msgspec.Struct, frozen=True):
    id: str
    origin: str  # shipped | brand
    locales: list[str]
    channels: list[str]
    version: str


def listing(conn: Connection) -> list[TemplateSummary]:
    """Every template, the brand's and the shipped ones, by id."""
    brand = set(conn.execute(select(message_templates.c.id)).scalars())
    result = []
    for template_id in sorted(brand | set(shipped())):
        template = get(conn, template_id)
        result.append(
            TemplateSummary(
                id=template_id,
                origin=template.origin,
                locales=sorted(template.content),
                channels=sorted(template.channels()),
                version=template.version,
            )
        )
    return result


def check_usage(
    conn: Connection, template_id: str, channels: list[str], where: str, purpose: str
) -> None:
    """A send step may use this template on these channels: it exists, has content for
    each of them (for `best`, at least one), and a transactional step does not send a
    WhatsApp template approved as marketing (consent, caps and price differ)."""
    try:
        template = get(conn, template_id)
    except TemplateProblem as exc:
        raise TemplateProblem(f"{where}: {exc}") from exc
    problem = usage_problem(template, channels, purpose)
    if problem is not None:
        raise TemplateProblem(f"{where}: {problem}")


def usage_problem(template: MessageTemplate, channels: list[str], purpose: str) -> str | None:
    """What stops a send step from using this template on these channels (check_usage),
    or None."""
    has = template.channels()
    # `sector`: a channel known at send time only (the brand's sector), skipped then when
    # the template has no content for it; its fallback is named.
    named = [c for c in channels if c not in ("best", "sector")]
    lacking = [c for c in named if c not in has]
    if lacking:
        return (
            f"template {template.id!r} has no {lacking[0]} content "
            f"(it has {', '.join(sorted(has))})"
        )
    if "best" in channels and not has:
        return f"template {template.id!r} has no content"
    if purpose == "transactional" and ("whatsapp" in named or "best" in channels):
        for locale, per_channel in sorted(template.content.items()):
            category = per_channel.get("whatsapp", {}).get("category")
            if category == "marketing":
                return (
                    f"template {template.id!r} ({locale}) is a WhatsApp marketing template; "
                    "a transactional step needs a utility or authentication one"
                )
    return None


# ---- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    template: str
    version: str
    channel: str
    locale: str
    fields: dict[str, Any]


_compiled: dict[tuple[str, str, str, str, str], Any] = {}
_compiled_lock = threading.Lock()
_inliner = css_inline.CSSInliner(load_remote_stylesheets=False)
_JINJA_TAG = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.S)


def _compile_mjml(where: str, source: str) -> str:
    """MJML to HTML with CSS inlined, Jinja tags kept intact: statements travel as HTML
    comments (never moved out of a table by the HTML parser), expressions as tokens."""
    saved: list[str] = []

    def protect(match: re.Match[str]) -> str:
        saved.append(match.group(0))
        n = len(saved) - 1
        return f"<!--pj{n}-->" if match.group(0).startswith("{%") else f"pj{n}pj"

    result = mjml_to_html(_JINJA_TAG.sub(protect, source))
    if result.errors:
        raise TemplateProblem(f"{where}.mjml: {result.errors[0]}")
    html = _inliner.inline(result.html)
    for n, tag in enumerate(saved):
        html = html.replace(f"<!--pj{n}-->", tag).replace(f"pj{n}pj", tag)
        if tag not in html:
            raise TemplateProblem(f"{where}.mjml: the Jinja tag {tag} could not be kept")
    return html


@dataclass(frozen=True)
class _Fixed:
    """A field without any Jinja in it (a preheader, a title): rendered once."""

    text: str

    def render(self, context: dict[str, Any]) -> str:
        return self.text


def _compile_text(env: SandboxedEnvironment, source: str) -> Any:
    compiled = env.from_string(source)
    if not any(mark in source for mark in ("{{", "{%", "{#")):
        return _Fixed(compiled.render())
    return compiled


def _compiled_field(template: MessageTemplate, channel: str, locale: str, name: str) -> Any:
    key = (template.id, template.version, locale, channel, name)
    with _compiled_lock:
        found = _compiled.get(key)
    if found is None:
        source = template.content[locale][channel][name]
        where = f"{template.id}.{locale}.{channel}.{name}"
        if name == "mjml":
            found = _compile_text(_html_env, _compile_mjml(where, _with_lang(source, locale)))
        elif name == "html":
            found = _compile_text(_html_env, _with_lang(source, locale))
        elif isinstance(source, list):  # parameters, or buttons (mappings of texts)
            found = [
                {key: _compile_text(_env, text) for key, text in item.items()}
                if isinstance(item, dict)
                else _compile_text(_env, item)
                for item in source
            ]
        else:
            found = _compile_text(_env, source)
        with _compiled_lock:
            _compiled[key] = found
    return found


def render(
    template: MessageTemplate,
    channel: str,
    context: dict[str, Any],
    locale: str | None,
    brand_locale: str = DEFAULT_LOCALE,
) -> Rendered:
    """Every field of the channel's content in the customer's language; TemplateProblem
    names the field and the variable that is missing."""
    chosen = template.locale_for(channel, locale, brand_locale)
    if chosen is None:
        raise TemplateProblem(f"template {template.id!r} has no {channel} content")
    fields: dict[str, Any] = {}
    # The language the content is in, for `money` and `date` (and for templates to read).
    message = context.get("message")
    context = {
        **context,
        "message": {**(message if isinstance(message, dict) else {}), "locale": chosen},
    }
    for name in template.content[chosen][channel]:
        compiled = _compiled_field(template, channel, chosen, name)
        try:
            if isinstance(compiled, list):
                value: Any = [
                    {key: _render_field(text, context) for key, text in item.items()}
                    if isinstance(item, dict)
                    else _render_field(item, context)
                    for item in compiled
                ]
            else:
                value = _render_field(compiled, context)
        except TemplateError as exc:
            raise TemplateProblem(
                f"{template.id}.{chosen}.{channel}.{name}: {exc.message or exc}"
            ) from exc
        except Exception as exc:  # a template's own error (1/0, int('x')...): named too
            raise TemplateProblem(
                f"{template.id}.{chosen}.{channel}.{name}: {type(exc).__name__}: {exc}"
            ) from exc
        fields["html" if name == "mjml" else name] = value
    if channel == "email" and "text" not in fields and "html" in fields:
        fields["text"] = html_to_text(fields["html"])
    if channel == "whatsapp" and fields.get("buttons"):
        problem = whatsapp_buttons.rendered_problem(fields["buttons"], fields.get("text"))
        if problem is not None:
            joint = "" if problem.startswith("[") else ": "
            raise TemplateProblem(f"{template.id}.{chosen}.whatsapp.buttons{joint}{problem}")
    return Rendered(template.id, template.version, channel, chosen, fields)


# Script, style and head blocks (any case), and every other tag. Case-insensitive only
# where it must be: the whole pattern under re.IGNORECASE took twice as long (measured).
_TAGS = re.compile(r"<(?:(?i:(script|style|head))\b.*?</(?i:\1)>|[^>]+>)", re.S)


_LINK = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*("[^"]*"|'[^']*')[^>]*>(.*?)</a\s*>""", re.S | re.I)
_KEPT = re.compile("\x00(\\d+)\x00")
_ITEMS = re.compile(r"<li\b[^>]*>", re.I)
_BREAKS = re.compile(r"<br\s*/?>|</(?:p|div|li|ul|ol|tr|h[1-6])\s*>", re.I)


def html_to_text(html: str) -> str:
    """A plain-text alternative for an HTML body without one: tags out, blank runs closed,
    and every link kept as its words and its address, `Back to my cart <https://...>` (the
    unsubscribe link, the button to the cart: a reader of the text part needs them too)."""
    links: list[str] = []

    def keep(match: re.Match[str]) -> str:
        address = html_module.unescape(match.group(1)[1:-1]).strip()
        words = " ".join(html_module.unescape(_TAGS.sub(" ", match.group(2))).split())
        if not address or address.startswith("#"):
            links.append(words)
        else:
            links.append(f"{words} <{address}>" if words and words != address else address)
        return f"\x00{len(links) - 1}\x00"

    text = _LINK.sub(keep, html)
    text = _BREAKS.sub("\n", _ITEMS.sub("\n- ", text))  # a list item, a paragraph: a line
    text = html_module.unescape(_TAGS.sub(" ", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line).strip() + "\n"
    return _KEPT.sub(lambda match: links[int(match.group(1))], text)


def _with_lang(source: str, locale: str) -> str:
    """An email body says its language (`<html lang="fr">`, `<mjml lang="fr">`, which MJML
    otherwise writes `und`), unless its author said one."""
    root = re.search(r"<(mjml|html)\b[^>]*>", source, re.I)
    if root is None or re.search(r"\blang\s*=", root.group(0), re.I):
        return source
    at = root.start() + 1 + len(root.group(1))
    return f'{source[:at]} lang="{html_module.escape(locale)}"{source[at:]}'


__all__ = [
    "CONTEXT_NAMES",
    "MessageTemplate",
    "Rendered",
    "TemplateContent",
    "TemplateProblem",
    "TemplateSummary",
    "brand_templates",
    "check",
    "check_usage",
    "get",
    "listing",
    "render",
    "save",
    "shipped",
]
