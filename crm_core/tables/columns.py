"""Column types (docs/api.md "Tables"): one class per type, registered in one registry.

A type owns everything about its values and definitions: coercion from JSON into the stored
BSON value (with the typecast rules), rendering back to JSON, the JSON schema for the docs, the
capabilities filter operators ask for, its own settings (select options and their ids, string
limits, a link's target), conversion, indexes, and a random value for tests and benchmarks. No
other module branches on a type's name (tests/platform/test_column_types_guard.py). Families
share behaviour: the text family serves string, email, phone and url.

`Column` is a column definition as every module reads it, parsed from and dumped back to the
stored shape of `_tables.columns` (docs/storage.md).
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import math
import random
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

import email_validator
from bson import ObjectId
from bson.decimal128 import Decimal128
from pydantic import BaseModel, ConfigDict, Field

from crm_core.platform.ids import parse_object_id
from crm_core.platform.phones import InvalidPhone, normalise_phone
from crm_core.platform.registry import Registry
from crm_core.platform.values import ValueContext as ValueContext
from crm_core.tables.computed.syntax import MAX_FORMULA_CHARS
from crm_core.tables.currencies import MINOR_UNITS

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_EXACT_INT = 2**53  # every integer up to this magnitude is exact as a double
URL_MAX_LENGTH = 2048

# What a type's values admit; each filter operator names the one it needs
# (crm_core/tables/filters.py)
EQUALITY = "equality"  # eq, neq, in, not_in
BLANK = "blank"  # blank, not_blank: the value may be missing
TEXT = "text"  # contains, starts_with, ends_with
ORDERED = "ordered"  # gt, gte, lt, lte, between
PERIOD = "period"  # is_within: values are moments
NUMERIC = "numeric"  # sum and avg aggregate them (crm_core/tables/aggregate.py)
SET = "set"  # has_any_of, has_all_of, has_none_of: values are lists of option ids
EQUALITY_CAPS = frozenset({EQUALITY, BLANK})
TEXT_CAPS = EQUALITY_CAPS | {TEXT}
ORDER_CAPS = EQUALITY_CAPS | {ORDERED}


class ColumnValueError(ValueError):
    """A value does not fit its column; the message says why, the caller names the column."""


class DefinitionError(ColumnValueError):
    """A column definition does not fit its type; `field` is the definition's field at fault
    (relative: `options.2.id`), the table service prefixes the column's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# ---- the column model ---------------------------------------------------------------------


@dataclass(frozen=True)
class SelectOption:
    id: int
    label: str
    color: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SelectOption:
        return cls(int(doc["id"]), str(doc["label"]), doc.get("color"))

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "label": self.label}
        if self.color:
            doc["color"] = self.color
        return doc


# the stored fields of a column definition, in the order they are written (docs/storage.md)
COMMON_FIELDS = ("key", "name", "type", "required", "unique", "indexed", "default")


@dataclass(frozen=True)
class Column:
    """One column definition of a table, parsed once when the table is loaded
    (`crm_core.tables.definitions.Table`) and dumped back to the stored shape by `to_doc`.

    The common fields are those of every type; the type's own settings (`max_length`,
    `validators`, `table`, `options`, `max_option_id`) are None where the type has none, and
    `extra` keeps the settings of a registered type this model does not name."""

    key: str
    type: str
    name: str
    required: bool = False
    unique: bool = False
    indexed: bool = False
    default: Any = None
    predefined: bool = False
    max_length: int | None = None
    validators: tuple[str, ...] | None = None
    table: str | None = None
    options: tuple[SelectOption, ...] | None = None
    max_option_id: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Column:
        known = {*COMMON_FIELDS, "predefined", *SETTINGS_FIELDS}
        options = doc.get("options")
        validators = doc.get("validators")
        max_option_id = doc.get("max_option_id")
        return cls(
            key=str(doc["key"]),
            type=str(doc["type"]),
            name=str(doc.get("name") or doc["key"]),
            required=bool(doc.get("required")),
            unique=bool(doc.get("unique")),
            indexed=bool(doc.get("indexed")),
            default=doc.get("default"),
            predefined=bool(doc.get("predefined")),
            max_length=doc.get("max_length"),
            validators=None if validators is None else tuple(validators),
            table=doc.get("table"),
            options=None if options is None else tuple(SelectOption.from_doc(o) for o in options),
            max_option_id=None if max_option_id is None else int(max_option_id),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def to_doc(self) -> dict[str, Any]:
        """The stored shape: the common fields, then the settings this column has."""
        doc: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "unique": self.unique,
            "indexed": self.indexed,
            "default": self.default,
        }
        if self.max_length is not None:
            doc["max_length"] = self.max_length
        if self.validators is not None:
            doc["validators"] = list(self.validators)
        if self.table is not None:
            doc["table"] = self.table
        if self.predefined:
            doc["predefined"] = True
        if self.options is not None:
            doc["options"] = [o.to_doc() for o in self.options]
        if self.max_option_id is not None:
            doc["max_option_id"] = self.max_option_id
        doc.update(self.extra)
        return doc


# the type-specific fields `Column` names; `ColumnType.settings_model` says which a type has
SETTINGS_FIELDS = ("max_length", "validators", "table", "options", "max_option_id")


class References(Protocol):
    """What reference types ask about the caller's world. The row service answers
    (crm_core/tables/references.py), so column types depend on no table or account code."""

    async def readable_rows(self, table: str, ids: list[Any]) -> set[Any]:
        """Those of `ids` that are rows of `table` the caller may read."""
        ...

    async def tenant_users(self, ids: list[str]) -> set[str]:
        """Those of `ids` that are users of the caller's tenant."""
        ...


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StringSettings(NoSettings):
    max_length: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Longest value; at most STRING_MAX_LENGTH"
    )
    validators: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Names of extra checks: inn, kpp, ogrn (see GET /api/meta/validators)",
    )


