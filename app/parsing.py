"""Numbers and JSON bodies from requests, parsed in one place.

An id or count from a URL, a form, a query string or a cursor is ASCII digits whose value fits
the database's integer columns; anything else is not a number here. `str.isdigit()` and `int()`
disagree with that: `"²".isdigit()` is True but `int("²")` fails, `int("١")` is 1, and a value
too big for the column makes SQLite raise OverflowError (past 2**63 - 1) and PostgreSQL a
DataError (the id columns are `Integer`, 32 bits there: past 2**31 - 1).
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.routing import IntegerConverter, Map, ValidationError

INT64_MAX = 2**63 - 1
# The largest id any row can have: id columns are Integer, which is 32 bits on PostgreSQL.
ID_MAX = 2**31 - 1
# At most 19 ASCII digits (INT64_MAX has 19), so int() never meets a huge string.
_DIGITS = re.compile(r"[0-9]{1,19}")
# How deeply a JSON body may nest; a job request nests two levels (the body, its options).
MAX_JSON_DEPTH = 16


def parse_whole_number(raw: Any, maximum: int = INT64_MAX) -> int | None:
    """`raw` as an int when it is a string of ASCII digits from 0 to `maximum`, else None.
    No sign, no spaces, no Unicode digits (callers strip what they mean to allow)."""
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= maximum else None


def parse_id(raw: Any) -> int | None:
    """A row id (ASCII digits from 0 to ID_MAX), or None."""
    return parse_whole_number(raw, ID_MAX)


def digits_up_to(limit: int) -> str:
    """A regular expression matching exactly the ASCII numbers from 0 to `limit` (with leading
    zeros up to the length of `limit`)."""
    text = str(limit)
    options = [f"[0-9]{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for position, digit in enumerate(text):
        if digit != "0":
            rest = len(text) - position - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{text[:position]}[0-{int(digit) - 1}]{tail}")
    options.append(text)
    return "(?:" + "|".join(options) + ")"


class IdConverter(IntegerConverter):
    """`<int:...>` in every route: ASCII digits up to ID_MAX, else the route does not match
    (404). Registered in place of werkzeug's own `int`, whose `\\d+` also matches Unicode digits
    and which has no upper bound. The bound is in the regular expression itself: a value the
    converter refused after matching would make werkzeug answer 405 where another method's
    route has the same path."""

    regex = digits_up_to(ID_MAX)

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = ID_MAX,
        signed: bool = False,
    ) -> None:
        if signed:
            raise ValueError("ids are never negative: use another converter for signed numbers")
        super().__init__(map, fixed_digits, min, max if max is not None else ID_MAX)

    def to_python(self, value: str) -> int:
        if parse_id(value) is None:
            raise ValidationError()
        return super().to_python(value)


def json_problem(value: Any) -> str | None:
    """Why a parsed JSON body cannot be used (it nests more than MAX_JSON_DEPTH levels, or a
    string in it holds a lone surrogate such as "\\ud800", which no UTF-8 database or page can
    store), or None. Walks the value without recursion."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                return f"The JSON body nests more than {MAX_JSON_DEPTH} levels deep."
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                return f"The JSON body nests more than {MAX_JSON_DEPTH} levels deep."
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and not _is_utf8(item):
            return "The JSON body holds a lone surrogate (such as \\ud800): send Unicode text."
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
