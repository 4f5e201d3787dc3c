"""The auditors' rule language: a small grammar of our own, parsed safely, evaluated over batches.

A rule is one boolean expression over the documented feature names (`features.FEATURE_NAMES`) and
a few transaction fields, e.g. `km_from_home > 500 and scheme == "OLD_AGE_PENSION"`. Nothing is
ever handed to Python's `eval`, `exec` or pandas' `query`: a tokenizer and a recursive-descent
parser build a typed tree, which is evaluated with numpy over a whole batch at once
(`evaluate`) or, as the reference the tests compare with, one row at a time (`evaluate_row`).

Grammar (lowest precedence first):

    expression  := and_expr ("or" and_expr)*
    and_expr    := not_expr ("and" not_expr)*
    not_expr    := "not" not_expr | comparison
    comparison  := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                        | ["not"] "in" "(" literal ("," literal)* ")"]
    sum         := product (("+" | "-") product)*
    product     := unary (("*" | "/") unary)*
    unary       := "-" unary | NUMBER | STRING | NAME | "(" expression ")"

Values are numbers or texts; `and`, `or` and `not` take conditions. Texts are compared only with
`==`, `!=` and `in`; a missing account or agent is the empty text "". Division by zero gives no
value, and a comparison with no value is false.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemewatch import features
from schemewatch.errors import SchemewatchError
from schemewatch.schemes import DAY, IST_OFFSET_SECONDS

MAX_LENGTH = 500
MAX_DEPTH = 20
MAX_IN_VALUES = 100

NUMBER, TEXT, CONDITION = "number", "text", "condition"
# Transaction fields a rule may name, besides the features. `hour` is the IST hour (0-23).
TEXT_FIELDS = (
    "scheme",
    "channel",
    "state",
    "district",
    "instalment_period",
    "beneficiary_id",
    "account_id",
    "agent_id",
)
NUMBER_FIELDS = ("amount", "hour", "latitude", "longitude")
NAMES = {
    **{name: NUMBER for name in features.FEATURE_NAMES},
    **{name: TEXT for name in TEXT_FIELDS},
    **{name: NUMBER for name in NUMBER_FIELDS},
}
KEYWORDS = ("and", "or", "not", "in")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


class RuleError(SchemewatchError):
    """A rule expression is malformed, names something unknown or mixes types."""


# -- tokens ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<text>"[^"\\\n]*"|'[^'\\\n]*')
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<operator>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|,)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # number, text, name, keyword, operator, end
    value: str
    column: int  # 1-based


def tokenize(expression: str) -> list[Token]:
    """The expression's tokens, ending with an `end` token; RuleError at the first bad character."""
    tokens, position = [], 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise RuleError(_bad_character(expression, position))
        kind, value = match.lastgroup, match.group()
        if kind == "name" and value in KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(Token(kind, value, position + 1))
        position = match.end()
    tokens.append(Token("end", "", len(expression) + 1))
    return tokens