class LinkSettings(NoSettings):
    table: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Key of the table whose rows this column references",
    )


class SelectOptionIn(NoSettings):
    id: int | None = Field(default=None, ge=1, le=INT64_MAX, description="Given or assigned")
    label: str = Field(min_length=1, max_length=255)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")


class SelectSettings(NoSettings):
    options: list[SelectOptionIn] = Field(default_factory=list, max_length=1000)


class ColumnType:
    """Base of every column type: every decision that depends on a column's type is a method
    or class attribute here, so no other module branches on a type's name.

    Subclasses set `name`, `capabilities` (what filter operators may apply),
    `value_annotation` (the Python/JSON type of a value, for the definition models) and
    `settings_model` (type-specific fields of a column definition), and implement `coerce`,
    `render` and `random_value`. The other hooks have defaults that fit most types.
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = EQUALITY_CAPS
    value_annotation: ClassVar[Any] = str
    settings_model: ClassVar[type[BaseModel]] = NoSettings
    value_schema: ClassVar[dict[str, Any]] = {}
    references: ClassVar[bool] = False  # values point at other objects: see missing_references
    # values are rows of the table named by the column's `table` setting (`target_table`)
    links_rows: ClassVar[bool] = False
    sms_recipient: ClassVar[bool] = False  # values can be SMS recipients
    holds_files: ClassVar[bool] = False  # values are uploaded files (crm_core/files/attachments.py)
    # values are numbered by the server from the table's sequence when a row is created
    # (crm_core/tables/sequences.py); a write that gives one is a 400 naming the column
    numbered: ClassVar[bool] = False
    sortable: ClassVar[bool] = True  # rows can be sorted by the column
    unique_values: ClassVar[bool] = True  # a column may be `unique` (values are hashable)
    # values are computed on read inside the database, never written (crm_core/tables/computed)
    computed: ClassVar[bool] = False

    # ---- values ---------------------------------------------------------------------------

    async def missing_references(
        self, refs: References, column: Column, values: list[Any]
    ) -> set[Any]:
        """For reference types: which of the stored values point at nothing the caller may
        see (in the caller's tenant), asked through `refs`. The row service turns them into
        400s."""
        return set()

    def missing_reference_message(self, column: Column) -> str:
        """The 400 message for a value `missing_references` named."""
        return "no such object"

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> object:
        """Turn a JSON value (never None) into the stored BSON value, or raise ColumnValueError.

        `lenient` is the typecast used when a column changes type: the value is the old value
        rendered as JSON, and strings are parsed where that makes sense (`"42"` to 42).
        """
        raise NotImplementedError

    def render(self, column: Column, stored: object) -> object:
        """Turn a stored value into its JSON form."""
        return stored

    def convert(
        self,
        old_type: ColumnType,
        old: Column,
        new: Column,
        stored: object,
        vctx: ValueContext,
    ) -> object:
        """The stored value under `new` (of this type) of a value stored under `old`: by
        default the old type's `export_value` read by this type's typecast. Raise
        ColumnValueError when the value cannot be kept."""
        return self.coerce(new, old_type.export_value(old, stored), vctx, lenient=True)

    def column_schema(self, column: Column) -> dict[str, Any]:
        """The JSON schema of one column's values (the tenant's API document): the type's
        `value_schema` with the column's own limits (select option ids as an enum)."""
        schema = copy.deepcopy(self.value_schema)
        if column.options is not None:
            schema["enum"] = [option.id for option in column.options]
            labels = ", ".join(f"{option.id}: {option.label}" for option in column.options)
            schema["description"] = f"Select option id ({labels})" if labels else "Select option id"
        if column.max_length is not None and schema.get("type") == "string":
            schema["maxLength"] = column.max_length
        return schema

    def blank_conditions(self, field: str) -> list[dict[str, Any]]:
        """The conditions of a blank value (the `blank` filter): missing, null, ""."""
        return [{field: None}, {field: ""}]

    def metric_value(self, column: Column, op: str, value: object) -> object:
        """A `sum` or `avg` of the column's values as answered (aggregate); None: no value."""
        return value

    def export_value(self, column: Column, stored: object) -> object:
        """The JSON value handed to another type when the column changes type."""
        return self.render(column, stored)

    def cell_value(self, column: Column, stored: object) -> object:
        """The plain value of a spreadsheet cell (exports); dates are handled by the caller."""
        return stored

    def parse_filter_value(self, column: Column, value: object, vctx: ValueContext) -> object:
        """A filter operand is parsed like a row value."""
        return self.coerce(column, value, vctx)

    def random_value(self, column: Column, rng: random.Random) -> object:
        """A valid JSON input value, for tests and benchmarks."""
        raise NotImplementedError

    # ---- definitions ----------------------------------------------------------------------

    @classmethod
    def settings_fields(cls) -> frozenset[str]:
        """The stored settings a column of this type has (`SETTINGS_FIELDS` it uses)."""
        fields = set(cls.settings_model.model_fields)
        return frozenset(fields)

    def normalise_settings(self, raw: Mapping[str, Any], previous: Column | None) -> dict[str, Any]:
        """The type's own stored settings from a validated definition (`raw`: the input model
        dumped); `previous` is the column being changed, if any. Raise DefinitionError."""
        return {
            name: raw[name]
            for name in self.settings_fields()
            if raw.get(name) is not None and raw.get(name) != []
        }

    def check_definition(self, column: Column, vctx: ValueContext) -> None:
        """Raise DefinitionError when the column's own settings do not fit (e.g. limits)."""

    def removed_values(self, old: Column, new: Column) -> list[Any]:
        """Stored values that no longer fit after a change of settings of a column that keeps
        this type (a removed select option): the table service clears them from rows."""
        return []

    def needs_conversion(self, old: Column, new: Column) -> bool:
        """Whether changing `old` into `new` (of this type) must convert the stored values."""
        return old.type != new.type

    def target_table(self, column: Column) -> str | None:
        """The table whose rows the values reference (a link's target), if any."""
        return None

    def check_change_from(self, old: Column) -> None:
        """Raise DefinitionError (field `type`) when the column `old`, of another type, may
        not become one of this type."""

    def plain_index(self, column: Column) -> bool:
        """Whether a non-unique column gets an index."""
        return column.indexed


