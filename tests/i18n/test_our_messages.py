"""Every English message our own code can put in an error body has a Russian entry
(crm_core/platform/i18n.py, docs/api.md "Languages").

The code is read, not run: an AST scan of crm_core/, handlers/, models/ and tasks/ finds each
message given to an error (a `CrmError` subclass, raised or only made: `NotFound("...")`,
`ValidationFailed.field(field, "...")`, `Conflict(message=...)`), to an exception whose text
becomes a field's complaint (`ColumnValueError`, `FilterProblem`, `CellError`...: every subclass
of the `MESSAGE_EXCEPTIONS` below), to a function that hands one of its parameters on to such
an error (found by the scan itself: `_invalid(path, "...")`), and each detail's
`{"message": "..."}`. An f-string is read as a template, its values `{placeholders}`; the
catalog's msgid for it may name them as it likes (the runtime matches a msgid by its text
around the values), so a message and a msgid are compared by that text: each `{name}` as `{}`.
A message made some other way (a value spliced by `+` or `%`, a variable the scan cannot follow)
fails the test too: it cannot be matched, so it is restructured into a template.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_core.platform import errors, i18n

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("crm_core", "handlers", "models", "tasks")
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")

# the root of the errors a client sees, and the exceptions our code turns into a field's
# complaint by their text (`ValidationFailed.field(path, str(exc))`)
ERROR_ROOT = "CrmError"
MESSAGE_EXCEPTIONS = frozenset(
    {
        "ColumnValueError",  # crm_core/tables/columns.py: a cell or a column definition
        "FilterProblem",  # crm_core/tables/filters.py: an operator's value
        "FormulaError",  # crm_core/tables/computed/syntax.py: a formula
        "InvalidPhone",  # crm_core/platform/phones.py
        "CellError",  # crm_core/files/cells.py: an imported cell
        "MalformedReport",  # crm_core/sms/delivery.py: a gateway's delivery report
        "Problem",  # crm_core/tables/computed/definitions.py: a computed column's definition
    }
)


@dataclass(frozen=True)
class Found:
    """One message: its template (placeholders as found) and where it is."""

    template: str
    where: str


@dataclass(frozen=True)
class Unmatchable:
    where: str
    source: str


def shape(template: str) -> str:
    """A template's text around its values: what the runtime matches a msgid by."""
    return PLACEHOLDER.sub("{}", template)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            yield relative, ast.parse(path.read_text(encoding="utf-8"), relative)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def message_classes(trees: list[tuple[str, ast.Module]]) -> set[str]:
    """`CrmError`, the `MESSAGE_EXCEPTIONS` and every class that derives from one of them."""
    bases: dict[str, set[str]] = {}
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = {_name(base) for base in node.bases}
                bases.setdefault(node.name, set()).update(n for n in names if n)
    found = {ERROR_ROOT, *MESSAGE_EXCEPTIONS}
    grown = True
    while grown:
        more = {name for name, parents in bases.items() if parents & found} - found
        found |= more
        grown = bool(more)
    return found


@dataclass
class Scope:
    """What a name means inside a function (or a module): the values it is assigned, whether it
    is a parameter (a message its callers give) or a loop's variable (a message collected)."""

    assigned: dict[str, list[ast.expr]]
    params: set[str]
    iterated: set[str]
    outer: Scope | None

    @classmethod
    def of(cls, node: ast.AST, outer: Scope | None) -> Scope:
        params: set[str] = set()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            arguments = node.args
            params = {a.arg for a in [*arguments.posonlyargs, *arguments.args]}
            params |= {a.arg for a in arguments.kwonlyargs}
        assigned: dict[str, list[ast.expr]] = {}
        iterated: set[str] = set()
        for child in _own_nodes(node):
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(child.value)
            elif isinstance(child, ast.AnnAssign | ast.AugAssign) and child.value is not None:
                if isinstance(child.target, ast.Name):
                    assigned.setdefault(child.target.id, []).append(child.value)
            elif isinstance(child, ast.For | ast.AsyncFor | ast.comprehension):
                iterated |= {n.id for n in ast.walk(child.target) if isinstance(n, ast.Name)}
        return cls(assigned, params, iterated, outer)


