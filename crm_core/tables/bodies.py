"""Table constructor models (docs/api.md "Tables"): column definitions, one input model per column
type (built from an app's column-type registry by `column_models`, so a registered type brings its
own schema), tables, rows."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Self, Union, cast

from pydantic import BeforeValidator, Field, RootModel, WithJsonSchema, create_model

from crm_core.platform.registry import Registry
from crm_core.tables.columns import SETTINGS_FIELDS, Column, ColumnType, SelectOptionIn
from crm_core.tables.filters import check_filters_param, default_filter_operators
from models.base import (
    NEXT_CURSOR_DESCRIPTION,
    SCHEMA_COMPONENTS,
    SORT_ORDER,
    Cursor,
    FiltersParam,
    InputModel,
    Offset,
    OutputModel,
    QueryModel,
    component,
)

if TYPE_CHECKING:
    from models.access import AliasRecord


class LoadedTable(Protocol):
    """What the table mapper reads of a loaded definition (crm_core/tables/definitions.py
    `Table`): its stored document and its parsed columns."""

    @property
    def doc(self) -> dict[str, Any]: ...

    @property
    def columns(self) -> list[Column]: ...


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


class ColumnIn(ColumnCommon):
    """The fields every column definition has; `column_models` makes one model per registered
    type on top of it (its `type` literal, its settings, its default's type)."""

    type: str


# the base declares the shape handlers are typed with; an app's `column_models(...).table_in`
# checks `columns` against the app's column types
class TableIn(InputModel):
    key: Key
    name: str | None = Field(default=None, min_length=1, max_length=255)
    columns: list[ColumnIn] = Field(default_factory=list, max_length=MAX_COLUMNS)


class ColumnAddIn(RootModel[ColumnIn]):
    """A column definition: the fields common to all types and those of its `type`."""


class TablePatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)


class ColumnPatch(InputModel):
    """Change a column: any of these; `type` converts every row or answers 409."""

    type: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    required: bool | None = None
    unique: bool | None = None
    indexed: bool | None = None
    default: int | float | bool | str | list[int] | None = None
    max_length: int | None = Field(default=None, ge=1, le=1_000_000)
    validators: list[str] | None = Field(default=None, max_length=10)
    options: list[SelectOptionIn] | None = Field(default=None, max_length=1000)
    force: bool = Field(
        default=False,
        description="With a `type` or settings change: clear the values that cannot be "
        "converted instead of answering 409 (docs/api.md, type changes)",
    )


def _column_model(type_class: type[ColumnType]) -> type[ColumnIn]:
    name = "".join(part.capitalize() for part in type_class.name.split("_")) + "ColumnIn"
    # the default is documented with the type's own JSON schema (`ColumnType.value_schema`)
    default_schema = WithJsonSchema({"anyOf": [type_class.value_schema, {"type": "null"}]})
    default_type: Any = Annotated[type_class.value_annotation | None, default_schema]
    type_literal: Any = Literal[type_class.name]
    bases: Any = (ColumnIn, type_class.settings_model)
    fields: dict[str, Any] = {"type": (type_literal, ...), "default": (default_type, None)}
    validators = type_class.settings_model.model_fields.get("validators")
    if validators is not None:
        # crm_core/tables/columns.py's description names `GET /api/meta/validators`, which
        # does not exist: the document names the list where it is (docs/api.md)
        fields["validators"] = (
            validators.annotation,
            Field(
                default_factory=validators.default_factory or list,
                max_length=10,
                description="Names of extra checks: inn, kpp, ogrn (docs/api.md, validators)",
            ),
        )
    model = create_model(name, __base__=bases, **fields)
    return cast(type[ColumnIn], model)


@dataclass(frozen=True)
class ColumnModels:
    """The body models of the table constructor for one set of column types."""

    column_in: Any  # a discriminated union of one model per type
    table_in: type[TableIn]
    column_add_in: type[ColumnAddIn]
    column_patch: type[ColumnPatch]