def _wrong_type(expected: str, value: object) -> ColumnValueError:
    return ColumnValueError(f"expected {expected}, got {_json_type(value)}")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ---- the text family ----------------------------------------------------------------------


class TextColumnType(ColumnType):
    """Strings checked and normalised by `normalise`; shares the text filter operators."""

    capabilities = TEXT_CAPS
    value_schema = {"type": "string"}
    max_length: ClassVar[int] = 10_000

    def limit(self, column: Column, vctx: ValueContext) -> int:
        return min(self.max_length, vctx.string_max_length)

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> str:
        if lenient and isinstance(value, bool | int | float):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str):
            raise _wrong_type("a string", value)
        limit = self.limit(column, vctx)
        if len(value) > limit:
            raise ColumnValueError(f"is longer than {limit} characters")
        return self.normalise(value, vctx)

    def normalise(self, value: str, vctx: ValueContext) -> str:
        return value


class StringType(TextColumnType):
    name = "string"
    settings_model = StringSettings

    sms_recipient = True

    def limit(self, column: Column, vctx: ValueContext) -> int:
        own = column.max_length
        return min(own, vctx.string_max_length) if own else vctx.string_max_length

    def check_definition(self, column: Column, vctx: ValueContext) -> None:
        own = column.max_length
        if own and own > vctx.string_max_length:
            raise DefinitionError(
                "max_length", f"max_length may be at most {vctx.string_max_length}"
            )

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type or old.max_length != new.max_length

    def random_value(self, column: Column, rng: random.Random) -> str:
        words = ["ООО", "Ромашка", "Acme", "Lead", "договор", "client", "Север", "deal"]
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))


class EmailType(TextColumnType):
    name = "email"
    max_length = 320
    value_schema = {"type": "string", "format": "email"}

    def normalise(self, value: str, vctx: ValueContext) -> str:
        return vctx.parse_once("email", value, self._parse, ColumnValueError)

    @staticmethod
    def _parse(value: str) -> str:
        try:
            result = email_validator.validate_email(value.strip(), check_deliverability=False)
        except email_validator.EmailNotValidError as exc:
            raise ColumnValueError(f"is not a valid email address ({exc})") from None
        return result.normalized

    def random_value(self, column: Column, rng: random.Random) -> str:
        user = "".join(rng.choices(string.ascii_lowercase, k=8))
        return f"{user}@example.com"


class PhoneType(TextColumnType):
    name = "phone"
    max_length = 64
    value_schema = {"type": "string", "description": "E.164 in answers, e.g. +79161234567"}
    sms_recipient = True

    def normalise(self, value: str, vctx: ValueContext) -> str:
        region = vctx.phone_region
        return vctx.parse_once(
            f"phone:{region}", value, lambda text: self._parse(text, region), ColumnValueError
        )

    @staticmethod
    def _parse(value: str, region: str) -> str:
        try:
            return normalise_phone(value, region)
        except InvalidPhone as exc:
            raise ColumnValueError(str(exc)) from None

    def random_value(self, column: Column, rng: random.Random) -> str:
        return f"+7916{rng.randint(0, 9_999_999):07d}"


class UrlType(TextColumnType):
    name = "url"
    max_length = URL_MAX_LENGTH
    value_schema = {"type": "string", "format": "uri"}

    def normalise(self, value: str, vctx: ValueContext) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ColumnValueError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ColumnValueError("must be an absolute http(s) URL")
        if any(ch.isspace() for ch in value):
            raise ColumnValueError("must not contain spaces")
        return value

    def random_value(self, column: Column, rng: random.Random) -> str:
        return f"https://example.com/{rng.randint(1, 10**6)}"


# ---- numbers, booleans ----------------------------------------------------------------------


class IntegerType(ColumnType):
    name = "integer"
    capabilities = ORDER_CAPS | {NUMERIC}
    value_annotation = int
    value_schema = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> int:
        if lenient and isinstance(value, str):
            try:  # Decimal keeps every digit: "12345678901234567891.0" is not rounded
                number = decimal.Decimal(value.strip())
            except decimal.InvalidOperation:
                raise ColumnValueError("is not a whole number") from None
            if not number.is_finite() or number.adjusted() > 19:
                raise ColumnValueError("is out of the 64-bit integer range")
            if number != number.to_integral_value():
                raise ColumnValueError("must be a whole number")
            value = int(number)
        if lenient and isinstance(value, bool):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type("a whole number", value)
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise ColumnValueError("must be a whole number")
            if abs(value) > FLOAT_EXACT_INT and not lenient:
                # the JSON parser turns integers beyond 64 bits into doubles: a double this
                # large may stand for another number (-2^63 - 1 reads as -2^63), so refuse it
                raise ColumnValueError(
                    "is out of the 64-bit integer range or not exact: write integers beyond "
                    "2^53 as plain digits, from -9223372036854775808 to 9223372036854775807"
                )
            value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ColumnValueError(
                "is out of the 64-bit integer range (-9223372036854775808 to 9223372036854775807)"
            )
        return value

    def random_value(self, column: Column, rng: random.Random) -> int:
        return rng.randint(-1000, 1_000_000)


