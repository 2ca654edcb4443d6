"""pydantic's own field messages in Russian (crm_core/platform/i18n.py, docs/api.md "Languages"):
translated by the error's type and `ctx`, never by pydantic's English wording; every type
pydantic_core lists, and so every type a request model of this app can raise (walked from the
routes' body, query and form models), has a template and a Russian entry; the messages our own
validators raise are in the catalog; an unknown type, or a `ctx` of another shape, stays
English."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticKnownError
from pydantic_core.core_schema import ErrorType

from crm_core.platform import i18n
from handlers.app import all_routes, create_app
from handlers.routing import SERVICES, JsonObject, validation_error
from tests.support.api import make_settings

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ERROR_TYPES: tuple[str, ...] = typing.get_args(ErrorType)


def russian() -> i18n.Catalog:
    found = i18n.catalog("ru")
    assert found is not None, "run ./scripts/install (pybabel compile)"
    return found


def pydantic_template(kind: str) -> str:
    """pydantic_core's own English template of `kind` (the `ctx` it needs found by asking)."""
    context: dict[str, Any] = {}
    for _ in range(8):
        try:
            return str(PydanticKnownError(kind, context).message_template)  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            name = re.search(r"'(\w+)'", str(exc))
            assert name is not None, f"{kind}: {exc}"
            context[name.group(1)] = "1" if "must be a String" in str(exc) else 1
    raise AssertionError(f"{kind}: no ctx satisfies it")


# ---- every type has a template and a translation -------------------------------------------


def test_every_pydantic_error_type_has_a_template_with_a_russian_entry():
    assert len(ERROR_TYPES) > 100
    missing = sorted(set(ERROR_TYPES) - set(i18n.PYDANTIC_MESSAGES))
    assert missing == [], f"add to i18n.PYDANTIC_MESSAGES and crm.po: {missing}"
    untranslated = sorted(
        kind for kind, msgid in i18n.PYDANTIC_MESSAGES.items() if msgid not in russian().by_id
    )
    assert untranslated == [], f"add to crm_core/locale/ru/LC_MESSAGES/crm.po: {untranslated}"


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_a_template_names_only_what_pydantic_puts_in_ctx(kind):
    """Our template's placeholders are `ctx` keys pydantic's own template of the type uses (a
    renamed key shows here, not as an English message in production)."""
    ours = set(PLACEHOLDER.findall(i18n.PYDANTIC_MESSAGES[kind]))
    theirs = set(PLACEHOLDER.findall(pydantic_template(kind))) - {"expected_plural"}
    assert ours == theirs, kind


# ---- the types the request models can raise -----------------------------------------------

# what each kind of core schema can raise itself (its constraints' errors included); the
# kinds that only wrap another schema raise nothing of their own
SCHEMA_ERRORS: dict[str, tuple[str, ...]] = {
    "any": (),
    "default": (),
    "definitions": (),
    "definition-ref": (),
    "model-field": (),
    "nullable": (),
    "union": (),
    "no-info": (),
    "with-info": (),
    "none": ("none_required",),
    "model": ("model_type", "model_attributes_type"),
    "model-fields": ("missing", "extra_forbidden", "model_attributes_type", "dict_type"),
    "str": (
        "string_type",
        "string_unicode",
        "string_too_short",
        "string_too_long",
        "string_pattern_mismatch",
    ),
    "int": (
        "int_type",
        "int_parsing",
        "int_parsing_size",
        "int_from_float",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
    ),
    "float": (
        "float_type",
        "float_parsing",
        "finite_number",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
    ),
    "bool": ("bool_type", "bool_parsing"),
    "list": ("list_type", "too_short", "too_long"),
    "dict": ("dict_type", "too_short", "too_long"),
    "literal": ("literal_error",),
    "enum": ("enum",),
    "tagged-union": ("union_tag_invalid", "union_tag_not_found"),
    "datetime": (
        "datetime_type",
        "datetime_parsing",
        "datetime_from_date_parsing",
        "datetime_object_invalid",
        "timezone_aware",
        "timezone_naive",
        "timezone_offset",
        "datetime_past",
        "datetime_future",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
    ),
    "date": ("date_type", "date_parsing", "date_from_datetime_parsing", "date_past"),
    "decimal": (
        "decimal_type",
        "decimal_parsing",
        "decimal_max_digits",
        "decimal_max_places",
        "decimal_whole_digits",
        "finite_number",
    ),
    "url": ("url_type", "url_parsing", "url_syntax_violation", "url_too_long", "url_scheme"),
    "json": ("json_invalid", "json_type"),
    "function-after": ("value_error", "assertion_error"),
    "function-before": ("value_error", "assertion_error"),
    "function-wrap": ("value_error", "assertion_error"),
    "function-plain": ("value_error", "assertion_error"),
}


def request_models() -> list[type[BaseModel]]:
    """The models the app parses requests with: every route's body, query and form, as the app
    builds them (the table constructor's from its column types)."""
    app = create_app(make_settings())
    services = app[SERVICES]
    found: dict[str, type[BaseModel]] = {}
    for spec in all_routes():
        spec = spec.for_app(services)
        for model in (spec.body, spec.query, spec.form):
            if model is not None and model is not JsonObject:
                assert issubclass(model, BaseModel)
                found[f"{model.__module__}.{model.__qualname__}"] = model
    return list(found.values())


def schemas(schema: Any) -> Iterator[dict[str, Any]]:
    """Every core schema in `schema`, nested ones included."""
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str):
            yield schema
        for key, value in schema.items():
            if key not in ("metadata", "serialization"):
                yield from schemas(value)
    elif isinstance(schema, list | tuple):
        for value in schema:
            yield from schemas(value)


