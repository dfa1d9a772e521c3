"""The SuiteQL subset the NetSuite simulator answers: one table, plain columns, equality filters.

Enough of SuiteQL for an integration that looks things up: `SELECT a, b | * FROM table`,
`WHERE col = 'x'`, `col <> 'x'`, `col IN ('x', 'y')` joined by `AND`, and `ORDER BY col [ASC|DESC]`.
Joins, functions, `OR` and sub-queries are refused with the same error NetSuite gives a query it
cannot parse, so an adapter that needs more learns it here rather than in production.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

Row = Mapping[str, str | None]


class SuiteQLError(ValueError):
    """A query outside the supported subset, or naming a column the table does not have."""


@dataclass(frozen=True)
class Condition:
    """One filter: a column compared with literals (`=` and `IN` keep rows that match one)."""

    column: str
    negated: bool
    values: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """A parsed SELECT: the columns (None for `*`), the table, the filters and the sort."""

    columns: tuple[str, ...] | None
    table: str
    where: tuple[Condition, ...]
    order_by: tuple[tuple[str, bool], ...]  # (column, descending)


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><>|!=|=|\(|\)|,|\*)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.strip().rstrip(";")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SuiteQLError(f"Invalid search query. Unexpected input near: {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        tokens.append((kind, value))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "name" and token[1].upper() == word:
            self.index += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise SuiteQLError(f"Invalid search query. Expected {word} near token {self.index + 1}")

    def symbol(self, sym: str) -> bool:
        token = self.peek()
        if token and token[0] == "op" and token[1] == sym:
            self.index += 1
            return True
        return False

    def name(self) -> str:
        token = self.peek()
        if not token or token[0] != "name":
            raise SuiteQLError(f"Invalid search query. Expected a column name near token {self.index + 1}")
        self.index += 1
        return token[1].lower()

    def literal(self) -> str:
        token = self.peek()
        if not token or token[0] not in ("string", "number"):
            raise SuiteQLError(f"Invalid search query. Expected a literal near token {self.index + 1}")
        self.index += 1
        return token[1]


_RESERVED = {"FROM", "WHERE", "ORDER", "BY", "AND", "OR", "IN", "NOT", "ASC", "DESC", "SELECT"}


def parse(text: str) -> Query:
    """Parse one SELECT statement of the supported subset."""
    parser = _Parser(text)
    if not parser.keyword("SELECT"):
        raise SuiteQLError("Invalid search query. Only SELECT statements are supported.")
    columns: list[str] | None = []
    if parser.symbol("*"):
        columns = None
    else:
        assert columns is not None
        columns.append(parser.name())
        while parser.symbol(","):
            columns.append(parser.name())
    parser.expect_keyword("FROM")
    table = parser.name()
    where: list[Condition] = []
    if parser.keyword("WHERE"):
        where.append(_condition(parser))
        while parser.keyword("AND"):
            where.append(_condition(parser))
    order_by: list[tuple[str, bool]] = []
    if parser.keyword("ORDER"):
        parser.expect_keyword("BY")
        while True:
            column = parser.name()
            descending = parser.keyword("DESC")
            if not descending:
                parser.keyword("ASC")
            order_by.append((column, descending))
            if not parser.symbol(","):
                break
    if parser.peek() is not None:
        raise SuiteQLError(f"Invalid search query. Unsupported syntax near token {parser.index + 1}")
    for column in [*(columns or []), *(c.column for c in where), *(c for c, _ in order_by)]:
        if column.upper() in _RESERVED:
            raise SuiteQLError(f"Invalid search query. Unexpected keyword {column.upper()}")
    return Query(tuple(columns) if columns is not None else None, table, tuple(where), tuple(order_by))


def _condition(parser: _Parser) -> Condition:
    column = parser.name()
    if parser.symbol("="):
        return Condition(column, False, (parser.literal(),))
    if parser.symbol("<>") or parser.symbol("!="):
        return Condition(column, True, (parser.literal(),))
    negated = parser.keyword("NOT")
    parser.expect_keyword("IN")
    if not parser.symbol("("):
        raise SuiteQLError("Invalid search query. Expected ( after IN")
    values = [parser.literal()]
    while parser.symbol(","):
        values.append(parser.literal())
    if not parser.symbol(")"):
        raise SuiteQLError("Invalid search query. Expected ) to close IN")
    return Condition(column, negated, tuple(values))


def _sort_key(value: str | None) -> tuple[int, Decimal, str]:
    if value is None:
        return (2, Decimal(0), "")
    try:
        return (0, Decimal(value), "")
    except InvalidOperation:
        return (1, Decimal(0), value.lower())


def execute(query: Query, rows: Iterable[Row], known_columns: Iterable[str]) -> list[dict[str, str]]:
    """Run a parsed query over a table's rows; values stay strings and empty columns are left out."""
    known = set(known_columns)
    for column in [*(query.columns or []), *(c.column for c in query.where), *(c for c, _ in query.order_by)]:
        if column not in known:
            raise SuiteQLError(
                "Invalid search query. Detailed unprocessed description follows. Search error occurred: "
                f"Field '{column}' for record '{query.table}' was not found."
            )

    def keep(row: Row) -> bool:
        for condition in query.where:
            value = row.get(condition.column)
            hit = value is not None and any(_same(value, literal) for literal in condition.values)
            if hit == condition.negated:
                return False
        return True

    selected = [row for row in rows if keep(row)]
    for column, descending in reversed(query.order_by):
        selected.sort(key=lambda row, c=column: _sort_key(row.get(c)), reverse=descending)  # type: ignore[misc]
    columns = query.columns or tuple(sorted(known))
    return [{c: str(row[c]) for c in columns if row.get(c) is not None} for row in selected]


def _same(value: str, literal: str) -> bool:
    if value == literal:
        return True
    try:
        return Decimal(value) == Decimal(literal)
    except InvalidOperation:
        return False
