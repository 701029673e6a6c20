"""The Settings page's forms for the providers an owner sets up in the console (email by
SMTP or Postmark, SMS by Twilio, WhatsApp by Meta, app push by FCM and APNs, Wallet passes
for Apple Wallet and Google Wallet): what each
form shows (the stored values, never a secret: "stored", with its last four characters
when long; nothing of a pasted key), which channels the configuration sets (they are
changed there), and a refused field's problem in the viewer's language (docs/console.md,
"Settings")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from parcours.channels import ConnectionCheck, Providers, stored
from parcours.console.rendering import Viewer


@dataclass(frozen=True)
class FieldView:
    name: str
    kind: str
    value: str  # never a secret's
    required: bool
    choices: tuple[str, ...]
    stored_hint: str | None  # a secret: None when none is stored, else its last four or ""
    error: str = ""


@dataclass(frozen=True)
class FormView:
    channel: str
    provider: str
    fields: tuple[FieldView, ...]
    open: bool = False
    error: str = ""
    check: ConnectionCheck | None = None


@dataclass(frozen=True)
class ChannelView:
    channel: str
    by_configuration: str  # the configuration's provider, when it sets the channel
    saved: stored.Stored | None
    problem: str
    forms: tuple[FormView, ...] = field(default_factory=tuple)
    error: str = ""  # why a form posted for the channel was refused, when not for a field
    idle: bool = False  # saved, but beside no provider of its channel: not used


@dataclass(frozen=True)
class Attempt:
    """A form as it was posted, drawn again: its values, its problem, its check."""

    channel: str
    provider: str
    values: Mapping[str, str]
    error: stored.ProviderError | None = None
    check: ConnectionCheck | None = None


def channels_view(
    viewer: Viewer, providers: Providers, attempt: Attempt | None = None
) -> list[ChannelView]:
    """Each channel the console may set up, as the page draws it (empty: the providers
    are the configuration's only, as in a test's fixed set)."""
    if not isinstance(providers, stored.LiveProviders):
        return []
    with providers.db.read() as conn:
        saved = stored.stored(conn, providers.sealer)
    found: list[ChannelView] = []
    for channel in stored.CONSOLE_CHANNELS:
        section = providers.config.get(stored.channel_of(channel), {})
        if stored.by_configuration(providers.config, channel):
            refused = ""
            if attempt is not None and attempt.channel == channel and attempt.error is not None:
                refused = problem_text(viewer, attempt.error)
            found.append(
                ChannelView(
                    channel,
                    stored.table_of(channel) or str(section.get("provider")),
                    None,
                    "",
                    error=refused,
                )
            )
            continue
        one = saved.get(channel)
        forms = tuple(
            _form(viewer, channel, name, one, attempt) for (c, name) in stored.FORMS if c == channel
        )
        idle = (
            one is not None
            and channel in stored.NEEDS_OWN
            and not stored.has_own(providers.config, saved, stored.channel_of(channel))
        )
        found.append(ChannelView(channel, "", one, one.problem if one else "", forms, idle=idle))
    return found


def _form(
    viewer: Viewer,
    channel: str,
    provider: str,
    saved: stored.Stored | None,
    attempt: Attempt | None,
) -> FormView:
    mine = attempt is not None and (attempt.channel, attempt.provider) == (channel, provider)
    kept = saved if saved is not None and saved.provider == provider else None
    error = attempt.error if mine and attempt is not None else None
    fields: list[FieldView] = []
    for one in stored.FORMS[(channel, provider)]:
        if one.secret:
            value = ""
            secret = kept.secrets.get(one.name) if kept is not None else None
            hint = None if secret is None else stored.hint(secret)
            if one.kind == "key" and hint:
                hint = ""  # a key's last characters are its PEM's or JSON's closing
        else:
            hint = None
            if mine and attempt is not None:
                value = attempt.values.get(one.name, "")
            elif kept is not None:
                value = kept.settings.get(one.name, "")
            else:
                value = one.default
        problem = ""
        if error is not None and error.field == one.name:
            problem = problem_text(viewer, error)
        fields.append(
            FieldView(one.name, one.kind, value, one.required, one.choices, hint, problem)
        )
    whole = problem_text(viewer, error) if error is not None and not error.field else ""
    return FormView(
        channel,
        provider,
        tuple(fields),
        open=mine or (kept is not None and attempt is None),
        error=whole,
        check=attempt.check if mine and attempt is not None else None,
    )


def problem_text(viewer: Viewer, error: stored.ProviderError) -> str:
    """The problem in the viewer's language, naming its field as the form labels it."""
    values = dict(error.values)
    if error.field:
        values["field"] = viewer.t(f"console.providers.field.{error.field}")
    return viewer.t(error.key, **values)


def posted_values(data: Mapping[str, str], channel: str, provider: str) -> dict[str, str]:
    """The posted fields of the provider's form (a form's field is `<name>`)."""
    names = [one.name for one in stored.FORMS.get((channel, provider), ())]
    return {name: data[name] for name in names if name in data}
