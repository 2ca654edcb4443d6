"""Shared bases for request and response models."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

# Named schemas that are not pydantic models (a row, the filter language): `component(name)`
# marks where one is used, and the OpenAPI builder (handlers/docs.py) registers the schema under
# its name and writes a `$ref` there (pydantic would try to resolve a `$ref` itself).
SCHEMA_COMPONENTS: dict[str, dict[str, Any]] = {}


def component(name: str, **siblings: Any) -> dict[str, Any]:
    """A use of the named schema `SCHEMA_COMPONENTS[name]` (with e.g. a `description`)."""
    return {"x-component": name, **siblings}


class InputModel(BaseModel):
    """A request body or query: unknown fields are an error, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class QueryModel(BaseModel):
    """Query parameters: text that pydantic parses (`"5"` is 5); unknown names are an error."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class StoredRecord(BaseModel):
    """A document of a tenant collection as the domain passes it around (a role, a share...):
    read with `from_document`, written with `to_document`, which gives back the stored layout
    (`_id`, fields left unset are left out). Unknown stored fields are ignored, not an error."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Self:
        return cls.model_validate(document)

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True)


def _optional_keys(schema: dict[str, Any]) -> None:
    """Fields that are left out when unset (not sent as `null`): documented as optional
    strings, without the `default` that generators read as "always present"."""
    for prop in schema["properties"].values():
        if prop.pop("default", "absent") is None:
            prop.update(next(b for b in prop.pop("anyOf") if b.get("type") != "null"))


class ErrorDetail(OutputModel):
    """One problem of an error answer: the input it is about and what was wrong with it."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_optional_keys)

    field: str | None = Field(
        default=None,
        description="The input the problem is about, as a dotted path (`items.3.email`, "
        "`filters.0`, `file`); absent when it is about no input (a 503 names `service`)",
        examples=["email"],
    )
    message: str = Field(examples=["value is not a valid email address"])
    service: str | None = Field(
        default=None, description="A 503's unreachable service: `database` or `redis`"
    )


class ErrorBody(OutputModel):
    code: str = Field(examples=["validation_error"])
    message: str
    # documentation only: the domain builds the error bodies (crm_core/platform/errors.py)
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = Field(
        default=None,
        description="The request's id (its `X-Request-ID`, sent or made): find it in the logs",
    )


class ErrorResponse(OutputModel):
    """The shape of every error answer (SPEC §2)."""

    error: ErrorBody


class StatusOut(OutputModel):
    status: str


# ---- pages: `offset` up to a maximum, then `cursor` (docs/api.md "Pages and cursors") ------

MAX_OFFSET = 10_000
CURSOR_MAX_LENGTH = 4096


def _offset_in_reach(value: int) -> int:
    if value > MAX_OFFSET:
        raise PydanticCustomError(
            "offset_too_deep",
            "must be at most {maximum}; page further with cursor (each page's next_cursor)",
            {"maximum": MAX_OFFSET},
        )
    return value


Offset = Annotated[
    int,
    Field(ge=0),
    AfterValidator(_offset_in_reach),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_OFFSET,
            "description": f"Items to skip, at most {MAX_OFFSET}; deeper pages by `cursor`",
        }
    ),
]
Cursor = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=CURSOR_MAX_LENGTH,
        description="The `next_cursor` of the previous page: the page after it (opaque)",
    ),
]
NEXT_CURSOR_DESCRIPTION = (
    "Give it as `cursor` for the next page; null on the last page. Bound to this list, sort "
    "and filter, valid for a day"
)

SORT_ORDER = Literal["asc", "desc"]
# the `filters` query parameter: JSON text whose content is a `Filter` (the schema is named in
# crm_core/tables/bodies.py, beside the filter language's operators)
FiltersParam = Annotated[
    str | None,
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 20_000,
            "contentMediaType": "application/json",
            "contentSchema": component("Filter"),
        }
    ),
]
