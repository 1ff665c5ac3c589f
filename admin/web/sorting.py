"""Sortable tables: the one home for a table's sort keys, read from the query string.

A table declares its columns once, as a `Table` of `Column`s (the URL word, and the value a row
sorts by). A page asks the table for the visitor's `Order` (``?sort=<key>&dir=asc|desc``, read
through admin.web.limits.query_args like every other query argument; an unknown key or direction
is the table's default, as an unknown filter is no filter), sorts its rows with
``order.apply(rows)``, and hands `order` to the template, whose header cells come from the
``sort_th`` macro of templates/_sort.html: a link that sorts by that column (or turns the
direction round when it is the current one), ``aria-sort`` on the current column, and the other
query arguments (filters) kept.

Sorting is stable (rows that tie keep the order they came in, so the query's own order is the
tie-breaker) and a row without a value (no score yet, never probed) sorts last in both
directions. Names sort as people read them (`natural`: ftp2 before ftp10, de9 before de10).

Using it for a new table::

    PEOPLE = sorting.Table((
        sorting.Column("name", lambda r: sorting.natural(r.name)),
        sorting.Column("age", lambda r: r.age_s, first="desc"),     # oldest first on one click
    ), default="name")

    order = PEOPLE.order(request)                # in the handler
    rows = order.apply(rows)
    render(..., order=order)

    {% from "_sort.html" import sort_th %}       {# in the template #}
    <th {{ sort_th(order, "name") }}>…</th>  — see _sort.html for the exact call
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from admin.web.limits import query_args

ASC, DESC = "asc", "desc"
DROPPED_ARGS = ("sort", "dir", "done")     # never carried into a sort link (done: a flash)
_DIGITS = re.compile(r"(\d+)")


def natural(text: str | None) -> tuple:
    """A sort key that orders the numbers inside a name by value, label by label: ftp2 < ftp10,
    ftp.example.org < ftp1.example.org, and case does not matter (the text itself breaks ties,
    so the order is total)."""
    s = text or ""
    labels = tuple(_label(part) for part in s.casefold().split("."))
    return labels, s


def _label(part: str) -> tuple:
    pieces = _DIGITS.split(part)
    # even places hold text, odd places digits: tuples of this shape compare safely
    return tuple(int(p) if i % 2 else p for i, p in enumerate(pieces))


@dataclass(frozen=True)
class Column:
    """One sortable column: `key` is the URL word; `value(row)` what the row sorts by (None:
    sorts last); `first` the direction a first click sorts in (desc for scores and ages)."""

    key: str
    value: Callable[[Any], Any]
    first: str = ASC


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    default: str
    default_dir: str = ""                  # "" = the default column's `first`

    def __post_init__(self):
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys) or self.default not in keys:
            raise ValueError(f"sort keys {keys} with default {self.default!r}")

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)

    def order(self, request) -> Order:
        """The visitor's order from ``?sort=&dir=`` (anything else: the default)."""
        args = query_args(request)
        key = _arg(args, "sort")
        col = self.column(key) or self.column(self.default)
        direction = _arg(args, "dir")
        if direction not in (ASC, DESC):
            direction = (self.default_dir if col.key == self.default and self.default_dir
                         else col.first)
        keep = []
        for k, vals in args.items():
            try:
                name = k.decode("utf-8")
                if name not in DROPPED_ARGS:
                    keep.extend((name, v.decode("utf-8")) for v in vals)
            except UnicodeDecodeError:
                continue
        path = (getattr(request, "path", b"") or b"").decode("utf-8", "replace")
        return Order(self, col.key, direction, path, tuple(keep))

    def default_order(self, path: str = "") -> Order:
        col = self.column(self.default)
        return Order(self, col.key, self.default_dir or col.first, path, ())


def _arg(args: dict, name: str) -> str:
    vals = args.get(name.encode())
    try:
        return vals[0].decode("ascii") if vals else ""
    except UnicodeDecodeError:
        return ""


@dataclass(frozen=True)
class Order:
    """The order a page is shown in: which column, which way, and how to link to another."""

    table: Table
    key: str
    direction: str
    path: str = ""
    keep: tuple[tuple[str, str], ...] = ()     # the other query arguments, for the links

    @property
    def desc(self) -> bool:
        return self.direction == DESC

    @property
    def is_default(self) -> bool:
        return self.key == self.table.default

    def apply(self, rows: Iterable) -> list:
        """The rows in this order: stable, rows without a value last either way."""
        value = self.table.column(self.key).value
        keyed = [(value(r), r) for r in rows]
        known = [(v, r) for v, r in keyed if v is not None]
        known.sort(key=lambda vr: vr[0], reverse=self.desc)     # reverse keeps ties in order
        return [r for _v, r in known] + [r for v, r in keyed if v is None]

    def aria(self, key: str) -> str:
        """aria-sort for that column's header: only the current column has one."""
        if key != self.key:
            return ""
        return "descending" if self.desc else "ascending"

    def next_direction(self, key: str) -> str:
        if key == self.key:
            return ASC if self.desc else DESC
        return self.table.column(key).first

    def href(self, key: str) -> str:
        """The link that sorts by `key` (the other way round if it is the current column),
        keeping the page's other query arguments."""
        if self.table.column(key) is None:
            raise KeyError(f"no sort column {key!r}")
        q = [*self.keep, ("sort", key), ("dir", self.next_direction(key))]
        return f"{self.path}?{urlencode(q)}"

    def label(self, key: str) -> str:
        """What a screen reader says the link does."""
        return "sort descending" if self.next_direction(key) == DESC else "sort ascending"


def sort_rows(table: Table, rows: Sequence, request) -> tuple[list, Order]:
    """Shorthand: (rows in the visitor's order, that order)."""
    order = table.order(request)
    return order.apply(rows), order