class FloatType(ColumnType):
    name = "float"
    capabilities = ORDER_CAPS | {NUMERIC}
    value_annotation = float
    value_schema = {"type": "number"}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> float:
        if lenient and isinstance(value, str):
            try:
                value = float(value.strip().replace(",", "."))
            except ValueError:
                raise ColumnValueError("is not a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type("a number", value)
        value = float(value)
        if not math.isfinite(value):
            raise ColumnValueError("must be a finite number")
        return value

    def random_value(self, column: Column, rng: random.Random) -> float:
        return round(rng.uniform(0, 1_000_000), 2)


class BooleanType(ColumnType):
    name = "boolean"
    value_annotation = bool
    value_schema = {"type": "boolean"}
    _words: ClassVar[dict[str, bool]] = {
        "true": True,
        "false": False,
        "1": True,
        "0": False,
        "yes": True,
        "no": False,
        "да": True,
        "нет": False,
    }

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> bool:
        if lenient and isinstance(value, str) and value.strip().lower() in self._words:
            return self._words[value.strip().lower()]
        if (
            lenient
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value in (0, 1)
        ):
            return bool(value)
        if not isinstance(value, bool):
            raise _wrong_type("true or false", value)
        return value

    def random_value(self, column: Column, rng: random.Random) -> bool:
        return rng.random() < 0.5


# ---- dates and times ------------------------------------------------------------------------

DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# the typecast (imports, type changes) also reads the Russian day-first form `15.08.2025 10:00`
DOTTED_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?$")


def to_utc_millis(moment: datetime) -> datetime:
    """BSON datetimes keep milliseconds: store exactly what will be read back."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def render_datetime(stored: datetime) -> str:
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    stored = stored.astimezone(UTC)
    text = stored.strftime("%Y-%m-%dT%H:%M:%S")
    if stored.microsecond:
        text += f".{stored.microsecond // 1000:03d}"
    return text + "Z"


class DateType(ColumnType):
    """`YYYY-MM-DD` (midnight in the tenant's timezone) or ISO 8601 date-time (naive means the
    tenant's timezone); stored as a UTC datetime, rendered as ISO 8601 in UTC."""

    name = "date"
    capabilities = ORDER_CAPS | {PERIOD}
    value_schema = {"type": "string", "description": "YYYY-MM-DD or ISO 8601 date-time"}

    def parse(self, value: str, vctx: ValueContext) -> datetime:
        text = value.strip()
        try:
            if DATE_ONLY.match(text):
                day = datetime.strptime(text, "%Y-%m-%d")
                moment = day.replace(tzinfo=vctx.timezone)
            else:
                if len(text) < 16 or text[10] not in "Tt ":
                    raise ValueError
                moment = datetime.fromisoformat(text.replace("z", "Z"))
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=vctx.timezone)
            return to_utc_millis(moment)
        except (ValueError, OverflowError):
            raise ColumnValueError(
                "is not a valid date (use YYYY-MM-DD or an ISO 8601 date-time)"
            ) from None

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> datetime:
        if not isinstance(value, str):
            raise _wrong_type("a date string", value)
        dotted = DOTTED_DATE.match(value.strip()) if lenient else None
        if dotted:
            day, month, year, clock = dotted.groups()
            value = f"{year}-{int(month):02d}-{int(day):02d}"
            if clock:
                hours, _, rest = clock.partition(":")
                value += f"T{int(hours):02d}:{rest}"
        return self.parse(value, vctx)

    def render(self, column: Column, stored: object) -> object:
        return render_datetime(stored) if isinstance(stored, datetime) else stored

    def random_value(self, column: Column, rng: random.Random) -> str:
        moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 10**6))
        return moment.strftime("%Y-%m-%dT%H:%M:00Z")


TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class TimeType(ColumnType):
    """`HH:MM` or `HH:MM:SS` (`9:05` too); stored and rendered as `HH:MM:SS`."""

    name = "time"
    capabilities = ORDER_CAPS
    value_schema = {"type": "string", "pattern": r"^\d{1,2}:\d{2}(:\d{2})?$"}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> str:
        if not isinstance(value, str):
            raise _wrong_type("a time string", value)
        match = TIME_RE.match(value.strip())
        if not match:
            raise ColumnValueError("is not a time (use HH:MM or HH:MM:SS)")
        try:
            parsed = time(int(match[1]), int(match[2]), int(match[3] or 0))
        except ValueError:
            raise ColumnValueError("is not a valid time of day") from None
        return parsed.strftime("%H:%M:%S")

    def cell_value(self, column: Column, stored: object) -> object:
        if isinstance(stored, str):
            hours, minutes, seconds = (int(p) for p in stored.split(":"))
            return time(hours, minutes, seconds)
        return stored

    def random_value(self, column: Column, rng: random.Random) -> str:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"


# ---- select ---------------------------------------------------------------------------------


class SelectType(ColumnType):
    """One option of the column's list; rows store the option's integer id."""

    name = "select"
    value_annotation = int
    settings_model = SelectSettings
    value_schema = {"type": "integer", "description": "The id of one of the column's options"}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> int:
        options = column.options or ()
        if lenient and isinstance(value, str):
            by_label = {o.label.strip().lower(): o.id for o in options}
            if value.strip().lower() in by_label:
                return by_label[value.strip().lower()]
            if value.strip().isdigit():  # an option id written as text
                value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type("an option id (integer)", value)
        if value not in {o.id for o in options}:
            raise ColumnValueError(f"{value} is not an option of this column")
        return value

    def export_value(self, column: Column, stored: object) -> object:
        labels: dict[object, str] = {o.id: o.label for o in column.options or ()}
        return labels.get(stored, stored)

    def cell_value(self, column: Column, stored: object) -> object:
        return self.export_value(column, stored)

    def random_value(self, column: Column, rng: random.Random) -> int | None:
        options = column.options or ()
        return rng.choice(options).id if options else None

    def normalise_settings(self, raw: Mapping[str, Any], previous: Column | None) -> dict[str, Any]:
        options, high = assign_option_ids(raw.get("options") or [], previous)
        return {"options": options, "max_option_id": high}

    @classmethod
    def settings_fields(cls) -> frozenset[str]:
        return frozenset({"options", "max_option_id"})

    def removed_values(self, old: Column, new: Column) -> list[Any]:
        if old.type != new.type:
            return []
        kept = {o.id for o in new.options or ()}
        return sorted(o.id for o in old.options or () if o.id not in kept)


