"""Column types (SPEC §4): one class per type, registered in one registry.

A type owns everything about its values: coercion from JSON into the stored BSON value (with
the typecast rules), rendering back to JSON, the JSON schema for the docs, the filter operators
it admits, and a random value for tests and benchmarks. Families share behaviour: the text
family serves string, email, phone and url.
"""

from __future__ import annotations

import decimal
import math
import random
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import email_validator
import phonenumbers
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field

from crm_core.registry import Registry

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_EXACT_INT = 2**53  # every integer up to this magnitude is exact as a double
URL_MAX_LENGTH = 2048

EQUALITY_OPS = frozenset({"eq", "neq", "in", "not_in", "blank", "not_blank"})
TEXT_OPS = EQUALITY_OPS | {"contains", "not_contains", "starts_with", "ends_with"}
ORDER_OPS = EQUALITY_OPS | {"gt", "gte", "lt", "lte", "between"}


class ColumnValueError(ValueError):
    """A value does not fit its column; the message says why, the caller names the column."""


@dataclass(frozen=True)
class ValueContext:
    """What coercion needs to know about the tenant."""

    timezone: ZoneInfo
    phone_region: str
    string_max_length: int

    @classmethod
    def default(cls) -> ValueContext:
        return cls(ZoneInfo("UTC"), "RU", 10_000)


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
    """Base of every column type.

    Subclasses set `name`, `operators`, `value_annotation` (the Python/JSON type of a value, for
    the definition models) and `settings_model` (type-specific fields of a column definition),
    and implement `coerce`, `render` and `random_value`.
    """

    name: ClassVar[str]
    operators: ClassVar[frozenset[str]] = EQUALITY_OPS
    value_annotation: ClassVar[Any] = str
    settings_model: ClassVar[type[BaseModel]] = NoSettings
    value_schema: ClassVar[dict[str, Any]] = {}
    references: ClassVar[bool] = False  # values point at other objects: see missing_references

    async def missing_references(
        self, refs: References, column: dict[str, Any], values: list[Any]
    ) -> set[Any]:
        """For reference types: which of the stored values point at nothing the caller may
        see (in the caller's tenant), asked through `refs`. The row service turns them into
        400s."""
        return set()

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
        """Turn a JSON value (never None) into the stored BSON value, or raise ColumnValueError.

        `lenient` is the typecast used when a column changes type: the value is the old value
        rendered as JSON, and strings are parsed where that makes sense (`"42"` to 42).
        """
        raise NotImplementedError

    def render(self, column: dict[str, Any], stored: Any) -> Any:
        """Turn a stored value into its JSON form."""
        return stored

    def export_value(self, column: dict[str, Any], stored: Any) -> Any:
        """The JSON value handed to another type when the column changes type."""
        return self.render(column, stored)

    def parse_filter_value(self, column: dict[str, Any], value: Any, vctx: ValueContext) -> Any:
        """A filter operand is parsed like a row value."""
        return self.coerce(column, value, vctx)

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        """A valid JSON input value, for tests and benchmarks."""
        raise NotImplementedError

    def check_definition(self, column: dict[str, Any], vctx: ValueContext) -> None:
        """Raise ColumnValueError when the column's own settings do not fit (e.g. limits)."""


def _wrong_type(expected: str, value: Any) -> ColumnValueError:
    return ColumnValueError(f"expected {expected}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
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

    operators = TEXT_OPS
    value_schema = {"type": "string"}
    max_length: ClassVar[int] = 10_000

    def limit(self, column: dict[str, Any], vctx: ValueContext) -> int:
        return min(self.max_length, vctx.string_max_length)

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
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

    def limit(self, column: dict[str, Any], vctx: ValueContext) -> int:
        own = column.get("max_length")
        return min(own, vctx.string_max_length) if own else vctx.string_max_length

    def check_definition(self, column: dict[str, Any], vctx: ValueContext) -> None:
        own = column.get("max_length")
        if own and own > vctx.string_max_length:
            raise ColumnValueError(f"max_length may be at most {vctx.string_max_length}")

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        words = ["ООО", "Ромашка", "Acme", "Lead", "договор", "client", "Север", "deal"]
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))


class EmailType(TextColumnType):
    name = "email"
    max_length = 320
    value_schema = {"type": "string", "format": "email"}

    def normalise(self, value: str, vctx: ValueContext) -> str:
        try:
            result = email_validator.validate_email(value.strip(), check_deliverability=False)
        except email_validator.EmailNotValidError as exc:
            raise ColumnValueError(f"is not a valid email address ({exc})") from None
        return result.normalized

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        user = "".join(rng.choices(string.ascii_lowercase, k=8))
        return f"{user}@example.com"