class Scanner:
    """The messages of every call to a message sink: a message class (its `message` argument,
    first unless its `__init__` says otherwise), its `field(field, message)` maker, a function
    passing a parameter on to a sink (found by scanning to a fixpoint, its parameter's default
    a message too), and `{"message": ...}` dicts."""

    def __init__(self, trees: list[tuple[str, ast.Module]]) -> None:
        self.trees = trees
        self.classes = message_classes(trees)
        # a sink: callable name -> the position and keyword of its message argument
        self.sinks: dict[str, tuple[int, str]] = {
            name: (_message_position(trees, name), "message") for name in self.classes
        }
        # what each function returns (and where), to follow `problem = password_problem(...)`
        self.returns: dict[str, list[tuple[ast.expr, ast.AST]]] = {}
        self.module_of: dict[int, ast.Module] = {}
        for _, tree in trees:
            for function in ast.walk(tree):
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.module_of[id(function)] = tree
                    for node in _own_nodes(function):
                        if isinstance(node, ast.Return) and node.value is not None:
                            self.returns.setdefault(function.name, []).append(
                                (node.value, function)
                            )
        self.resolving: set[tuple[int, str]] = set()
        self.words: list[str] = []  # English words spliced into messages as values
        # function -> {parameter: (position, the templates it is spliced into)}
        self.splicers: dict[str, dict[str, tuple[int, list[str]]]] = {}
        # a spliced word: (the word, the messages it makes in its place)
        self.spliced: list[tuple[str, list[str]]] = []
        self.found: list[Found] = []
        self.unmatchable: list[Unmatchable] = []

    def sink_of(self, call: ast.Call) -> tuple[int, str] | None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "field":
            return (1, "message") if _name(func.value) in self.classes else None
        name = _name(func)
        return None if name is None else self.sinks.get(name)

    def message_argument(self, call: ast.Call) -> ast.expr | None:
        sink = self.sink_of(call)
        if sink is None:
            return None
        position, keyword = sink
        for item in call.keywords:
            if item.arg == keyword:
                return item.value
        if len(call.args) > position and not isinstance(call.args[position], ast.Starred):
            return call.args[position]
        return None

    def find_forwarders(self) -> None:
        """Functions whose parameter is the message of a sink they call become sinks."""
        grown = True
        while grown:
            grown = False
            for _, tree in self.trees:
                for function in ast.walk(tree):
                    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                        continue
                    if function.name in self.sinks:
                        continue
                    params = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
                    if params and params[0] in ("self", "cls"):
                        params = params[1:]
                    for call in ast.walk(function):
                        if not isinstance(call, ast.Call):
                            continue
                        argument = self.message_argument(call)
                        if isinstance(argument, ast.Name) and argument.id not in params:
                            # `message = f"... {action} ..."` then `raise Forbidden(message)`
                            made = Scope.of(function, None).assigned.get(argument.id, [])
                            for value in made:
                                if isinstance(value, ast.JoinedStr):
                                    self._note_splicer(function, params, value)
                        if isinstance(argument, ast.JoinedStr):
                            self._note_splicer(function, params, argument)
                            argument = _detail_message(call)  # f"{path}: {message}"
                        if isinstance(argument, ast.Name) and argument.id in params:
                            self.sinks[function.name] = (params.index(argument.id), argument.id)
                            grown = True
                            break

    def _note_splicer(
        self,
        function: ast.FunctionDef | ast.AsyncFunctionDef,
        params: list[str],
        message: ast.JoinedStr,
    ) -> None:
        """`def check_grant(..., what)` raising f"You cannot {what} ...": its callers' `what`
        ("change a role with") is a word spliced into a message."""
        for value in message.values:
            if isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                name = value.value.id
                if name in params and (function.name, name) not in NOT_WORDS:
                    spliced = self.splicers.setdefault(function.name, {})
                    _, messages = spliced.setdefault(name, (params.index(name), []))
                    messages.append(self._joined(message))

    def scan(self) -> None:
        self.find_forwarders()
        for relative, tree in self.trees:
            self._scan_scope(relative, tree, None)
        # the words callers give a function that splices them into a message
        for _, tree in self.trees:
            scope = Scope.of(tree, None)
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                spliced = self.splicers.get(_name(call.func) or "")
                if spliced is None or _name(call.func) in self.sinks:
                    continue
                for name, (position, messages) in spliced.items():
                    given = [item.value for item in call.keywords if item.arg == name]
                    given += call.args[position : position + 1]
                    for argument in given:
                        for word in self.templates(argument, scope, 0):
                            if word and shape(word) != "{}":
                                made = [m.replace(f"{{{name}}}", word) for m in messages]
                                self.spliced.append((word, made))

    def _scan_scope(self, relative: str, node: ast.AST, outer: Scope | None) -> None:
        scope = Scope.of(node, outer)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in self.sinks:
            # a forwarder's default message (`message: str = "is not a row id"`)
            _, keyword = self.sinks[node.name]
            arguments = node.args
            positional = [*arguments.posonlyargs, *arguments.args]
            with_defaults = positional[len(positional) - len(arguments.defaults) :]
            defaults = {a.arg: d for a, d in zip(with_defaults, arguments.defaults, strict=True)}
            for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
                if default is not None:
                    defaults[arg.arg] = default
            if keyword in defaults:
                self._read(defaults[keyword], f"{relative}:{node.lineno}", scope)
        for child in _own_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self._scan_scope(relative, child, scope)
                continue
            where = f"{relative}:{getattr(child, 'lineno', 0)}"
            if isinstance(child, ast.Call):
                argument = self.message_argument(child)
                if argument is not None:
                    self._read(argument, where, scope)
            elif isinstance(child, ast.Dict):
                for key, value in zip(child.keys, child.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "message":
                        self._read(value, where, scope)

    def _read(self, node: ast.expr, where: str, scope: Scope) -> None:
        """The templates `node` can be; what no template can say is unmatchable."""
        for template in self.templates(node, scope, 0):
            if template is None:
                self.unmatchable.append(Unmatchable(where, ast.unparse(node)))
            elif template and shape(template) != "{}":  # not a message given on whole
                self.found.append(Found(template, where))

    def templates(self, node: ast.expr, scope: Scope, depth: int) -> Iterator[str | None]:
        """Each template `node` may be (None: one the scan cannot say), `{name}` per value."""
        if depth > 6:
            yield None
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                yield node.value
            elif node.value is not None:  # None: the class's default (test_messages.py)
                yield None
        elif isinstance(node, ast.JoinedStr):
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    self.words.extend(self.spliced_words(value.value, scope))
            yield self._joined(node)
        elif isinstance(node, ast.IfExp):
            yield from self.templates(node.body, scope, depth + 1)
            yield from self.templates(node.orelse, scope, depth + 1)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                yield from self.templates(value, scope, depth + 1)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            lefts = list(self.templates(node.left, scope, depth + 1))
            rights = list(self.templates(node.right, scope, depth + 1))
            for left in lefts:
                for right in rights:
                    yield None if left is None or right is None else left + right
        elif isinstance(node, ast.Name):
            yield from self._name_templates(node.id, scope, depth)
        elif isinstance(node, ast.Call):
            yield from self._call_templates(node, scope, depth)
        elif isinstance(node, ast.Attribute) and node.attr in ("message", "msg"):
            return  # `exc.message`: the exception's message, scanned where it is made
        elif isinstance(node, ast.Subscript):
            yield from self._item_templates(node, scope, depth)
        elif isinstance(node, ast.Dict):
            return  # a JSON schema's `{"message": {...}}`, not a message
        else:
            yield None

    @staticmethod
    def _joined(node: ast.JoinedStr) -> str:
        return "".join(
            str(v.value) if isinstance(v, ast.Constant) else f"{{{_value_name(v)}}}"
            for v in node.values
        )

    def spliced_words(self, node: ast.expr, scope: Scope) -> list[str]:
        """The English words our code splices into a message as a value: what a function of
        ours returns (`_json_type(value)`: "a number") or a dict of ours holds
        (`_SCOPE_NAMES[scope]`: "API token"); each is translated in turn, so each needs an
        entry too. A value from elsewhere (a key, a number, a client's text) is kept as is."""
        if isinstance(node, ast.Call) and _name(node.func) in self.returns:
            found = []
            for value, _ in self.returns[_name(node.func) or ""]:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.append(value.value)
            return found
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            current: Scope | None = scope
            while current is not None and node.value.id not in current.assigned:
                current = current.outer
            if current is not None:
                return [
                    item.value
                    for value in current.assigned[node.value.id]
                    if isinstance(value, ast.Dict)
                    for item in value.values
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)
                ]
        return []

    def _item_templates(
        self, node: ast.Subscript, scope: Scope, depth: int
    ) -> Iterator[str | None]:
        """`TOO_MANY[scope]`: each message of a dict of ours; `errors[0]["message"]`, a
        detail's, is scanned where it is made."""
        if not isinstance(node.value, ast.Name):
            return
        current: Scope | None = scope
        while current is not None and node.value.id not in current.assigned:
            current = current.outer
        if current is None:
            return
        for value in current.assigned[node.value.id]:
            if isinstance(value, ast.Dict):
                for item in value.values:
                    yield from self.templates(item, current, depth + 1)

    def _name_templates(self, name: str, scope: Scope, depth: int) -> Iterator[str | None]:
        current: Scope | None = scope
        while current is not None:
            if name in current.assigned:
                if (id(current), name) in self.resolving:
                    return  # `reason = reason or ...`: its other values are read already
                self.resolving.add((id(current), name))
                for value in current.assigned[name]:
                    # `MESSAGE = MESSAGE` in a class: the name of the scope around it
                    same = isinstance(value, ast.Name) and value.id == name
                    where = current.outer if same and current.outer else current
                    yield from self.templates(value, where, depth + 1)
                self.resolving.discard((id(current), name))
                return
            if name in current.params or name in current.iterated:
                return  # a message given (its callers') or collected (scanned where made)
            current = current.outer
        yield None

    def _call_templates(self, call: ast.Call, scope: Scope, depth: int) -> Iterator[str | None]:
        name = _name(call.func)
        if name in PASS_THROUGH_CALLS:
            return  # `str(exc)`: the exception's own message, scanned where it is made
        if name == "format" and isinstance(call.func, ast.Attribute):
            yield from self.templates(call.func.value, scope, depth + 1)  # `TEMPLATE.format()`
            return
        if name in self.returns:
            for value, function in self.returns[name]:
                module = Scope.of(self.module_of[id(function)], None)
                yield from self.templates(value, Scope.of(function, module), depth + 1)
            return
        yield None


