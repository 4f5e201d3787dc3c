"""The fixed serialisations behind the tamper-evident trail, and their SHA-256 hashes.

Chained rows (audit entries, case events): `hash = SHA-256(previous_hash + "\\n" + canonical)`
where `canonical` is the JSON array of the row's columns (audit_log: entry_id, at, actor, action,
target, old_value, new_value, details; case_events: event_id, transaction_id, version,
claimed_by, disposition, disposition_role, note, updated_by, updated_at) in UTF-8 without spaces
(`json.dumps(values, ensure_ascii=False, separators=(",", ":"))`): integers as integers, reals as
Python's shortest round-trip repr, text as JSON strings, NULL as `null`. The first row chains
from GENESIS.

Transaction batches: `hash = SHA-256(previous_hash + "\\n" + header + "\\n" + chunks)` where
`header` is the JSON array [batch_id, first_id, last_id, row_count, sealed_at] and the rows, in
transaction_id order, are cut into chunks of CHUNK_ROWS; each chunk is written column by column in
TRANSACTION_COLUMNS order: integer columns as little-endian signed 64-bit, real columns as
little-endian IEEE 754 doubles; a text column as the 8-byte little-endian length of what follows,
then `N` (all NULL), or `T` + the UTF-8 values joined by NUL (no NULL), or `M` + one byte per
row (1 = NULL) + the values joined by NUL, NULL as empty (some NULL), or `J` + the canonical JSON
array (a value itself holds NUL). Column-wise packing is what keeps sealing a million rows cheap.

Values are first normalised to what SQLite stores under each column's affinity, so the hash taken
from the tuples being inserted equals the hash of the rows read back.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from collections.abc import Sequence
from itertools import repeat
from operator import is_

GENESIS = "0" * 64
CHUNK_ROWS = 65_536

INTEGER, REAL, TEXT = "integer", "real", "text"


def canonical_json(values: Sequence) -> str:
    """The fixed JSON form of one row's values."""
    # default=repr: a value of a type we never store (e.g. a blob put in by hand) still hashes,
    # to something that matches nothing, instead of stopping verification.
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"), default=repr)


def chain_hash(previous_hash: str, values: Sequence) -> str:
    """SHA-256 of the previous hash and one row's canonical form."""
    text = f"{previous_hash}\n{canonical_json(values)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _as_integer(value):
    if type(value) is int:
        return value
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _as_real(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _as_text(value):
    if value is None or type(value) is str:
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected text, got {value!r}")


_NORMALISE = {INTEGER: _as_integer, REAL: _as_real, TEXT: _as_text}


def normalise(kinds: Sequence[str], values: Sequence) -> tuple:
    """One row's values as SQLite stores them under each column's affinity."""
    return tuple(_NORMALISE[kind](value) for kind, value in zip(kinds, values, strict=True))


def _packed_text(column: Sequence) -> bytes:
    nulls = column.count(None)
    if nulls == len(column):
        body = b"N"
    else:
        values = ["" if value is None else value for value in column] if nulls else column
        try:
            joined = "\x00".join(values)
        except TypeError:  # numbers given for a text column: SQLite stores them as text
            values = ["" if value is None else _as_text(value) for value in column]
            joined = "\x00".join(values)
        if joined.count("\x00") != len(values) - 1:  # a value holds NUL itself
            body = b"J" + canonical_json([_as_text(value) for value in column]).encode("utf-8")
        elif nulls:
            body = b"M" + bytes(map(is_, column, repeat(None))) + joined.encode("utf-8")
        else:
            body = b"T" + joined.encode("utf-8")
    return len(body).to_bytes(8, "little") + body


def _packed(kind: str, column: Sequence) -> bytes:
    if kind == TEXT:
        return _packed_text(column)
    try:  # array() takes exactly what SQLite's affinity stores unchanged (ints only for 'q')
        packed = array("q" if kind == INTEGER else "d", column)
    except TypeError:
        packed = array("q" if kind == INTEGER else "d", map(_NORMALISE[kind], column))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def batch_hasher(previous_hash: str, header: Sequence):
    """A SHA-256 fed with the previous hash and a batch's header; add chunks with add_chunk()."""
    digest = hashlib.sha256()
    digest.update(f"{previous_hash}\n{canonical_json(header)}\n".encode())
    return digest


def add_chunk(digest, kinds: Sequence[str], columns: Sequence[Sequence]) -> None:
    """Feed one chunk (at most CHUNK_ROWS rows, as normalised columns) into a batch hash."""
    for kind, column in zip(kinds, columns, strict=True):
        digest.update(_packed(kind, column))