def assign_option_ids(
    options: list[dict[str, Any]], previous: Column | None
) -> tuple[list[dict[str, Any]], int]:
    """Given ids are kept, missing ones get the next unused number; an id once used and
    removed is never handed out again (`max_option_id` remembers the highest)."""
    prev_ids = {o.id for o in (previous.options if previous else None) or ()}
    high = int((previous.max_option_id if previous else None) or 0)
    given = [o["id"] for o in options if o.get("id") is not None]
    seen: set[int] = set()
    labels: set[str] = set()
    for index, option in enumerate(options):
        if option["label"] in labels:  # a label names one option (text converts by label)
            raise DefinitionError(
                f"options.{index}.label", f"duplicate option label '{option['label'][:64]}'"
            )
        labels.add(option["label"])
        option_id = option.get("id")
        if option_id is None:
            continue
        if option_id in seen:
            raise DefinitionError(f"options.{index}.id", f"duplicate option id {option_id}")
        seen.add(option_id)
        if previous is not None and option_id not in prev_ids and option_id <= high:
            raise DefinitionError(
                f"options.{index}.id", f"option id {option_id} was used before; ids are not reused"
            )
    high = max([high, *given])
    result: list[dict[str, Any]] = []
    for option in options:
        option_id = option.get("id")
        if option_id is None:
            if high >= INT64_MAX:
                raise DefinitionError(
                    f"options.{len(result)}.id", "no option id is left above the highest one"
                )
            high += 1
            option_id = high
        result.append(SelectOption(option_id, option["label"], option.get("color")).to_doc())
    return result, high


# ---- references -----------------------------------------------------------------------------


def value_object_id(value: object, message: str = "is not a row id") -> ObjectId:
    """An id given as a value (a link, a filter operand): a 400 for its field when malformed."""
    parsed = parse_object_id(value)
    if parsed is None:
        raise ColumnValueError(message)
    return parsed


class LinkType(ColumnType):
    """A row of another table (`table`) of the same tenant; stored as its ObjectId."""

    name = "link"
    settings_model = LinkSettings
    value_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
    references = True
    links_rows = True

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> ObjectId:
        return value_object_id(value)

    def render(self, column: Column, stored: object) -> str:
        return str(stored)

    async def missing_references(
        self, refs: References, column: Column, values: list[Any]
    ) -> set[Any]:
        return set(values) - await refs.readable_rows(column.table or "", values)

    def missing_reference_message(self, column: Column) -> str:
        return f"no such row in table '{column.table}'"

    def target_table(self, column: Column) -> str | None:
        return column.table

    def plain_index(self, column: Column) -> bool:
        # always: deleting a row clears the references to it by this index
        return True

    def random_value(self, column: Column, rng: random.Random) -> None:
        return None


class UserRefType(ColumnType):
    """A user of the same tenant; stored as the user id text (like `_created_by`)."""

    name = "user"
    value_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
    references = True

    def missing_reference_message(self, column: Column) -> str:
        return "no such user in this company"

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> str:
        return str(value_object_id(value))

    async def missing_references(
        self, refs: References, column: Column, values: list[Any]
    ) -> set[Any]:
        return set(values) - await refs.tenant_users(values)

    def random_value(self, column: Column, rng: random.Random) -> None:
        return None


# ---- more text, options, numbers (issue #23) -------------------------------------------------

LONG_TEXT_MAX_LENGTH = 100_000


class LongTextType(TextColumnType):
    """Text up to LONG_TEXT_MAX_LENGTH characters (notes, descriptions), whatever the
    tenant's STRING_MAX_LENGTH; `contains` and the other text operators apply."""

    name = "long_text"
    max_length = LONG_TEXT_MAX_LENGTH
    value_schema = {"type": "string", "maxLength": LONG_TEXT_MAX_LENGTH}

    def limit(self, column: Column, vctx: ValueContext) -> int:
        return LONG_TEXT_MAX_LENGTH

    def random_value(self, column: Column, rng: random.Random) -> str:
        words = ["Заметка", "call back", "договор", "meeting", "счёт", "follow-up"]
        return " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))


MULTI_SELECT_MAX_ITEMS = 100