# parameters spliced into a message whose values are not words to translate
NOT_WORDS = frozenset(
    {
        ("expect", "text"),  # a formula's token: f"expected '{text}', found ..."
        ("literal_int", "what"),  # a formula function's argument, as the formula names it
        ("check_version", "expected"),  # a version number
        ("coerce", "value"),  # a client's value: f"{value} is not an option of this column"
    }
)

# calls whose value is a message already made (an exception's text, an error's translation)
PASS_THROUGH_CALLS = frozenset({"str", "translate", "field_message", "pydantic_message"})


def _message_position(trees: list[tuple[str, ast.Module]], name: str) -> int:
    """Where class `name` takes its message: its `__init__`'s `message`, else first."""
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                fields = [  # a dataclass's, in order
                    item.target.id
                    for item in node.body
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                ]
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        fields = [a.arg for a in item.args.args][1:]
                if "message" in fields:
                    return fields.index("message")
    return 0


def _detail_message(call: ast.Call) -> ast.expr | None:
    """The `message` of a detail given with an error (`[{"field": path, "message": message}]`)."""
    for node in ast.walk(call):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "message":
                    return value
    return None


def _value_name(value: ast.expr) -> str:
    """A placeholder's name for an f-string's value: `{budget.quota}` is `{quota}`,
    `{len(failures)}` is `{failures}`, `{NAMES[scope]}` is `{NAMES}`."""
    assert isinstance(value, ast.FormattedValue)
    node: ast.expr = value.value
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Call):
            node = node.args[0] if node.args else node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return "value"


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `scope`, not descending into the functions and classes it defines (yielded
    themselves, to be scanned as scopes of their own)."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