def _bad_character(expression: str, position: int) -> str:
    character = expression[position]
    column = position + 1
    if character == "=":
        return f"use '==' to compare, at column {column}"
    if character in "\"'":
        return f"text starting at column {column} is not closed (or holds a backslash)"
    if character == "&":
        return f"use 'and' instead of '&' at column {column}"
    if character == "|":
        return f"use 'or' instead of '|' at column {column}"
    if character == "!":
        return f"use 'not' instead of '!' at column {column}"
    return f"unexpected character {character!r} at column {column}"


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node of a parsed rule: `op` says what it is, `kind` what it yields."""

    op: str  # number, text, name, neg, + - * /, comparison ops, in, not in, and, or, not
    kind: str
    column: int
    value: object = None  # the literal, the name, or the tuple of `in` values
    children: tuple = ()


@dataclass(frozen=True)
class Expression:
    """A parsed rule expression: its text, its tree and the names it reads."""

    text: str
    tree: Node
    names: tuple[str, ...]


def parse(expression: str) -> Expression:
    """Parse and type-check a rule expression; RuleError names the problem and its column."""
    if not isinstance(expression, str) or not expression.strip():
        raise RuleError("the rule expression is empty")
    if len(expression) > MAX_LENGTH:
        raise RuleError(
            f"the rule expression is {len(expression)} characters long; at most {MAX_LENGTH}"
        )
    parser = _Parser(tokenize(expression))
    tree = parser.expression()
    if parser.peek.kind != "end":
        raise RuleError(f"unexpected {_describe(parser.peek)} at column {parser.peek.column}")
    if tree.kind != CONDITION:
        raise RuleError(
            f"the rule must be a condition (a comparison, or conditions joined by and/or), "
            f"not a {tree.kind}"
        )
    return Expression(expression, tree, tuple(sorted(_names(tree))))


def _names(node: Node) -> set[str]:
    own = {node.value} if node.op == "name" else set()
    return own.union(*(_names(child) for child in node.children))


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "end of the expression"
    return f"'{token.value}'"


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *values: str) -> bool:
        return self.peek.kind in ("keyword", "operator") and self.peek.value in values

    def expect(self, value: str, what: str) -> Token:
        if not self.at(value):
            raise RuleError(
                f"expected {what}, found {_describe(self.peek)} at column {self.peek.column}"
            )
        return self.take()

    def nested(self, column: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"the rule nests deeper than {MAX_DEPTH} levels at column {column}")

    def expression(self) -> Node:
        return self._joined("or", self.and_expr)

    def and_expr(self) -> Node:
        return self._joined("and", self.not_expr)

    def _joined(self, word: str, operand) -> Node:
        node = operand()
        while self.at(word):
            token = self.take()
            right = operand()
            for side in (node, right):
                _require(side, CONDITION, f"'{word}' at column {token.column}")
            node = Node(word, CONDITION, token.column, children=(node, right))
        return node

    def not_expr(self) -> Node:
        if self.at("not"):
            token = self.take()
            self.nested(token.column)
            operand = self.not_expr()
            self.depth -= 1
            _require(operand, CONDITION, f"'not' at column {token.column}")
            return Node("not", CONDITION, token.column, children=(operand,))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        if self.at(*COMPARISONS):
            token = self.take()
            right = self.sum()
            return _compare(token, left, right)
        if self.at("in") or (self.at("not") and self._next_is_in()):
            negated = self.take().value == "not"
            token = self.take() if negated else self.tokens[self.index - 1]
            return self._membership(left, token, negated)
        return left

    def _next_is_in(self) -> bool:
        following = self.tokens[self.index + 1]
        return following.kind == "keyword" and following.value == "in"

    def _membership(self, left: Node, token: Token, negated: bool) -> Node:
        word = "not in" if negated else "in"
        if left.kind == CONDITION:
            raise RuleError(f"'{word}' at column {token.column} needs a number or text on its left")
        self.expect("(", f"'(' after '{word}'")
        values = [self._literal(left.kind, word)]
        while self.at(","):
            self.take()
            values.append(self._literal(left.kind, word))
        self.expect(")", f"',' or ')' in the list after '{word}'")
        if len(values) > MAX_IN_VALUES:
            raise RuleError(
                f"the list after '{word}' at column {token.column} has more than "
                f"{MAX_IN_VALUES} values"
            )
        return Node(word, CONDITION, token.column, tuple(values), (left,))

    def _literal(self, kind: str, word: str):
        token = self.take()
        sign = 1.0
        if token.kind == "operator" and token.value == "-":
            sign, token = -1.0, self.take()
        if token.kind == "number" and kind == NUMBER:
            return sign * float(token.value)
        if token.kind == "text" and kind == TEXT and sign > 0:
            return token.value[1:-1]
        if token.kind in ("number", "text"):
            found = TEXT if token.kind == "text" else NUMBER
            raise RuleError(
                f"type mismatch at column {token.column}: the list after '{word}' must hold "
                f"{kind}s like its left side, found a {found}"
            )
        raise RuleError(
            f"expected a {kind} in the list after '{word}' at column {token.column}, "
            f"found {_describe(token)}"
        )

    def sum(self) -> Node:
        return self._arithmetic(("+", "-"), self.product)

    def product(self) -> Node:
        return self._arithmetic(("*", "/"), self.unary)

    def _arithmetic(self, operators, operand) -> Node:
        node = operand()
        while self.at(*operators):
            token = self.take()
            right = operand()
            for side in (node, right):
                _require(side, NUMBER, f"'{token.value}' at column {token.column}")
            node = Node(token.value, NUMBER, token.column, children=(node, right))
        return node

    def unary(self) -> Node:
        token = self.take()
        if token.kind == "operator" and token.value == "-":
            self.nested(token.column)
            operand = self.unary()
            self.depth -= 1
            _require(operand, NUMBER, f"'-' at column {token.column}")
            return Node("neg", NUMBER, token.column, children=(operand,))
        if token.kind == "number":
            return Node("number", NUMBER, token.column, float(token.value))
        if token.kind == "text":
            return Node("text", TEXT, token.column, token.value[1:-1])
        if token.kind == "name":
            return Node("name", _kind_of(token), token.column, token.value)
        if token.kind == "operator" and token.value == "(":
            self.nested(token.column)
            node = self.expression()
            self.depth -= 1
            self.expect(")", f"')' to close the '(' at column {token.column}")
            return node
        raise RuleError(f"expected a value at column {token.column}, found {_describe(token)}")


def _kind_of(token: Token) -> str:
    if token.value in NAMES:
        return NAMES[token.value]
    close = difflib.get_close_matches(token.value, list(NAMES), n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else "; see the README for the names"
    return _raise(f"unknown name '{token.value}' at column {token.column}{hint}")


def _raise(message: str):
    raise RuleError(message)


def _require(node: Node, kind: str, where: str) -> None:
    if node.kind != kind:
        raise RuleError(
            f"type mismatch: {where} needs a {kind}, but the part at column {node.column} "
            f"is a {node.kind}"
        )


def _compare(token: Token, left: Node, right: Node) -> Node:
    operator, column = token.value, token.column
    if CONDITION in (left.kind, right.kind):
        raise RuleError(
            f"type mismatch: '{operator}' at column {column} compares numbers or texts, "
            "not conditions (use and/or/not)"
        )
    if left.kind != right.kind:
        raise RuleError(
            f"type mismatch: '{operator}' at column {column} compares a {left.kind} with a "
            f"{right.kind}"
        )
    if left.kind == TEXT and operator not in ("==", "!="):
        raise RuleError(
            f"type mismatch: '{operator}' at column {column} orders numbers; texts can only be "
            "compared with ==, != or in"
        )
    return Node(operator, CONDITION, column, children=(left, right))


# -- evaluation --------------------------------------------------------------------------------


def columns_for(
    expression: Expression, rows: pd.DataFrame, matrix: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays an expression reads, from transaction rows and their feature matrix."""
    out = {}
    for name in expression.names:
        if NAMES[name] == TEXT:
            out[name] = rows[name].fillna("").astype(str).to_numpy(object)
        elif name == "hour":
            local = rows["paid_at"].to_numpy(np.int64) + IST_OFFSET_SECONDS
            out[name] = ((local % DAY) // 3600).astype(float)
        elif name in NUMBER_FIELDS:
            out[name] = rows[name].to_numpy(float)
        else:
            out[name] = matrix[:, features.FEATURE_NAMES.index(name)].astype(float)
    return out


def evaluate(expression: Expression, columns: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """Which of `rows` rows match, as a boolean array, computed column-wise with numpy."""
    with np.errstate(all="ignore"):
        result = _vector(expression.tree, columns)
    return np.broadcast_to(np.asarray(result, bool), (rows,)).copy()


def _vector(node: Node, columns):
    op = node.op
    if op in ("number", "text"):
        return node.value
    if op == "name":
        return columns[node.value]
    values = [_vector(child, columns) for child in node.children]
    if op == "neg":
        return -values[0]
    if op in ("in", "not in"):
        found = pd.Series(np.atleast_1d(values[0])).isin(node.value).to_numpy()
        return ~found if op == "not in" else found
    if op == "not":
        return np.logical_not(values[0])
    left, right = values
    if op == "/":
        right = np.asarray(right, float)
        return np.where(
            right == 0, np.nan, np.asarray(left, float) / np.where(right == 0, 1, right)
        )
    return _OPERATIONS[op](left, right)


_OPERATIONS = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "==": lambda a, b: np.asarray(a == b, bool),
    "!=": lambda a, b: np.asarray(a != b, bool) & ~(_nan(a) | _nan(b)),
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "and": np.logical_and,
    "or": np.logical_or,
}


def _nan(value) -> np.ndarray:
    array = np.asarray(value)
    return np.isnan(array) if array.dtype.kind == "f" else np.zeros(array.shape, bool)


def evaluate_row(expression: Expression, row: dict) -> bool:
    """Whether one row matches, in plain Python (the reference `evaluate` is tested against)."""
    return bool(_scalar(expression.tree, row))


def _scalar(node: Node, row: dict):
    op = node.op
    if op in ("number", "text"):
        return node.value
    if op == "name":
        return row[node.value]
    if op == "and":
        return _scalar(node.children[0], row) and _scalar(node.children[1], row)
    if op == "or":
        return _scalar(node.children[0], row) or _scalar(node.children[1], row)
    values = [_scalar(child, row) for child in node.children]
    if op == "neg":
        return -values[0]
    if op == "not":
        return not values[0]
    if op in ("in", "not in"):
        return (values[0] in node.value) == (op == "in")
    left, right = values
    if op == "/":
        return math.nan if right == 0 else left / right
    if op == "!=":
        return not (_isnan(left) or _isnan(right)) and left != right
    return {
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
        "==": lambda: left == right,
        "<": lambda: left < right,
        "<=": lambda: left <= right,
        ">": lambda: left > right,
        ">=": lambda: left >= right,
    }[op]()


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
