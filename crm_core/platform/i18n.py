"""Error messages in the client's language (docs/api.md, "Languages"): Russian or English, as
`Accept-Language` asks, else `DEFAULT_LANGUAGE`.

Messages are written in English across the code; they are translated once, where an error is
rendered into a response (`CrmError.to_body`), from gettext catalogs keyed by the English
template: `crm_core/locale/<language>/LC_MESSAGES/crm.po`, compiled to `crm.mo` by
scripts/install (and the Dockerfile). A msgid may name placeholders (`"{field}: {message}"`): a
message matches it when the template's text surrounds the values, and each value is translated
in turn when it is itself a message of the catalog (a field's complaint, a service's name). A
message no template matches stays English; the `code` never changes.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel.messages.mofile import read_mo

LANGUAGES = ("en", "ru")
SOURCE = "en"  # the language the messages are written in
LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"  # crm_core/locale
DOMAIN = "crm"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_DEPTH = 3  # placeholders within placeholders, at most

# the language of the request being answered (set by handlers/middlewares.py)
LANGUAGE: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=SOURCE)


def negotiate(accept_language: str | None, default: str) -> str:
    """The language to answer in: the first of `Accept-Language` (by its q-values) that the
    service speaks (`ru-RU` is `ru`), else `default`."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            choices.append((-quality, index, primary))
    return min(choices)[2] if choices else default


@dataclass(frozen=True)
class Template:
    msgid: str
    translation: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """One language's messages: plain ones by msgid, templates with placeholders in order."""

    plain: dict[str, str]
    templates: tuple[Template, ...]
    by_id: dict[str, str]  # every msgid, placeholders and all

    def translate(self, message: str, depth: int = 0) -> str:
        found = self.plain.get(message)
        if found is not None:
            return found
        if depth >= MAX_DEPTH:
            return message
        for template in self.templates:
            match = template.pattern.fullmatch(message)
            if match is None:
                continue
            values = {n: self.translate(match.group(n), depth + 1) for n in template.names}
            return _fill(template.translation, values)
        return message


def _fill(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _template(msgid: str, translation: str) -> Template:
    names = tuple(PLACEHOLDER.findall(msgid))
    parts = PLACEHOLDER.split(msgid)  # text, name, text, name, ..., text
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>.+?)"
        for index, part in enumerate(parts)
    )
    return Template(msgid, translation, re.compile(regex, re.DOTALL), names)


def catalog_file(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.mo"


@cache
def catalog(language: str) -> Catalog | None:
    """The compiled catalog of `language` (read once per process), None for the source
    language or when it was not compiled (scripts/install compiles it)."""
    path = catalog_file(language)
    if language == SOURCE or not path.exists():
        return None
    with path.open("rb") as handle:
        messages = read_mo(handle)
    plain: dict[str, str] = {}
    templates: list[Template] = []
    for message in messages:
        if not message.id or not isinstance(message.id, str) or not message.string:
            continue
        translation = str(message.string)
        if PLACEHOLDER.search(message.id):
            templates.append(_template(message.id, translation))
        else:
            plain[message.id] = translation
    # the most specific template first: the longest literal text
    templates.sort(key=lambda t: -len(PLACEHOLDER.sub("", t.msgid)))
    return Catalog(
        plain, tuple(templates), {**plain, **{t.msgid: t.translation for t in templates}}
    )


def translate(message: str, language: str | None = None) -> str:
    """`message` in `language` (the request's, by default); unchanged when no catalog entry
    matches it."""
    found = catalog(language or LANGUAGE.get())
    return message if found is None else found.translate(message)


def gettext(msgid: str, **values: object) -> str:
    """The page text `msgid` (an English template) in the request's language, its `{name}`
    placeholders filled from `values` (the /admin templates' `_`)."""
    found = catalog(LANGUAGE.get())
    text = msgid if found is None else found.by_id.get(msgid, msgid)
    return _fill(text, {name: str(value) for name, value in values.items()})


def language() -> str:
    """The language of the request being answered (`<html lang>`)."""
    return LANGUAGE.get()