@pytest.fixture(scope="module")
def scanned() -> Scanner:
    scanner = Scanner(list(modules()))
    scanner.scan()
    return scanner


def russian() -> i18n.Catalog:
    found = i18n.catalog("ru")
    assert found is not None, "run ./scripts/install (pybabel compile)"
    return found


def test_the_scan_finds_what_it_is_meant_to(scanned):
    """The scan reads each way of making a message (a guard: a scan finding nothing passes)."""
    templates = {found.template for found in scanned.found}
    assert len(templates) > 300
    assert {"unknown column type", "no such role in this company"} <= templates
    assert "Campaign not found" in templates  # NotFound("...")
    assert "is not a whole number" in templates  # CellError, a MESSAGE_EXCEPTIONS subclass
    assert {"_invalid", "Problem"} <= set(scanned.sinks)  # functions passing a message on
    assert any(shape(t) == "unknown operator '{}'" for t in templates)  # an f-string


def test_every_word_spliced_into_a_message_has_a_russian_entry(scanned):
    """`expected {expected}, got {_json_type(value)}`: the words our code puts in as values
    are translated in turn, so they are in the catalog too."""
    assert {"a number", "a string", "an object"} <= set(scanned.words)
    missing = sorted(set(scanned.words) - set(russian().by_id))
    assert missing == [], f"add to crm_core/locale/ru/LC_MESSAGES/crm.po: {missing}"


