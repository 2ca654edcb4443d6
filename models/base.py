"""Shared bases for request and response models."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field


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


class ErrorBody(OutputModel):
    code: str = Field(examples=["validation_error"])
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)
    request_id: str | None = Field(
        default=None,
        description="The request's id (its `X-Request-ID`, sent or made): find it in the logs",
    )


class ErrorResponse(OutputModel):
    """The shape of every error answer (SPEC §2)."""

    error: ErrorBody


class StatusOut(OutputModel):
    status: str