@pytest.fixture(scope="module")
def core_schemas() -> list[dict[str, Any]]:
    models = request_models()
    assert len(models) > 30
    return [s for model in models for s in schemas(model.__pydantic_core_schema__)]


def test_every_error_type_a_request_model_can_raise_has_a_translation(core_schemas):
    kinds = {schema["type"] for schema in core_schemas}
    unknown = sorted(kinds - set(SCHEMA_ERRORS))
    assert unknown == [], f"say in SCHEMA_ERRORS which error types these raise: {unknown}"
    raised = {kind for schema in core_schemas for kind in SCHEMA_ERRORS[schema["type"]]}
    assert {"missing", "extra_forbidden", "literal_error", "value_error"} <= raised
    catalog = russian()
    for kind in sorted(raised):
        msgid = i18n.PYDANTIC_MESSAGES.get(kind)
        assert msgid is not None, f"{kind}: no template in i18n.PYDANTIC_MESSAGES"
        assert msgid in catalog.by_id, f"{kind}: add {msgid!r} to crm.po"


# ---- the messages our validators raise ------------------------------------------------------

RAISED = {"ValueError", "AssertionError", "ColumnValueError"}


def _template(node: ast.expr) -> str | None:
    """A message literal as a msgid: an f-string's values become `{name}` placeholders."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                assert isinstance(value, ast.FormattedValue)
                name = next(n.id for n in ast.walk(value.value) if isinstance(n, ast.Name))
                parts.append(f"{{{name}}}")
        return "".join(parts)
    return None


def raised_messages(function: Callable[..., Any]) -> list[str]:
    """The messages `function` raises as a validator: `ValueError("...")` (an f-string read as a
    template) and `PydanticCustomError(type, "template", ...)`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id in RAISED and node.args:
            message = _template(node.args[0])
        elif node.func.id == "PydanticCustomError" and len(node.args) > 1:
            message = _template(node.args[1])
        else:
            continue
        assert message is not None, f"{function.__qualname__}: a message that is not a literal"
        found.append(message)
    return found


def test_the_messages_our_validators_raise_are_in_the_catalog(core_schemas):
    functions = {
        inspect.unwrap(getattr(f, "__func__", f))
        for schema in core_schemas
        if schema["type"].startswith("function-")
        for f in [schema["function"]["function"]]
    }
    ours = {f for f in functions if f.__module__.split(".")[0] in ("models", "crm_core")}
    assert {f.__qualname__ for f in ours} >= {"QuietHours._not_empty", "_offset_in_reach"}
    messages = {m for f in ours for m in raised_messages(f)}
    assert "start and end must differ" in messages
    missing = sorted(messages - set(russian().by_id))
    assert missing == [], f"add to crm_core/locale/ru/LC_MESSAGES/crm.po: {missing}"
    # pydantic's email check is a `value_error` of its own `ctx`: translated by its text
    assert "value is not a valid email address: {reason}" in russian().by_id


# ---- how a message is made and translated ---------------------------------------------------


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=5)
    mode: Literal["a or b", "c", "d"] = "c"
    items: list[int] = Field(default_factory=list, max_length=2)


def failed(body: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The error body of validating `body` against `Sample`, in English and in Russian."""
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate_json(body)
    error = validation_error(caught.value)
    return error.to_body(lambda m: i18n.translate(m, "en")), error.to_body(
        lambda m: i18n.translate(m, "ru")
    )


def test_the_values_are_kept_and_the_choices_keep_their_words():
    english, russian_body = failed('{"name": "abcdefgh", "mode": "x", "items": [1, 2, 3], "z": 1}')
    assert english["error"]["message"] == "name: String should have at most 5 characters"
    assert russian_body["error"]["message"] == "name: строка должна быть не длиннее 5 симв."
    assert [d["message"] for d in russian_body["error"]["details"]] == [
        "строка должна быть не длиннее 5 симв.",
        "должно быть 'a or b', 'c' или 'd'",  # an "or" inside a choice stays
        "список: элементов должно быть не больше 2, а не 3",
        "неизвестное поле",
    ]
    assert [d["field"] for d in russian_body["error"]["details"]] == [
        d["field"] for d in english["error"]["details"]
    ]


def test_a_field_path_is_never_translated():
    """A field named like a catalog text ("List") keeps its name."""
    message = i18n.field_message(
        "List", i18n.pydantic_message({"type": "missing", "msg": "Field required", "ctx": None})
    )
    assert i18n.translate(message, "ru") == "List: обязательное поле"
    assert i18n.translate(message, "en") == "List: Field required"


def test_an_unknown_type_or_an_unexpected_ctx_stays_english():
    unknown = i18n.pydantic_message({"type": "brand_new_type", "msg": "Something new", "ctx": {}})
    assert i18n.translate(unknown, "ru") == "Something new"
    renamed = i18n.pydantic_message(
        {"type": "string_too_long", "msg": "String is too long", "ctx": {"limit": 5}}
    )
    assert i18n.translate(renamed, "ru") == "String is too long"
    # a type whose msgid the catalog lacks is its English, translated as any text is
    orphan = i18n.Text("Nothing known", "No such msgid {x}", {"x": 1})
    assert i18n.translate(orphan, "ru") == "Nothing known"


def test_our_custom_error_types_translate_by_their_text():
    message = i18n.pydantic_message(
        {
            "type": "offset_too_deep",
            "msg": "must be at most 10000; page further with cursor (each page's next_cursor)",
            "ctx": {"maximum": 10000},
        }
    )
    assert i18n.translate(message, "ru") == (
        "должно быть не больше 10000; дальше листайте по cursor (next_cursor каждой страницы)"
    )