def column_models(types: Registry[ColumnType]) -> ColumnModels:
    """The models for an app's column-type registry (built once per set of type classes)."""
    return _models_for(tuple(type(t) for t in types))


@functools.cache
def _models_for(type_classes: tuple[type[ColumnType], ...]) -> ColumnModels:
    per_type = [_column_model(t) for t in type_classes]
    # A discriminated union on `type`: each column type validates its own settings and default.
    union: Any = Annotated[Union[tuple(per_type)], Field(discriminator="type")]  # noqa: UP007
    names: Any = Literal[tuple(t.name for t in type_classes)]
    table_in = create_model(
        "TableIn",
        __base__=TableIn,
        __doc__=TableIn.__doc__,
        columns=(list[union], Field(default_factory=list, max_length=MAX_COLUMNS)),
    )
    column_add_in = create_model(
        "ColumnAddIn", __base__=ColumnAddIn, __doc__=ColumnAddIn.__doc__, root=(union, ...)
    )
    # the settings of types registered besides the built-ins, optional, with their own checks
    # (a link's `table` stays fixed: it is not a field of ColumnPatch)
    settings: dict[str, Any] = {}
    for type_class in type_classes:
        for name, info in type_class.settings_model.model_fields.items():
            if name not in (*ColumnPatch.model_fields, *SETTINGS_FIELDS, *settings):
                annotation: Any = (
                    Annotated[(info.annotation, *info.metadata)]
                    if info.metadata
                    else info.annotation
                )
                settings[name] = (annotation | None, Field(None, description=info.description))
    column_patch = create_model(
        "ColumnPatch",
        __base__=ColumnPatch,
        __doc__=ColumnPatch.__doc__,
        type=(names | None, None),
        **settings,
    )
    return ColumnModels(union, table_in, column_add_in, column_patch)


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
    scale: int | None = Field(default=None, description="decimal, currency: digits after the point")
    currency: str | None = Field(default=None, description="currency: the ISO 4217 code")
    max: int | None = Field(default=None, description="rating: the highest rating")
    formula: str | None = Field(default=None, description="For formula columns: the expression")
    link: str | None = Field(
        default=None,
        description="For lookup columns: their link column; for rollups: the "
        "rolled-up table's link column",
    )
    column: str | None = Field(
        default=None, description="For lookups and rollups: the other table's column they read"
    )
    function: str | None = Field(default=None, description="For rollups: how values roll up")
    result: Literal["number", "text", "boolean", "date"] | None = Field(
        default=None, description="For computed columns: the kind of their values"
    )

    @classmethod
    def from_column(cls, column: Column, alias: str | None = None) -> Self:
        """A column as stored, with the tenant's display name for it (or its name, or key)."""
        return cls(
            display_name=alias or column.name or column.key,
            **{k: v for k, v in column.to_doc().items() if k in cls.model_fields},
        )


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

    @classmethod
    def from_table(cls, table: LoadedTable, alias: AliasRecord | None = None) -> Self:
        """A table as the caller sees it: with the tenant's display names (`_aliases`)."""
        doc = table.doc
        names = alias.columns if alias else {}
        name = doc.get("name") or doc["key"]
        return cls(
            key=doc["key"],
            name=name,
            display_name=(alias.name if alias else None) or name,
            version=doc["version"],
            builtin=bool(doc.get("builtin")),
            owner_id=doc.get("owner_id"),
            columns=[ColumnOut.from_column(c, names.get(c.key)) for c in table.columns],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )


class TableList(OutputModel):
    items: list[TableOut]


class RowGetQuery(QueryModel):
    expand: str | None = Field(
        default=None,
        max_length=400,
        description="Comma-separated link columns to answer with the referenced rows",
    )


