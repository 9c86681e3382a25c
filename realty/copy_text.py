"""Delivered rows as PostgreSQL COPY text (``COPY ... FROM STDIN``, text format), fast.

Every value lands exactly as psycopg's ``Copy.write_row`` would write it (the RAW path before):
None is NULL, a string is itself, an int or float is ``str(value)``, a bool is ``t``/``f``, a
dict or list is its ``json.dumps`` text. psycopg formats value by value (about 0.8 s for the
3.6 million values of a 300k-row batch); here orjson writes a chunk of rows as JSON in one call
and a few byte replacements turn that JSON into COPY text (about 0.1 s). That is only exact when
the chunk's JSON is plain, which ``_plain`` checks; any other chunk is formatted value by value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import repeat

import orjson

from realty.data_api import FetchedBatch
from realty.schema import LISTING_COLUMNS

CHUNK_ROWS = 50_000
_WIDTH = len(LISTING_COLUMNS)

# COPY text escapes (the server also reads \b, \f, \v and raw bytes the same way).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COMMA_TO_TAB = bytes.maketrans(b",", b"\t")
# Floats below 1e-4 in magnitude: Python's repr uses an exponent (1e-05), orjson does not always
# (0.00001, 1e-6). Both patterns look behind for a digit or the start of a number, so that text
# inside strings (Sainte-Genevieve) rarely matches; when it does, the chunk is only slower.
_SMALL_FLOAT_EXPONENT = re.compile(rb"e-(?<=[0-9]e-)")
_SMALL_FLOAT_DECIMAL = re.compile(rb"0\.0000(?<=[-,\[]0\.0000)")


def copy_text_chunks(key: str, batch: FetchedBatch) -> Iterator[bytes]:
    """COPY text of the batch's rows (``delivered_rows``) for the columns (batch_key,
    row_index, *LISTING_COLUMNS), in chunks of ``CHUNK_ROWS`` rows."""
    for start in range(0, len(batch.data), CHUNK_ROWS):
        rows = batch.data[start : start + CHUNK_ROWS]
        if not _full_lists(rows):  # objects, short or long rows: shaped as delivered_rows does
            rows = list(replace(batch, data=rows).delivered_rows())
        yield _fast_text(key, start, rows) or _exact_text(key, start, rows)


def _full_lists(rows: list) -> bool:
    return set(map(type, rows)) == {list} and set(map(len, rows)) == {_WIDTH}


def _exact_text(key: str, start: int, rows: list[list]) -> bytes:
    prefix = key.translate(_ESCAPES)
    return "".join(
        f"{prefix}\t{index}\t" + "\t".join(map(_field, row)) + "\n"
        for index, row in enumerate(rows, start)
    ).encode()


def _field(value: object) -> str:
    if value is None:
        return "\\N"
    if type(value) is bool:
        return "t" if value else "f"
    if isinstance(value, dict | list):
        return json.dumps(value).translate(_ESCAPES)
    return str(value).translate(_ESCAPES)


def _fast_text(key: str, start: int, rows: list[list]) -> bytes | None:
    """The chunk through orjson and byte replacements, or None if its JSON is not plain."""
    try:
        document = orjson.dumps(rows)  # [[v,v,...],[v,v,...]]
    except orjson.JSONEncodeError:  # an int beyond 64 bits, or a string that is not UTF-8
        return None
    if not _plain(document, rows):
        return None
    # No string holds a quote, comma, "[", backslash or "null" (see _plain): every quote
    # delimits a string, every comma separates values or rows, every null is a JSON null.
    text = document[1:-1].replace(b"null", b"\\N").translate(_COMMA_TO_TAB, delete=b'"')
    template = key.translate(_ESCAPES).encode().replace(b"%", b"%%") + b"\t%d\t"
    prefixes = map(template.__mod__, range(start, start + len(rows)))
    return b"\n".join(map(bytes.__add__, prefixes, text[1:-1].split(b"]\t["))) + b"\n"


def _plain(document: bytes, rows: list[list]) -> bool:
    """Whether orjson's JSON of ``rows`` holds each value exactly as psycopg would write it."""
    return (
        # no escape sequence: no string holds a quote, backslash, tab, newline or control char
        b"\\" not in document
        # no comma inside a string, no nested list
        and document.count(b",") == _WIDTH * len(rows) - 1
        and document.count(b"[") == len(rows) + 1
        and b"{" not in document
        # booleans are t/f for psycopg
        and b"true" not in document
        and b"false" not in document
        and _SMALL_FLOAT_EXPONENT.search(document) is None
        and _SMALL_FLOAT_DECIMAL.search(document) is None
        # one null per None: no string holds "null", and no NaN or infinity became null
        and document.count(b"null") == sum(map(list.count, rows, repeat(None)))
    )