class MultiSelectType(ColumnType):
    """Options of the column's list; rows store the list of option ids, each at most once,
    in the order given (a repeated id collapses into its first place)."""

    name = "multi_select"
    capabilities = frozenset({SET, BLANK})
    value_annotation = list[int]
    settings_model = SelectSettings
    value_schema = {
        "type": "array",
        "items": {"type": "integer"},
        "maxItems": MULTI_SELECT_MAX_ITEMS,
        "description": "Ids of the column's options; a repeated id counts once",
    }
    sortable = False  # MongoDB orders arrays by their least (or greatest) element
    unique_values = False

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> list[int]:
        options = column.options or ()
        if lenient and isinstance(value, str):
            value = self._labels(options, value)
        if not isinstance(value, list):
            raise _wrong_type("a list of option ids", value)
        if len(value) > MULTI_SELECT_MAX_ITEMS:
            raise ColumnValueError(f"takes at most {MULTI_SELECT_MAX_ITEMS} options")
        known = {o.id for o in options}
        found: list[int] = []
        for item in value:
            if lenient and isinstance(item, str) and item.strip().isdigit():
                item = int(item.strip())
            if isinstance(item, bool) or not isinstance(item, int):
                raise _wrong_type("an option id (integer) in the list", item)
            if item not in known:
                raise ColumnValueError(f"{item} is not an option of this column")
            if item not in found:
                found.append(item)
        if column.required and not found:
            raise ColumnValueError("is required: give at least one option")
        return found

    @staticmethod
    def _labels(options: Iterable[SelectOption], text: str) -> list[object]:
        """The typecast: one label, or labels separated by commas or semicolons."""
        by_label = {o.label.strip().lower(): o.id for o in options}
        whole = text.strip().lower()
        if not whole:
            return []
        if whole in by_label:
            return [by_label[whole]]
        found: list[object] = []
        for part in re.split(r"[;,]", text):
            label = part.strip().lower()
            if not label:
                continue
            if label not in by_label and not label.isdigit():
                raise ColumnValueError(f"'{part.strip()[:64]}' is not an option of this column")
            found.append(by_label.get(label, label))
        return found

    def parse_filter_value(self, column: Column, value: object, vctx: ValueContext) -> object:
        return SelectType().coerce(column, value, vctx)

    def export_value(self, column: Column, stored: object) -> object:
        labels: dict[object, str] = {o.id: o.label for o in column.options or ()}
        if not isinstance(stored, list):
            return stored
        return ", ".join(labels.get(i, str(i)) for i in stored)

    def cell_value(self, column: Column, stored: object) -> object:
        return self.export_value(column, stored)

    def convert(
        self,
        old_type: ColumnType,
        old: Column,
        new: Column,
        stored: object,
        vctx: ValueContext,
    ) -> object:
        if old.type == new.type and isinstance(stored, list):
            kept = {o.id for o in new.options or ()}  # removed options leave the lists
            return self.coerce(new, [i for i in stored if i in kept], vctx)
        return super().convert(old_type, old, new, stored, vctx)

    def blank_conditions(self, field: str) -> list[dict[str, Any]]:
        return [{field: None}, {field: {"$size": 0}}]

    def column_schema(self, column: Column) -> dict[str, Any]:
        schema = copy.deepcopy(self.value_schema)
        options = column.options or ()
        schema["items"] = {"type": "integer", "enum": [o.id for o in options]}
        labels = ", ".join(f"{o.id}: {o.label}" for o in options)
        schema["description"] = f"Option ids ({labels}); a repeated id counts once"
        return schema

    def random_value(self, column: Column, rng: random.Random) -> list[int]:
        options = column.options or ()
        return sorted({rng.choice(options).id for _ in range(rng.randint(1, 3))} if options else [])

    def normalise_settings(self, raw: Mapping[str, Any], previous: Column | None) -> dict[str, Any]:
        options, high = assign_option_ids(raw.get("options") or [], previous)
        return {"options": options, "max_option_id": high}

    @classmethod
    def settings_fields(cls) -> frozenset[str]:
        return frozenset({"options", "max_option_id"})

    def needs_conversion(self, old: Column, new: Column) -> bool:
        if old.type != new.type:
            return True
        kept = {o.id for o in new.options or ()}
        return any(o.id not in kept for o in old.options or ())


# ---- exact numbers: decimal, currency ---------------------------------------------------------

DECIMAL_MAX_SCALE = 8
DECIMAL_DIGITS = 34  # what a Decimal128 holds
DECIMAL128_CONTEXT = decimal.Context(prec=DECIMAL_DIGITS, traps=[decimal.InvalidOperation])
DECIMAL_TEXT = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
LENIENT_GROUPS = re.compile(r"(?<=\d)[ \u00a0\u202f\u2009](?=\d{3}\b)")


def decimal_of(stored: object) -> decimal.Decimal | None:
    """A stored Decimal128 (or a number) as a Python Decimal; None for anything else."""
    if isinstance(stored, Decimal128):
        return stored.to_decimal()
    if isinstance(stored, decimal.Decimal):
        return stored
    if isinstance(stored, int) and not isinstance(stored, bool):
        return decimal.Decimal(stored)
    if isinstance(stored, float) and math.isfinite(stored):
        return decimal.Decimal(repr(stored))
    return None


def plain_decimal(number: decimal.Decimal) -> str:
    """Digits without an exponent: `1E+2` at scale 0 is `100`, `-0.00` is `0.00`."""
    if number.is_zero():
        number = abs(number)
    return format(number, "f")


class DecimalSettings(NoSettings):
    scale: int = Field(
        default=2, ge=0, le=DECIMAL_MAX_SCALE, description="Digits after the decimal point, 0-8"
    )


