"""The formula language's syntax (docs/computed.md "The language"): a tokenizer and a small
hand-written Pratt parser into an immutable AST.

Hand-written rather than a parser library: the grammar is a dozen rules, every error must name
the character position it found, and the length and depth limits are checked while parsing,
before anything recursive could run away; no dependency is needed for that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FORMULA_CHARS = 2000
MAX_DEPTH = 24  # nesting of calls, operators and parentheses
MAX_NODES = 400
INT64_MAX = 2**63 - 1


class FormulaError(ValueError):
    """A formula that cannot be used: `position` is the 0-based character it was found at."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.message = message


# ---- the AST ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    pos: int


@dataclass(frozen=True)
class Number(Node):
    value: int | float


@dataclass(frozen=True)
class Text(Node):
    value: str


@dataclass(frozen=True)
class Boolean(Node):
    value: bool


@dataclass(frozen=True)
class ColumnRef(Node):
    key: str


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


def column_keys(node: Node) -> set[str]:
    """The keys of the columns a formula reads."""
    if isinstance(node, ColumnRef):
        return {node.key}
    if isinstance(node, Call):
        return set().union(*(column_keys(a) for a in node.args)) if node.args else set()
    if isinstance(node, Unary):
        return column_keys(node.operand)
    if isinstance(node, Binary):
        return column_keys(node.left) | column_keys(node.right)
    return set()


# ---- tokens -------------------------------------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<text>"(?:[^"\\]|\\.)*"?)
  | (?P<column>\{[^{}]*\}?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|[-+*/=<>(),&])
    """,
    re.VERBOSE | re.DOTALL,
)
KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, text, column, name, op, end
    text: str
    pos: int


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_FORMULA_CHARS:
        raise FormulaError(
            MAX_FORMULA_CHARS, f"a formula has at most {MAX_FORMULA_CHARS} characters"
        )
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        match = TOKEN.match(source, pos)
        if match is None:
            raise FormulaError(pos, f"unexpected character {source[pos]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "text" and (len(text) < 2 or not _closed(text)):
            raise FormulaError(pos, 'unterminated text: a closing " is missing')
        if kind == "column" and not text.endswith("}"):
            raise FormulaError(pos, "unterminated column reference: a closing } is missing")
        if kind != "space":
            tokens.append(Token(kind, text, pos))
        pos = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


def _closed(text: str) -> bool:
    body = text[1:]
    escaped = False
    for index, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index == len(body) - 1
    return False


def _unescape(text: str, pos: int) -> str:
    out: list[str] = []
    body = text[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            following = body[index + 1]
            if following not in ESCAPES:
                raise FormulaError(pos + index + 1, f"unknown escape \\{following}")
            out.append(ESCAPES[following])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


# ---- the parser ---------------------------------------------------------------------------

# binding powers: comparison < concatenation (&) < additive < multiplicative < unary
BINARY = {
    "=": 10,
    "!=": 10,
    "<>": 10,
    "<": 10,
    "<=": 10,
    ">": 10,
    ">=": 10,
    "&": 20,
    "+": 30,
    "-": 30,
    "*": 40,
    "/": 40,
}
UNARY_POWER = 50


class Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.index = 0
        self.nodes = 0

    def parse(self) -> Node:
        if self.tokens[0].kind == "end":
            raise FormulaError(0, "the formula is empty")
        node = self.expression(0, 1)
        token = self.peek()
        if token.kind != "end":
            raise FormulaError(token.pos, f"unexpected {_describe(token)}")
        return node

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.peek()
        if token.kind != "op" or token.text != text:
            raise FormulaError(token.pos, f"expected '{text}', found {_describe(token)}")
        return self.advance()

    def count(self, pos: int, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FormulaError(pos, f"a formula has at most {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise FormulaError(pos, f"a formula nests at most {MAX_DEPTH} levels deep")

    def expression(self, power: int, depth: int) -> Node:
        left = self.prefix(depth)
        while True:
            token = self.peek()
            op_power = BINARY.get(token.text) if token.kind == "op" else None
            if op_power is None or op_power <= power:
                return left
            self.advance()
            self.count(token.pos, depth)
            if op_power == BINARY["="] and isinstance(left, Binary) and BINARY[left.op] == op_power:
                raise FormulaError(token.pos, "comparisons do not chain: use AND")
            right = self.expression(op_power, depth + 1)
            op = "!=" if token.text == "<>" else token.text
            left = Binary(token.pos, op, left, right)

    def prefix(self, depth: int) -> Node:
        token = self.advance()
        self.count(token.pos, depth)
        if token.kind == "number":
            return self.number(token)
        if token.kind == "text":
            return Text(token.pos, _unescape(token.text, token.pos))
        if token.kind == "column":
            key = token.text[1:-1].strip()
            if not KEY.match(key):
                raise FormulaError(token.pos, f"'{key[:64]}' is not a column key")
            return ColumnRef(token.pos, key)
        if token.kind == "name":
            return self.name(token, depth)
        if token.kind == "op" and token.text in ("-", "+"):
            operand = self.expression(UNARY_POWER, depth + 1)
            return Unary(token.pos, token.text, operand)
        if token.kind == "op" and token.text == "(":
            inner = self.expression(0, depth + 1)
            self.expect(")")
            return inner
        raise FormulaError(token.pos, f"expected a value, found {_describe(token)}")

    def number(self, token: Token) -> Number:
        text = token.text
        if any(c in text for c in ".eE"):
            value = float(text)
            if value in (float("inf"), float("-inf")):
                raise FormulaError(token.pos, "the number is too large")
            return Number(token.pos, value)
        whole = int(text)
        if whole > INT64_MAX:
            raise FormulaError(token.pos, "the number is out of the 64-bit integer range")
        return Number(token.pos, whole)

    def name(self, token: Token, depth: int) -> Node:
        upper = token.text.upper()
        following = self.peek()
        if following.kind == "op" and following.text == "(":
            self.advance()
            args: list[Node] = []
            if not (self.peek().kind == "op" and self.peek().text == ")"):
                args.append(self.expression(0, depth + 1))
                while self.peek().kind == "op" and self.peek().text == ",":
                    self.advance()
                    args.append(self.expression(0, depth + 1))
            self.expect(")")
            return Call(token.pos, upper, tuple(args))
        if upper in ("TRUE", "FALSE"):
            return Boolean(token.pos, upper == "TRUE")
        raise FormulaError(
            token.pos,
            f"unknown name '{token.text[:64]}': write a column as {{key}}, a function with ()",
        )


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the formula"
    return f"'{token.text[:32]}'"


def parse(source: str) -> Node:
    """The AST of a formula, or FormulaError with the position."""
    return Parser(source).parse()