def test_every_word_a_caller_splices_into_a_message_has_a_russian_entry(scanned):
    """`check_token_scope(ctx, "change the password")` raising f"... does not cover: {action}":
    the word, or the whole message it makes ("Row" in f"{what} not found": "Row not found"),
    is in the catalog."""
    assert any(word == "change the password" for word, _ in scanned.spliced)
    known = {shape(msgid) for msgid in russian().by_id}
    missing = sorted(
        {
            word
            for word, made in scanned.spliced
            if word not in russian().by_id and not any(shape(m) in known for m in made)
        }
    )
    assert missing == [], f"add to crm_core/locale/ru/LC_MESSAGES/crm.po: {missing}"


def test_every_message_can_be_matched(scanned):
    """A message is a literal or an f-string (or a name given one): a value spliced by `+` or
    `%`, or a message from somewhere the scan cannot follow, cannot be found in the catalog."""
    assert [f"{u.where}: {u.source}" for u in scanned.unmatchable] == []


def test_every_message_has_a_russian_entry(scanned):
    known = {shape(msgid) for msgid in russian().by_id}
    missing: dict[str, str] = {}
    for found in scanned.found:
        if shape(found.template) not in known:
            missing.setdefault(found.template, found.where)
    listed = "\n".join(f"  {where}: {template!r}" for template, where in sorted(missing.items()))
    assert not missing, (
        f"{len(missing)} messages have no entry in crm_core/locale/ru/LC_MESSAGES/crm.po:\n{listed}"
    )


# ---- how a message made by hand is matched ---------------------------------------------------


def test_a_field_path_is_kept_and_its_complaint_translated_on_its_own():
    """`f"{field}: {message}"` made by hand: a template beginning with a value ("{what} not
    found") does not take the path along as its value."""
    assert i18n.translate("rows.0.link: row not found", "ru") == "rows.0.link: строка не найдена"
    assert i18n.translate("amount: expected a number, got a string", "ru") == (
        "amount: ожидалось: число; получено: строка"
    )
    # a path whose complaint is not a message of its own is matched as a whole
    assert i18n.translate("data[3]: the sms id is missing or too long", "ru") == (
        "data[3]: id SMS отсутствует или слишком длинный"
    )
    error = errors.ValidationFailed.field("link", "row not found")
    assert error.to_body(lambda m: i18n.translate(m, "ru")) == {
        "error": {
            "code": "validation_error",
            "message": "link: строка не найдена",
            "details": [{"field": "link", "message": "строка не найдена"}],
        }
    }
    assert error.to_body()["error"]["message"] == "link: row not found"


def test_an_or_in_a_message_the_catalog_does_not_know_stays_english():
    """pydantic's choices' "or" is translated by its msgid, never by matching any text."""
    assert i18n.translate("Nothing or something", "ru") == "Nothing or something"
    assert i18n.translate("stage: x or y", "ru") == "stage: x or y"
