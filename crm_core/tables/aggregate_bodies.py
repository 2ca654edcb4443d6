"""`GET /api/data/{table}/aggregate`: the query and the answer (docs/api.md "Aggregates")."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from crm_core.tables.aggregate import AGGREGATE_MAX_GROUPS, AggregateRequest, AggregateResult
from models.base import OutputModel, QueryModel


class AggregateQuery(QueryModel):
    group_by: str | None = Field(
        default=None,
        max_length=200,
        description="Up to two columns, comma-separated; a date or datetime as "
        "`column:day|week|month|quarter|year` (in the company's time zone). Without it the "
        "answer has only `totals`.",
        examples=["status,_created_at:month"],
    )
    metrics: str | None = Field(
        default=None,
        max_length=1000,
        description="Comma-separated: `count` (the default), `sum:col`, `avg:col` (numbers), "
        "`min:col`, `max:col` (numbers, dates, times), `count_distinct:col` (any column; "
        "blanks are not counted)",
        examples=["count,sum:total_sum"],
    )
    filters: str | None = Field(
        default=None,
        max_length=20_000,
        description="The list's filters (docs/filters.md): the same rows as "
        "`GET /api/data/{table}` for the same caller",
    )
    sort: str | None = Field(
        default=None,
        max_length=400,
        description="Group keys or requested metrics, comma-separated, `-` for descending "
        "(`-count`); then the group keys ascending; blanks last",
    )
    limit: int = Field(
        default=AGGREGATE_MAX_GROUPS,
        ge=1,
        le=AGGREGATE_MAX_GROUPS,
        description=f"Groups answered, after sorting (at most {AGGREGATE_MAX_GROUPS})",
    )

    def to_request(self) -> AggregateRequest:
        return AggregateRequest(self.group_by, self.metrics, self.filters, self.sort, self.limit)


class AggregateGroup(OutputModel):
    """One group: its `key` and `label` per group_by column, and one field per metric, named
    as requested (`count`, `sum:total_sum`)."""

    model_config = ConfigDict(extra="allow")

    key: dict[str, Any] = Field(
        description="Column key to the group's value: an option id, a user or row id, the "
        "bucket's first day (`YYYY-MM-DD`) for a date, null for blanks",
        examples=[{"status": 11}],
    )
    label: dict[str, Any] = Field(
        description="Column key to what people read: the option's label, the user's name, "
        "the linked row's first text column, the bucket (`2024-03-31`, `2024-W13`, `2024-03`, "
        "`2024-Q1`, `2024`); otherwise the value itself",
        examples=[{"status": "Active"}],
    )


class AggregateOut(OutputModel):
    groups: list[AggregateGroup] = Field(
        description="Empty without group_by; at most AGGREGATE_MAX_GROUPS "
        f"({AGGREGATE_MAX_GROUPS}) exist, or the request is a 400"
    )
    totals: dict[str, Any] = Field(
        description="Each metric over every selected row", examples=[{"count": 3}]
    )

    @classmethod
    def from_result(cls, result: AggregateResult) -> AggregateOut:
        return cls(
            groups=[AggregateGroup.model_validate(g) for g in result.groups], totals=result.totals
        )