class RowListQuery(RowGetQuery):
    # given twice or too long is `invalid_filter` (docs/filters.md), checked before the type
    filters: Annotated[FiltersParam, BeforeValidator(check_filters_param)] = Field(
        default=None,
        max_length=20_000,
        description='URL-encoded JSON of a `Filter`, e.g. [{"field":"total_sum","op":"gt",'
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
    offset: Offset = 0
    cursor: Cursor = None


# ---- rows and filters as named schemas (docs/api.md "Generating a client") -----------------

COLUMN_VALUE_IN: dict[str, Any] = {
    "description": "A column's value as its type accepts it (docs/api.md, column types): "
    "text for string, long_text, email, phone, url, date (`YYYY-MM-DD` or ISO 8601), time and "
    "link/user ids; a number for integer, float, percent, rating and select option ids; a "
    "string or a number for decimal and currency; a list of option ids for multi_select; a "
    "boolean; `null` clears",
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"type": "integer"}},
    ],
}
COLUMN_VALUE: dict[str, Any] = {
    "description": "A column's value in JSON form (see `ColumnValueIn`); with `expand`, a link "
    "column's value is the referenced row",
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "object", "additionalProperties": True},
    ],
}
ROW_SYSTEM_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^[0-9a-f]{24}$", "readOnly": True},
    "_created_at": {"type": "string", "format": "date-time", "readOnly": True},
    "_updated_at": {"type": "string", "format": "date-time", "readOnly": True},
    "_created_by": {"type": ["string", "null"], "description": "A user id", "readOnly": True},
    "_updated_by": {"type": ["string", "null"], "description": "A user id", "readOnly": True},
    "_version": {
        "type": "integer",
        "description": "The row's version, counting its writes: its ETag, for If-Match "
        "(docs/api.md)",
        "readOnly": True,
    },
}
FILTER_OPERATOR_NAMES = [op.name for op in default_filter_operators()]
FILTER_VALUE_ITEM: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
}
SCHEMA_COMPONENTS.update(
    {
        "ColumnValueIn": COLUMN_VALUE_IN,
        "ColumnValue": COLUMN_VALUE,
        "Row": {
            "type": "object",
            "description": "A row: `id`, the system fields and each column's value by key",
            "properties": ROW_SYSTEM_FIELDS,
            "required": ["id"],
            "additionalProperties": component("ColumnValue"),
        },
        "RowIn": {
            "type": "object",
            "description": "A new row: column key to value. Columns left out take their default; "
            "400 names each missing required column and each bad value",
            "additionalProperties": component("ColumnValueIn"),
        },
        "RowPatch": {
            "type": "object",
            "description": "Column key to new value; only the given columns change, `null` "
            "clears a column that is not required",
            "additionalProperties": component("ColumnValueIn"),
        },
        "RowPatchItem": {
            "type": "object",
            "description": "A bulk update item: the row's `id`, the values to change and, "
            "optionally, the `_version` the change is based on (412 when the row is at another)",
            "properties": {
                "id": {"type": "string"},
                "_version": {"type": "integer", "minimum": 0},
            },
            "required": ["id"],
            "additionalProperties": component("ColumnValueIn"),
        },
        "RowPage": {
            "type": "object",
            "description": "A page of rows: `items`, the `total` matching, and the page asked for",
            "properties": {
                "items": {"type": "array", "items": component("Row")},
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": NEXT_CURSOR_DESCRIPTION,
                },
            },
            "required": ["items", "total", "limit", "offset", "next_cursor"],
        },
        "RowList": {
            "type": "object",
            "properties": {"items": {"type": "array", "items": component("Row")}},
            "required": ["items"],
        },
        "RowUpsertResult": {
            "type": "object",
            "description": "The items in input order (`{id}` or, with `?return=rows`, the rows)",
            "properties": {
                "items": {"type": "array", "items": component("Row")},
                "created": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "With upsert_on: indexes of the items that created a row",
                },
                "updated": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "With upsert_on: indexes of the items that updated a row",
                },
            },
            "required": ["items"],
        },
        "Filter": {
            "description": "The filter language (docs/filters.md): conditions that must all "
            "hold, or a single condition or group",
            "anyOf": [
                {"type": "array", "items": component("FilterNode"), "maxItems": 100},
                component("FilterNode"),
            ],
        },
        "FilterNode": {
            "description": "A condition, or a group of them (nested up to 5 levels)",
            "anyOf": [
                component("FilterCondition"),
                component("FilterAnd"),
                component("FilterOr"),
            ],
        },
        "FilterCondition": {
            "type": "object",
            "properties": {
                "field": {
                    "type": "string",
                    "description": "A column key, `id` or a system field (`_created_at`...)",
                },
                "op": {
                    "type": "string",
                    "enum": FILTER_OPERATOR_NAMES,
                    "description": "Absent: `eq`. Which apply to which column types: "
                    "docs/filters.md",
                },
                "value": component("FilterValue"),
            },
            "required": ["field"],
            "additionalProperties": False,
        },
        "FilterValue": {
            "description": "The operand: a value as the column's type accepts it; a list for "
            "`in`, `not_in`, `between`; a period name or `{past_days|next_days: N}` for "
            "`is_within`; none for `blank`, `not_blank`",
            "anyOf": [
                *FILTER_VALUE_ITEM["anyOf"],
                {"type": "array", "items": FILTER_VALUE_ITEM, "maxItems": 1000},
                {
                    "type": "object",
                    "properties": {
                        "past_days": {"type": "integer", "minimum": 1, "maximum": 36600},
                        "next_days": {"type": "integer", "minimum": 1, "maximum": 36600},
                    },
                    "additionalProperties": False,
                },
            ],
        },
        "FilterAnd": {
            "type": "object",
            "properties": {"and": {"type": "array", "items": component("FilterNode")}},
            "required": ["and"],
            "additionalProperties": False,
        },
        "FilterOr": {
            "type": "object",
            "properties": {"or": {"type": "array", "items": component("FilterNode")}},
            "required": ["or"],
            "additionalProperties": False,
        },
    }
)
ROW_SCHEMA = component("Row")
ROW_INPUT_SCHEMA = component("RowIn")
ROW_PATCH_SCHEMA = component("RowPatch")
ROW_PAGE_SCHEMA = component("RowPage")
ROWS_SCHEMA = component("RowList")
UPSERT_SCHEMA = component("RowUpsertResult")
# a row as a pydantic field: free-form for validation (the table's columns decide), named in
# the document
RowInField = Annotated[dict[str, Any], WithJsonSchema(component("RowIn"))]
RowPatchField = Annotated[dict[str, Any], WithJsonSchema(component("RowPatch"))]
RowPatchItemField = Annotated[dict[str, Any], WithJsonSchema(component("RowPatchItem"))]
FilterField = Annotated[list[Any] | dict[str, Any], WithJsonSchema(component("Filter"))]


class BulkCreateQuery(QueryModel):
    returning: Literal["ids", "rows"] = Field(
        default="ids",
        alias="return",
        description='`ids` (default): each created row as `{"id"}`, in input order; '
        "`rows`: the rows as stored",
    )


class BulkCreateIn(InputModel):
    items: list[RowInField] = Field(min_length=1, max_length=MAX_BULK_ITEMS)
    upsert_on: str | None = Field(
        default=None,
        max_length=63,
        description="A unique column: items whose value matches a row update it (only the "
        "given columns change), the others are created",
    )


class BulkUpdateItems(InputModel):
    items: list[RowPatchItemField] = Field(
        min_length=1, max_length=MAX_BULK_ITEMS, description="Each: `id` and the values to change"
    )


class BulkUpdateWhere(InputModel):
    filters: FilterField = Field(description="At least one condition")
    values: RowPatchField = Field(description="The values to set on every selected row")


class BulkUpdateIn(RootModel[BulkUpdateItems | BulkUpdateWhere]):
    """Either `items` or `filters` with `values`."""


class BulkDeleteIds(InputModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_BULK_ITEMS)


class BulkDeleteWhere(InputModel):
    filters: FilterField = Field(description="At least one condition")


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