class DecimalType(ColumnType):
    """An exact number with the column's `scale` digits after the point, stored as a
    Decimal128 at that scale (`12.5` at scale 2 is `12.50`), answered as a JSON string so no
    client reads it through a double. Numbers are accepted too; a value with more places
    than the scale is a 400 (never rounded)."""

    name = "decimal"
    capabilities = ORDER_CAPS | {NUMERIC}
    unique_values = False  # Decimal128 is not hashable: the bulk checks could not compare
    value_annotation = int | float | str
    settings_model: ClassVar[type[BaseModel]] = DecimalSettings
    value_schema = {
        "type": ["string", "number"],
        "pattern": r"^-?\d+(\.\d+)?$",
        "description": 'An exact number, answered as a string (`"1234.50"`); a string or a '
        "number is accepted",
    }

    def scale(self, column: Column) -> int:
        return int(column.extra.get("scale", 2))

    def normalise_settings(self, raw: Mapping[str, Any], previous: Column | None) -> dict[str, Any]:
        scale = raw.get("scale")  # a column changed into a decimal gets the default too
        return {"scale": 2 if scale is None else scale}

    def column_schema(self, column: Column) -> dict[str, Any]:
        schema = copy.deepcopy(self.value_schema)
        scale = self.scale(column)
        schema["pattern"] = rf"^-?\d+(\.\d{{1,{scale}}})?$" if scale else r"^-?\d+$"
        code = column.extra.get("currency")
        unit = f" in {code}" if code else ""
        schema["description"] = (
            f"An exact amount{unit} with {scale} digits after the point, answered as a string"
        )
        return schema

    def number(self, value: object, lenient: bool) -> decimal.Decimal:
        if isinstance(value, bool):
            raise _wrong_type("a number or a decimal string", value)
        if isinstance(value, int):
            return decimal.Decimal(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ColumnValueError("must be a finite number")
            return decimal.Decimal(repr(value))  # the shortest form: 0.1 is 0.1
        if not isinstance(value, str):
            raise _wrong_type("a number or a decimal string", value)
        text = value.strip()
        if lenient:  # 1 234,56 (Russian Excel), a comma for the point
            text = LENIENT_GROUPS.sub("", text)
            if "," in text and "." not in text:
                text = text.replace(",", ".")
        if not DECIMAL_TEXT.match(text):
            raise ColumnValueError("is not a decimal number (e.g. 1234.56)")
        return decimal.Decimal(text)

    def exact(self, column: Column, number: decimal.Decimal) -> decimal.Decimal:
        scale = self.scale(column)
        try:
            quantized = number.quantize(
                decimal.Decimal(1).scaleb(-scale), context=decimal.Context(prec=DECIMAL_DIGITS)
            )
        except decimal.InvalidOperation:
            raise ColumnValueError(
                f"has more than {DECIMAL_DIGITS} digits (at most {DECIMAL_DIGITS - scale} "
                "before the point)"
            ) from None
        if quantized != number:
            raise ColumnValueError(
                f"has more than {scale} digits after the point (the column's scale)"
            )
        return abs(quantized) if quantized.is_zero() else quantized

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> Decimal128:
        if isinstance(value, Decimal128):  # a stored value read back (type checks)
            value = plain_decimal(value.to_decimal())
        return Decimal128(self.exact(column, self.number(value, lenient)))

    def parse_filter_value(self, column: Column, value: object, vctx: ValueContext) -> object:
        """An operand may have more places than the scale (`gt 0.005`); one that fits is
        written at the scale, the stored form, so `eq` finds it on every engine."""
        number = self.number(value, lenient=False)
        try:
            return Decimal128(self.exact(column, number))
        except ColumnValueError:
            if len(number.as_tuple().digits) > DECIMAL_DIGITS:
                raise
            return Decimal128(number)

    def render(self, column: Column, stored: object) -> object:
        number = decimal_of(stored)
        return stored if number is None else plain_decimal(number)

    def cell_value(self, column: Column, stored: object) -> object:
        number = decimal_of(stored)
        return stored if number is None else number

    def metric_value(self, column: Column, op: str, value: object) -> object:
        number = decimal_of(value)
        if number is None:
            return "0" if op == "sum" else None
        if op == "avg":  # an average keeps four more places than the values (34 digits at most)
            places = self.scale(column) + 4
            with contextlib.suppress(decimal.InvalidOperation):
                number = number.quantize(
                    decimal.Decimal(1).scaleb(-places), context=DECIMAL128_CONTEXT
                )
        return plain_decimal(number)

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type or self.scale(old) != self.scale(new)

    def random_value(self, column: Column, rng: random.Random) -> str:
        scale = self.scale(column)
        units = rng.randint(-(10**6), 10**8)
        return plain_decimal(decimal.Decimal(units).scaleb(-scale))


class CurrencySettings(NoSettings):
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the amounts' currency: RUB, USD..."
    )
    scale: int | None = Field(
        default=None,
        ge=0,
        le=DECIMAL_MAX_SCALE,
        description="Digits after the point; by default the currency's minor units (2 for RUB)",
    )


class CurrencyType(DecimalType):
    """A decimal amount in the column's `currency` (an ISO 4217 code; the values carry no
    code of their own)."""

    name = "currency"
    settings_model = CurrencySettings

    def normalise_settings(self, raw: Mapping[str, Any], previous: Column | None) -> dict[str, Any]:
        code = raw.get("currency")
        if not isinstance(code, str) or not code:
            raise DefinitionError("currency", "a currency column needs an ISO 4217 currency code")
        if code not in MINOR_UNITS:
            raise DefinitionError("currency", f"'{code[:8]}' is not an ISO 4217 currency code")
        scale = raw.get("scale")
        return {"currency": code, "scale": MINOR_UNITS[code] if scale is None else scale}

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type or self.scale(old) != self.scale(new)


# ---- percent, rating, autonumber ---------------------------------------------------------------


class PercentType(FloatType):
    """Percentage points as a number: 15 is 15 %, 150 and -20 are values too; `"15%"` is
    read by the typecast (imports, type changes)."""

    name = "percent"
    value_schema = {"type": "number", "description": "Percentage points: 15 is 15 %"}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> float:
        if lenient and isinstance(value, str) and value.strip().endswith("%"):
            value = value.strip()[:-1].strip()
        return super().coerce(column, value, vctx, lenient)

    def random_value(self, column: Column, rng: random.Random) -> float:
        return float(rng.randint(0, 100))


class RatingSettings(NoSettings):
    max: int = Field(default=5, ge=1, le=10, description="The highest rating, 1-10 (default 5)")