class PhoneType(TextColumnType):
    name = "phone"
    max_length = 64
    value_schema = {"type": "string", "description": "E.164 in answers, e.g. +79161234567"}

    def normalise(self, value: str, vctx: ValueContext) -> str:
        try:
            number = phonenumbers.parse(value, vctx.phone_region)
        except phonenumbers.NumberParseException:
            raise ColumnValueError("is not a phone number") from None
        if not phonenumbers.is_valid_number(number):
            raise ColumnValueError("is not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
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

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return f"https://example.com/{rng.randint(1, 10**6)}"


# ---- numbers, booleans ----------------------------------------------------------------------


class IntegerType(ColumnType):
    name = "integer"
    operators = ORDER_OPS
    value_annotation = int
    value_schema = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
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

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return rng.randint(-1000, 1_000_000)


class FloatType(ColumnType):
    name = "float"
    operators = ORDER_OPS
    value_annotation = float
    value_schema = {"type": "number"}

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
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

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
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
    }

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
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

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return rng.random() < 0.5


# ---- dates and times ------------------------------------------------------------------------

DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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
    operators = ORDER_OPS | {"is_within"}
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
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
        if not isinstance(value, str):
            raise _wrong_type("a date string", value)
        return self.parse(value, vctx)

    def render(self, column: dict[str, Any], stored: Any) -> Any:
        return render_datetime(stored) if isinstance(stored, datetime) else stored

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 10**6))
        return moment.strftime("%Y-%m-%dT%H:%M:00Z")


TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class TimeType(ColumnType):
    """`HH:MM` or `HH:MM:SS` (`9:05` too); stored and rendered as `HH:MM:SS`."""

    name = "time"
    operators = ORDER_OPS
    value_schema = {"type": "string", "pattern": r"^\d{1,2}:\d{2}(:\d{2})?$"}

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
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

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"


# ---- select ---------------------------------------------------------------------------------


class SelectType(ColumnType):
    """One option of the column's list; rows store the option's integer id."""

    name = "select"
    value_annotation = int
    settings_model = SelectSettings
    value_schema = {"type": "integer", "description": "The id of one of the column's options"}

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
        options = column.get("options") or []
        if lenient and isinstance(value, str):
            by_label = {o["label"].strip().lower(): o["id"] for o in options}
            if value.strip().lower() in by_label:
                return by_label[value.strip().lower()]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type("an option id (integer)", value)
        if value not in {o["id"] for o in options}:
            raise ColumnValueError(f"{value} is not an option of this column")
        return value

    def export_value(self, column: dict[str, Any], stored: Any) -> Any:
        labels = {o["id"]: o["label"] for o in column.get("options") or []}
        return labels.get(stored, stored)

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        options = column.get("options") or []
        return rng.choice(options)["id"] if options else None


# ---- references -----------------------------------------------------------------------------


def _object_id(value: Any) -> ObjectId:
    if not isinstance(value, str) or len(value) != 24 or not ObjectId.is_valid(value):
        raise ColumnValueError("is not a row id")
    return ObjectId(value)


class LinkType(ColumnType):
    """A row of another table (`table`) of the same tenant; stored as its ObjectId."""

    name = "link"
    operators = EQUALITY_OPS
    settings_model = LinkSettings
    value_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
    references = True

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
        return _object_id(value)

    def render(self, column: dict[str, Any], stored: Any) -> Any:
        return str(stored)

    async def missing_references(
        self, refs: References, column: dict[str, Any], values: list[Any]
    ) -> set[Any]:
        return set(values) - await refs.readable_rows(column["table"], values)

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return None


class UserRefType(ColumnType):
    """A user of the same tenant; stored as the user id text (like `_created_by`)."""

    name = "user"
    operators = EQUALITY_OPS
    value_schema = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
    references = True

    def coerce(
        self, column: dict[str, Any], value: Any, vctx: ValueContext, lenient: bool = False
    ) -> Any:
        return str(_object_id(value))

    async def missing_references(
        self, refs: References, column: dict[str, Any], values: list[Any]
    ) -> set[Any]:
        return set(values) - await refs.tenant_users(values)

    def random_value(self, column: dict[str, Any], rng: random.Random) -> Any:
        return None


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
)


def default_column_types() -> Registry[ColumnType]:
    registry: Registry[ColumnType] = Registry("column type")
    for type_class in BUILTIN_COLUMN_TYPES:
        registry.register(type_class())
    return registry
