"""Table constructor models (SPEC §5): column definitions, one input model per column type
(built from the column-type classes, so a new type brings its own schema), tables, rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, RootModel, WithJsonSchema, create_model

from crm_core.columns import BUILTIN_COLUMN_TYPES, ColumnType, SelectOptionIn
from models.base import InputModel, OutputModel, QueryModel

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
MAX_COLUMNS = 500
MAX_BULK_ITEMS = 1000

Key = Annotated[str, Field(pattern=KEY_PATTERN, description="Stable key: ^[a-z][a-z0-9_]{0,62}$")]


class ColumnCommon(InputModel):
    key: Key
    name: str | None = Field(
        default=None, min_length=1, max_length=255, description="Display name; defaults to the key"
    )
    required: bool = False
    unique: bool = False
    indexed: bool = False


def _column_model(type_class: type[ColumnType]) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in type_class.name.split("_")) + "ColumnIn"
    # the default is documented with the type's own JSON schema (`ColumnType.value_schema`)
    default_schema = WithJsonSchema({"anyOf": [type_class.value_schema, {"type": "null"}]})
    default_type: Any = Annotated[type_class.value_annotation | None, default_schema]
    return create_model(
        name,
        __base__=(ColumnCommon, type_class.settings_model),
        type=(Literal[type_class.name], ...),  # type: ignore[arg-type]
        default=(default_type, None),
    )


COLUMN_INPUT_MODELS: list[type[BaseModel]] = [_column_model(t) for t in BUILTIN_COLUMN_TYPES]
# A discriminated union on `type`: each column type validates its own settings and default.
ColumnIn = Annotated[Union[tuple(COLUMN_INPUT_MODELS)], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007


class TableIn(InputModel):
    key: Key
    name: str | None = Field(default=None, min_length=1, max_length=255)
    columns: list[ColumnIn] = Field(default_factory=list, max_length=MAX_COLUMNS)  # type: ignore[valid-type]


class ColumnAddIn(RootModel[ColumnIn]):  # type: ignore[valid-type]
    """A column definition: the fields common to all types and those of its `type`."""


class TablePatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)


class ColumnPatch(InputModel):
    """Change a column: any of these; `type` converts every row or answers 409."""

    type: Literal[tuple(t.name for t in BUILTIN_COLUMN_TYPES)] | None = None  # type: ignore[valid-type]
    name: str | None = Field(default=None, min_length=1, max_length=255)
    required: bool | None = None
    unique: bool | None = None
    indexed: bool | None = None
    default: int | float | bool | str | None = None
    max_length: int | None = Field(default=None, ge=1, le=1_000_000)
    validators: list[str] | None = Field(default=None, max_length=10)
    options: list[SelectOptionIn] | None = Field(default=None, max_length=1000)


class VersionQuery(QueryModel):
    version: int | None = Field(
        default=None,
        ge=1,
        le=2**53,
        description="The table version the edit is based on; 409 when the table has moved on",
    )


class SelectOptionOut(OutputModel):
    id: int
    label: str
    color: str | None = None


class ColumnOut(OutputModel):
    key: str
    name: str
    display_name: str
    type: str
    required: bool
    unique: bool
    indexed: bool
    default: Any = None
    max_length: int | None = None
    validators: list[str] | None = None
    table: str | None = Field(default=None, description="For link columns: the target table")
    predefined: bool = False
    options: list[SelectOptionOut] | None = None


class TableOut(OutputModel):
    key: str
    name: str
    display_name: str
    version: int
    builtin: bool
    owner_id: str | None
    columns: list[ColumnOut]
    created_at: datetime
    updated_at: datetime


class TableList(OutputModel):
    items: list[TableOut]


SORT_ORDER = Literal["asc", "desc"]


class RowGetQuery(QueryModel):
    expand: str | None = Field(
        default=None,
        max_length=400,
        description="Comma-separated link columns to answer with the referenced rows",
    )


class RowListQuery(RowGetQuery):
    filters: str | None = Field(
        default=None,
        max_length=20_000,
        description='URL-encoded JSON array of conditions, e.g. [{"field":"total_sum","op":"gt",'
        '"value":100000}]; see docs/filters.md',
    )
    sort_by: str | None = Field(
        default=None,
        max_length=64,
        description="A column key, `id`, a system field, or `manual` (the caller's own order)",
    )
    sort_order: SORT_ORDER = "asc"
    sort: str | None = Field(
        default=None,
        max_length=400,
        description="Several keys, comma-separated, `-` for descending: `-doc_date,company_name`",
    )
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A row: `id`, the column values in JSON form, and the system fields "
    "`_created_at`, `_updated_at`, `_created_by`, `_updated_by`.",
    "properties": {"id": {"type": "string"}},
    "required": ["id"],
}
ROW_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Column key to value, as the table's column types accept them.",
}
ROW_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": ROW_SCHEMA},
        "total": {"type": "integer"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    },
    "required": ["items", "total", "limit", "offset"],
}
ROWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": ROW_SCHEMA}},
    "required": ["items"],
}


class BulkCreateQuery(QueryModel):
    returning: Literal["ids", "rows"] = Field(
        default="ids",
        alias="return",
        description='`ids` (default): each created row as `{"id"}`, in input order; '
        "`rows`: the rows as stored",
    )


class BulkCreateIn(InputModel):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BULK_ITEMS)


class BulkUpdateItems(InputModel):
    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BULK_ITEMS, description="Each: `id` and the values to change"
    )


class BulkUpdateWhere(InputModel):
    filters: list[Any] | dict[str, Any] = Field(description="At least one condition")
    values: dict[str, Any] = Field(description="The values to set on every selected row")


class BulkUpdateIn(RootModel[BulkUpdateItems | BulkUpdateWhere]):
    """Either `items` or `filters` with `values`."""


class BulkDeleteIds(InputModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_BULK_ITEMS)


class BulkDeleteWhere(InputModel):
    filters: list[Any] | dict[str, Any] = Field(description="At least one condition")


class BulkDeleteIn(RootModel[BulkDeleteIds | BulkDeleteWhere]):
    """Either `ids` or `filters`."""


class MoveIn(InputModel):
    before_id: str | None = Field(
        max_length=24, description="The row to place this one before; null: last"
    )


class MoveOut(OutputModel):
    reads: int
    writes: int


class ViewIn(InputModel):
    column_order: list[str] = Field(default_factory=list, max_length=500)
    hidden: list[str] = Field(default_factory=list, max_length=500)


class ViewOut(OutputModel):
    column_order: list[str]
    hidden: list[str]


class UpdatedOut(OutputModel):
    updated: int


class DeletedOut(OutputModel):
    deleted: int