class RatingType(ColumnType):
    """A whole number from 1 to the column's `max`."""

    name = "rating"
    capabilities = ORDER_CAPS | {NUMERIC}
    value_annotation = int
    settings_model: ClassVar[type[BaseModel]] = RatingSettings
    value_schema = {"type": "integer", "minimum": 1, "maximum": 10}

    def top(self, column: Column) -> int:
        return int(column.extra.get("max", 5))

    def column_schema(self, column: Column) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.top(column)}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> int:
        top = self.top(column)
        if lenient and isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if lenient and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(f"a whole number from 1 to {top}", value)
        if not 1 <= value <= top:
            raise ColumnValueError(f"must be from 1 to {top} (the column's max)")
        return value

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type or self.top(new) < self.top(old)

    def random_value(self, column: Column, rng: random.Random) -> int:
        return rng.randint(1, self.top(column))


class AutonumberType(ColumnType):
    """1, 2, 3... per column, given by the server when a row is created (one atomic `$inc` on
    the tenant's `_counters` per write, crm_core/tables/sequences.py); never reused, read-only.
    A column added to a table with rows numbers them in the order they were created."""

    name = "autonumber"
    capabilities = ORDER_CAPS | {NUMERIC}
    value_annotation = int
    value_schema = {"type": "integer", "minimum": 1, "readOnly": True}
    numbered = True

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> int:
        raise ColumnValueError("is read-only: the server numbers new rows")

    def parse_filter_value(self, column: Column, value: object, vctx: ValueContext) -> object:
        return IntegerType().coerce(column, value, vctx)

    def convert(
        self,
        old_type: ColumnType,
        old: Column,
        new: Column,
        stored: object,
        vctx: ValueContext,
    ) -> object:
        raise ColumnValueError("a column cannot become an autonumber")

    def check_definition(self, column: Column, vctx: ValueContext) -> None:
        if column.default is not None:
            raise DefinitionError("default", "an autonumber column has no default")
        if column.required:
            raise DefinitionError("required", "an autonumber column is always filled in")

    def check_change_from(self, old: Column) -> None:
        raise DefinitionError(
            "type", "a column cannot become an autonumber: add an autonumber column instead"
        )

    def random_value(self, column: Column, rng: random.Random) -> None:
        return None


def referring_query(types: Iterable[ColumnType], table_key: str) -> dict[str, Any]:
    """The `_tables` query for the definitions with a column whose values are rows of
    `table_key`."""
    names = [t.name for t in types if t.links_rows]
    return {"columns": {"$elemMatch": {"type": {"$in": names}, "table": table_key}}}


# ---- computed columns (crm_core/tables/computed/, docs/computed.md) ---------------------------

COLUMN_KEY = r"^[a-z][a-z0-9_]{0,62}$"


class FormulaSettings(NoSettings):
    formula: str = Field(
        min_length=1,
        max_length=MAX_FORMULA_CHARS,
        description="The expression, e.g. `{total_sum} * 1.2` (docs/computed.md)",
    )


class LookupSettings(NoSettings):
    link: str = Field(pattern=COLUMN_KEY, description="A link column of this table")
    column: str = Field(pattern=COLUMN_KEY, description="The linked table's column to show")


class RollupSettings(NoSettings):
    table: str = Field(pattern=COLUMN_KEY, description="The table whose rows are rolled up")
    link: str = Field(
        pattern=COLUMN_KEY, description="That table's link column pointing at this table"
    )
    column: str | None = Field(
        default=None, pattern=COLUMN_KEY, description="That table's column (not for count)"
    )
    function: Literal["count", "sum", "avg", "min", "max", "concat"] = Field(
        description="How the linked rows' values are rolled up"
    )


class ComputedColumnType(ColumnType):
    """Values computed by the database when rows are read (crm_core/tables/computed): never
    written, so a value given in a write is refused; filters apply by the result's kind."""

    computed = True
    capabilities = frozenset()  # the list path filters by the result's kind instead
    value_annotation = type(None)
    value_schema = {"description": "Computed on read; read-only"}

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> object:
        raise ColumnValueError("is a computed column and read-only")

    def render(self, column: Column, stored: object) -> object:
        return render_datetime(stored) if isinstance(stored, datetime) else stored

    def check_definition(self, column: Column, vctx: ValueContext) -> None:
        for flag in ("required", "unique", "indexed"):
            if getattr(column, flag):
                raise DefinitionError(flag, f"a computed column cannot be {flag}")

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return False  # nothing is stored

    def plain_index(self, column: Column) -> bool:
        return False

    def random_value(self, column: Column, rng: random.Random) -> None:
        return None


class FormulaType(ComputedColumnType):
    name = "formula"
    settings_model = FormulaSettings  # parsed and checked against the table's columns by
    # crm_core/tables/computed/definitions.py, which knows the other columns


class LookupType(ComputedColumnType):
    name = "lookup"
    settings_model = LookupSettings


class RollupType(ComputedColumnType):
    name = "rollup"
    settings_model = RollupSettings


BUILTIN_COLUMN_TYPES: tuple[type[ColumnType], ...] = (
    StringType,
    IntegerType,
    FloatType,
    DateType,
    TimeType,
    BooleanType,
    SelectType,
    EmailType,
    PhoneType,
    UrlType,
    LinkType,
    UserRefType,
    LongTextType,
    MultiSelectType,
    DecimalType,
    CurrencyType,
    PercentType,
    RatingType,
    AutonumberType,
    FormulaType,
    LookupType,
    RollupType,
)


def default_column_types() -> Registry[ColumnType]:
    registry: Registry[ColumnType] = Registry("column type")
    for type_class in BUILTIN_COLUMN_TYPES:
        registry.register(type_class())
    return registry
