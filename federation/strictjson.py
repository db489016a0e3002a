"""Strict JSON reading for everything that comes over the wire.

Python's `json` module quietly accepts duplicate keys (last one wins), `NaN` and `Infinity`,
and lone surrogates; two readers of the same bytes could then disagree about what was said.
Here any of those is an error, the bytes must be UTF-8, and numbers must be integers within
±(2^53−1), which every JSON reader holds exactly (the protocol has no floats: RFC 8785
§3.2.2.3 pitfalls). Each field's own rule then narrows its range: every number in an entry
is within 0..2^53−1 (seq, v, version, hop_limit are checked where they are read).
"""

import json
import re
from typing import Any

from .errors import MalformedError

MAX_DEPTH = 32
INT_LIMIT = 2**53 - 1
# Lone surrogates can only come from \\u escapes (the text itself was decoded from UTF-8), so
# text without an escape of that range needs no search for them. A match may be a false alarm
# (an escaped backslash before "ud800"); it only means the slower, complete check runs.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)  # in C; only an object with a duplicate comes out shorter
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise MalformedError(f"{name} is not JSON")


def _no_float(text: str) -> Any:
    raise MalformedError("numbers must be whole (no fractions or exponents)")


def _out_of_range() -> MalformedError:
    return MalformedError("number out of the interoperable range")


def _check_depth(container: dict | list, depth: int = 0) -> None:
    """No value nested deeper than MAX_DEPTH below the top one (at depth 0), and every
    integer within ±INT_LIMIT (checked here, in the walk made anyway, rather than by a call
    for each number as it is parsed)."""
    children = container.values() if type(container) is dict else container
    if children and depth >= MAX_DEPTH:
        raise MalformedError("JSON nested too deeply")
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            _check_depth(child, depth + 1)
        elif kind is int and not -INT_LIMIT <= child <= INT_LIMIT:
            raise _out_of_range()


def _check(value: Any, depth: int = 0) -> None:
    """Every rule at once, value by value: for text that may hold lone surrogates."""
    if depth > MAX_DEPTH:
        raise MalformedError("JSON nested too deeply")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedError("text holds a lone surrogate") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -INT_LIMIT <= value <= INT_LIMIT:
            raise _out_of_range()
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth + 1)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity, floats, lone surrogates, deep nesting."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("the body is not UTF-8") from None
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_float=_no_float)  # fmt: skip
    except json.JSONDecodeError as error:
        raise MalformedError(f"not valid JSON: {error.msg} at line {error.lineno}") from None
    except RecursionError:
        raise MalformedError("JSON nested too deeply") from None
    except ValueError as error:  # e.g. an integer with more digits than Python will convert
        raise MalformedError(f"not acceptable JSON: {error}") from None
    if _SURROGATE_ESCAPE.search(data) is not None:
        _check(value)
    elif type(value) is dict or type(value) is list:
        _check_depth(value)
    elif type(value) is int and not -INT_LIMIT <= value <= INT_LIMIT:
        raise _out_of_range()
    return value
