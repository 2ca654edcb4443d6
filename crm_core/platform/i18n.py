"""Error messages in the client's language (docs/api.md, "Languages"): Russian or English, as
`Accept-Language` asks, else `DEFAULT_LANGUAGE`.

Messages are written in English across the code; they are translated once, where an error is
rendered into a response (`CrmError.to_body`), from gettext catalogs keyed by the English
template: `crm_core/locale/<language>/LC_MESSAGES/crm.po`, compiled to `crm.mo` by
scripts/install, scripts/serve and the Dockerfile. A `crm.mo` missing or older than its
`crm.po` (a checkout that pulled new messages without installing again) is not trusted: the
`.po` is read instead, with one WARNING, so a message is never answered in English for want of
a compile. A msgid may name placeholders (`"{field}: {message}"`): a
message matches it when the template's text surrounds the values, and each value is translated
in turn when it is itself a message of the catalog (a field's complaint, a service's name). A
message no template matches stays English; the `code` never changes.

pydantic's own field messages ("Field required", "String should have at most 100 characters")
are translated by the error's `type` and `ctx`, not by their English text: that wording is
pydantic's, and it changes between its versions (plural endings come and go, a sentence is
reworded), while the types and their `ctx` names are its stable interface. `pydantic_message`
turns one error into a `Text`: a `str` holding the English pydantic wrote (what English clients
and the logs read, unchanged), which also carries the msgid of `PYDANTIC_MESSAGES[type]` (our
English template of that type, named by its `ctx` keys) and the `ctx` values, so `translate`
looks the msgid up and fills in the values (the limits, the allowed choices, the expected type
stay as pydantic gave them). A type without a template, or whose `ctx` lacks a value the template
names, keeps pydantic's English; a custom error type (ours, e.g. `offset_too_deep`) is our own
English, translated by its text like every message of ours, and so is the text our validators
raise as `ValueError` (the `{error}` of `value_error`). tests/i18n fails when a type the request
models can raise has no translation.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog as BabelCatalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

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
        if isinstance(message, Text):
            return self._translate_text(message, depth)
        found = self.plain.get(message)
        if found is not None:
            return found
        if depth >= MAX_DEPTH:
            return message
        path = FIELD_PATH.fullmatch(message)
        if path is not None:
            # `rows.0.link: row not found`: the path kept, the complaint translated on its own,
            # before a template that begins with a value ("{what} not found") could take both
            complaint = self.translate(path.group("message"), depth + 1)
            if complaint != path.group("message"):
                layout = self.by_id.get(FIELD_MESSAGE, FIELD_MESSAGE)
                return _fill(layout, {"field": path.group("field"), "message": complaint})
        for template in self.templates:
            match = template.pattern.fullmatch(message)
            if match is None:
                continue
            values = {n: self.translate(match.group(n), depth + 1) for n in template.names}
            return _fill(template.translation, values)
        return message

    def _translate_text(self, text: Text, depth: int) -> str:
        """A `Text` by its msgid: its values filled in, translated in turn unless verbatim;
        without a translation of the msgid, its English is translated as any message is."""
        translation = self.by_id.get(text.msgid)
        if translation is None or depth >= MAX_DEPTH:
            return self.translate(str(text), depth)
        values: dict[str, str] = {}
        for name, value in text.values.items():
            if isinstance(value, Text) or (isinstance(value, str) and name not in text.verbatim):
                values[name] = self.translate(value, depth + 1)
            else:
                values[name] = str(value)
        return _fill(translation, values)


class Text(str):
    """A message that names its catalog entry: the English text it reads as everywhere (logs,
    English answers), and the msgid and values it is translated by, so the translation does
    not depend on matching an English wording that is not ours (pydantic's). A value that is a
    `str` is translated in turn, but for the names in `verbatim` (a field's path, a pattern); a
    `Text` value always is, by its own msgid."""

    msgid: str
    values: Mapping[str, object]
    verbatim: frozenset[str]

    def __new__(
        cls,
        english: str,
        msgid: str,
        values: Mapping[str, object] | None = None,
        verbatim: Iterable[str] = (),
    ) -> Text:
        text = super().__new__(cls, english)
        text.msgid = msgid
        text.values = dict(values or {})
        text.verbatim = frozenset(verbatim)
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (Text, (str(self), self.msgid, self.values, self.verbatim))

    @classmethod
    def of(cls, msgid: str, verbatim: Iterable[str] = (), **values: object) -> Text:
        """The message of template `msgid` with `values`: its English is the template filled."""
        english = _fill(msgid, {name: str(value) for name, value in values.items()})
        return cls(english, msgid, values, verbatim)


FIELD_MESSAGE = "{field}: {message}"  # a request's error message: its first field's complaint
# a message made as `f"{field}: {message}"` by hand: a field's path (`rows.0.amount`, `data[]`)
FIELD_PATH = re.compile(r"(?P<field>[A-Za-z_][\w.\[\]-]*): (?P<message>.+)", re.DOTALL)


def field_message(field: str, message: str) -> Text:
    """The error message naming `field` (a dotted path, never translated) and its complaint."""
    return Text.of(FIELD_MESSAGE, verbatim=("field",), field=field, message=message)


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


def _read_messages(language: str) -> BabelCatalog | None:
    """`language`'s messages: the compiled `.mo`, or its `.po` when the `.mo` is missing or
    older (fuzzy entries left out, as `pybabel compile` leaves them); None when neither is."""
    compiled = catalog_file(language)
    source = compiled.with_suffix(".po")
    if compiled.exists() and (
        not source.exists() or compiled.stat().st_mtime >= source.stat().st_mtime
    ):
        with compiled.open("rb") as handle:
            return read_mo(handle)
    if not source.exists():
        return None
    log.warning(
        "%s is missing or older than %s: reading the .po (./scripts/install compiles it)",
        compiled,
        source.name,
    )
    with source.open("rb") as handle:
        messages = read_po(handle)
    for message in list(messages):
        if message.fuzzy and message.id:
            messages.delete(message.id, message.context)
    return messages


@cache
def catalog(language: str) -> Catalog | None:
    """The catalog of `language` (read once per process), None for the source language or
    when it has none."""
    messages = None if language == SOURCE else _read_messages(language)
    if messages is None:
        return None
    plain: dict[str, str] = {}
    plain_ids: dict[str, str] = {}  # found by a `Text`'s msgid only
    templates: list[Template] = []
    for message in messages:
        if not message.id or not isinstance(message.id, str) or not message.string:
            continue
        translation = str(message.string)
        if message.id in TEXT_ONLY:
            plain_ids[message.id] = translation
        elif PLACEHOLDER.search(message.id):
            templates.append(_template(message.id, translation))
        else:
            plain[message.id] = translation
    # the most specific template first: the longest literal text
    templates.sort(key=lambda t: -len(PLACEHOLDER.sub("", t.msgid)))
    return Catalog(
        plain,
        tuple(templates),
        {**plain, **plain_ids, **{t.msgid: t.translation for t in templates}},
    )


def translate(message: str, language: str | None = None) -> str:
    """`message` in `language` (the request's, by default); unchanged when no catalog entry
    matches it."""
    found = catalog(language or LANGUAGE.get())
    return message if found is None else found.translate(message)


def gettext(msgid: str, **values: object) -> str:
    """The page text `msgid` (an English template) in the request's language, its `{name}`
    placeholders filled from `values` (the /admin templates' `_`). A message that is not a
    msgid itself (an error's, `_(error.message)` on the panel's error page) is translated as an
    answer's is: by the template it matches, its values in turn."""
    found = catalog(LANGUAGE.get())
    if found is None:
        text = msgid
    elif msgid in found.by_id and not isinstance(msgid, Text):
        text = found.by_id[msgid]
    else:
        text = found.translate(msgid)
    return _fill(text, {name: str(value) for name, value in values.items()})


def language() -> str:
    """The language of the request being answered (`<html lang>`)."""
    return LANGUAGE.get()


# ---- pydantic's field messages, by their error type -----------------------------------------

# Our English template of each pydantic error type, its placeholders named by the error's `ctx`
# keys: the msgid its translation is found by (the English answer keeps pydantic's own text).
# Every type pydantic_core lists is here (tests/i18n/test_field_messages.py).
PYDANTIC_MESSAGES: dict[str, str] = {
    "no_such_attribute": "Object has no attribute '{attribute}'",
    "json_invalid": "Invalid JSON: {error}",
    "json_type": "JSON input should be string, bytes or bytearray",
    "needs_python_object": "Cannot check `{method_name}` when validating from json",
    "recursion_loop": "Recursion error - cyclic reference detected",
    "recursion_depth_exceeded": "Recursion error - maximum validation depth exceeded",
    "missing": "Field required",
    "frozen_field": "Field is frozen",
    "frozen_instance": "Instance is frozen",
    "extra_forbidden": "unknown field",
    "invalid_key": "Keys should be strings",
    "get_attribute_error": "Error extracting attribute: {error}",
    "model_type": "Input should be a valid dictionary or instance of {class_name}",
    "model_attributes_type": "Input should be a valid dictionary or object to extract fields from",
    "dataclass_type": "Input should be a dictionary or an instance of {class_name}",
    "dataclass_exact_type": "Input should be an instance of {class_name}",
    "named_tuple_type": "Input should be a tuple, list, dictionary or an instance of {class_name}",
    "default_factory_not_called": (
        "The default factory uses validated data, but at least one validation error occurred"
    ),
    "none_required": "Input should be None",
    "greater_than": "Input should be greater than {gt}",
    "greater_than_equal": "Input should be greater than or equal to {ge}",
    "less_than": "Input should be less than {lt}",
    "less_than_equal": "Input should be less than or equal to {le}",
    "multiple_of": "Input should be a multiple of {multiple_of}",
    "finite_number": "Input should be a finite number",
    "too_short": (
        "{field_type} should have at least {min_length} items after validation, not {actual_length}"
    ),
    "too_long": (
        "{field_type} should have at most {max_length} items after validation, not {actual_length}"
    ),
    "iterable_type": "Input should be iterable",
    "iteration_error": "Error iterating over object, error: {error}",
    "string_type": "Input should be a valid string",
    "string_unicode": (
        "Input should be a valid string, unable to parse raw data as a unicode string"
    ),
    "string_too_short": "String should have at least {min_length} characters",
    "string_too_long": "String should have at most {max_length} characters",
    "string_pattern_mismatch": "String should match pattern '{pattern}'",
    "string_not_ascii": "String should contain only ASCII characters",
    "enum": "Input should be {expected}",
    "dict_type": "Input should be a valid dictionary",
    "frozen_dict_type": "Input should be a valid frozendict",
    "ordered_dict_type": "Input should be a valid OrderedDict",
    "counter_type": "Input should be a valid Counter",
    "mapping_type": "Input should be a valid mapping, error: {error}",
    "list_type": "Input should be a valid list",
    "deque_type": "Input should be a valid deque",
    "tuple_type": "Input should be a valid tuple",
    "set_type": "Input should be a valid set",
    "set_item_not_hashable": "Set items should be hashable",
    "bool_type": "Input should be a valid boolean",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "int_type": "Input should be a valid integer",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_parsing_size": "Unable to parse input string as an integer, exceeded maximum size",
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "float_type": "Input should be a valid number",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "bytes_type": "Input should be a valid bytes",
    "bytes_too_short": "Data should have at least {min_length} bytes",
    "bytes_too_long": "Data should have at most {max_length} bytes",
    "bytes_invalid_encoding": "Data should be valid {encoding}: {encoding_error}",
    "value_error": "Value error, {error}",
    "assertion_error": "Assertion failed, {error}",
    "literal_error": "Input should be {expected}",
    "missing_sentinel_error": "Input should be the 'MISSING' sentinel",
    "ellipsis_error": "Input should be the 'Ellipsis' literal",
    "date_type": "Input should be a valid date",
    "date_parsing": "Input should be a valid date in the format YYYY-MM-DD, {error}",
    "date_from_datetime_parsing": "Input should be a valid date or datetime, {error}",
    "date_from_datetime_inexact": (
        "Datetimes provided to dates should have zero time - e.g. be exact dates"
    ),
    "date_past": "Date should be in the past",
    "date_future": "Date should be in the future",
    "time_type": "Input should be a valid time",
    "time_parsing": "Input should be in a valid time format, {error}",
    "datetime_type": "Input should be a valid datetime",
    "datetime_parsing": "Input should be a valid datetime, {error}",
    "datetime_object_invalid": "Invalid datetime object, got {error}",
    "datetime_from_date_parsing": "Input should be a valid datetime or date, {error}",
    "datetime_past": "Input should be in the past",
    "datetime_future": "Input should be in the future",
    "timezone_naive": "Input should not have timezone info",
    "timezone_aware": "Input should have timezone info",
    "timezone_offset": "Timezone offset of {tz_expected} required, got {tz_actual}",
    "time_delta_type": "Input should be a valid timedelta",
    "time_delta_parsing": "Input should be a valid timedelta, {error}",
    "frozen_set_type": "Input should be a valid frozenset",
    "is_instance_of": "Input should be an instance of {class}",
    "is_subclass_of": "Input should be a subclass of {class}",
    "callable_type": "Input should be callable",
    "union_tag_invalid": (
        "Input tag '{tag}' found using {discriminator} does not match any of the expected "
        "tags: {expected_tags}"
    ),
    "union_tag_not_found": "Unable to extract tag using discriminator {discriminator}",
    "arguments_type": "Arguments must be a tuple, list or a dictionary",
    "missing_argument": "Missing required argument",
    "unexpected_keyword_argument": "Unexpected keyword argument",
    "missing_keyword_only_argument": "Missing required keyword only argument",
    "unexpected_positional_argument": "Unexpected positional argument",
    "missing_positional_only_argument": "Missing required positional only argument",
    "multiple_argument_values": "Got multiple values for argument",
    "url_type": "URL input should be a string or URL",
    "url_parsing": "Input should be a valid URL, {error}",
    "url_syntax_violation": "Input violated strict URL syntax rules, {error}",
    "url_too_long": "URL should have at most {max_length} characters",
    "url_scheme": "URL scheme should be {expected_schemes}",
    "uuid_type": "UUID input should be a string, bytes or UUID object",
    "uuid_parsing": "Input should be a valid UUID, {error}",
    "uuid_version": "UUID version {expected_version} expected",
    "decimal_type": "Decimal input should be an integer, float, string or Decimal object",
    "decimal_parsing": "Input should be a valid decimal",
    "decimal_max_digits": "Decimal input should have no more than {max_digits} digits in total",
    "decimal_max_places": "Decimal input should have no more than {decimal_places} decimal places",
    "decimal_whole_digits": (
        "Decimal input should have no more than {whole_digits} digits before the decimal point"
    ),
    "fraction_type": "Fraction input should be an integer, float, string or Fraction object",
    "fraction_parsing": "Input is not a valid fraction",
    "complex_type": "Input should be a valid python complex object, a number, or a complex string",
    "complex_str_parsing": "Input should be a valid complex string",
}
# `ctx` values that are words to translate in turn (a reason, "List"); the others (a limit, a
# pattern, a tag) are kept as pydantic gave them, and so are the choices but for their "or"
TRANSLATED_CONTEXT = frozenset({"error", "field_type", "encoding_error"})
# `ctx` values that list choices as pydantic writes them: "'a', 'b' or 'c'"
CHOICES_CONTEXT = frozenset({"expected", "expected_schemes"})
CHOICES = "{choices} or {choice}"  # the msgid of the last "or"
# msgids a `Text` names but no English text is matched against: "{choices} or {choice}" would
# match any message with an " or " in it ("the sms id is missing or too long")
TEXT_ONLY = frozenset({CHOICES})
_REPR = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,'\"]+")
_CHOICES = re.compile(
    rf"(?P<choices>(?:{_REPR.pattern})(?:, (?:{_REPR.pattern}))*) or (?P<choice>{_REPR.pattern})"
)


def _choices(expected: str) -> str:
    """pydantic's list of choices ("'a', 'b' or 'c'") with its "or" to translate, when it reads
    as one (the choices themselves are kept)."""
    match = _CHOICES.fullmatch(expected)
    if match is None:
        return expected
    return Text.of(CHOICES, verbatim=("choices", "choice"), **match.groupdict())


def pydantic_message(error: Mapping[str, Any]) -> str:
    """The message of one of pydantic's errors (an item of `ValidationError.errors()`): the
    English pydantic wrote, as a `Text` that translates by the error's type and `ctx`; a type
    we have no template of (a custom one of ours) is its plain English."""
    kind = error["type"]
    context: Mapping[str, Any] = error.get("ctx") or {}
    template = PYDANTIC_MESSAGES.get(kind)
    # an unknown field: our own words, not pydantic's "Extra inputs are not permitted"
    english = PYDANTIC_MESSAGES["extra_forbidden"] if kind == "extra_forbidden" else error["msg"]
    if template is None:
        return str(english)
    names = PLACEHOLDER.findall(template)
    if any(name not in context for name in names):
        return str(english)  # a `ctx` of another shape (pydantic's email check): by its text
    values: dict[str, object] = {}
    for name in names:
        value = context[name]
        if name in CHOICES_CONTEXT and isinstance(value, str):
            value = _choices(value)
        values[name] = value if isinstance(value, int | float | str) else str(value)
    return Text(english, template, values, verbatim=set(names) - TRANSLATED_CONTEXT)
