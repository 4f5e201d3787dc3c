"""64-bit hashes of id text, computed with numpy on Arrow's buffers.

The history's tail keeps them beside its rows and the registry looks people up by them, so
finding rows compares integers, not strings (at 10 million rows the string comparisons cost more
than the features, and a lookup table of 2 million id strings held ~300 MB of Python strings).
Equal text has equal hashes; users check equality of the text (or a second, independent hash)
wherever a collision would change a result.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STEP = np.uint64(0x100000001B3)  # the polynomial's base (odd)
MISSING = np.uint64(0x5555)  # the hash of a missing value


def _mix(z: np.ndarray) -> np.ndarray:
    """Spread a 64-bit value's bits over all of it (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def arrow_text(column) -> pa.LargeStringArray:
    """Text (a pandas column or array, or a numpy array of str) as one Arrow array (taking rows
    from one array is much faster than from the chunks a concatenated frame holds)."""
    if isinstance(column, pa.LargeStringArray):
        return column
    array = pa.array(column, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def id_hashes(column) -> np.ndarray:
    """A 64-bit hash of each value of a text column (missing values all hash alike).

    Computed on Arrow's buffers with numpy (pandas' own hashing turns every value into a Python
    string first: about ten times slower). Equal text, equal hash; different text may collide.
    """
    return _polynomial_hashes(column, STEP, np.uint64(0x9E3779B97F4A7C15))


def check_hashes(column) -> np.ndarray:
    """A second, independent 64-bit hash: two ids with equal `id_hashes` but different check
    hashes collided; ids equal in both are taken as equal (about one chance in 10^25 otherwise
    among ten million ids, far below a memory error)."""
    return _polynomial_hashes(column, np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _polynomial_hashes(column, step: np.uint64, salt: np.uint64) -> np.ndarray:
    """Sum of byte x step^position, mod 2^64, with the length and mixed (splitmix64).

    A column of few distinct values (schemes, periods, channels) is hashed once per value; ids
    of one length (the usual case) a block of rows at a time as a matrix of bytes.
    """
    array = arrow_text(column)
    if not len(array):
        return np.zeros(0, np.uint64)
    if _few_distinct(array):
        return _hashes_of_distinct(array, step, salt)
    sums, lengths = _byte_sums(array, step)
    with np.errstate(over="ignore"):
        hashes = _mix(sums ^ lengths.astype(np.uint64) * salt)
    if array.null_count:
        hashes[~np.asarray(array.is_valid())] = MISSING
    return hashes


SAMPLE_ROWS = 4096  # rows looked at to tell a column of few distinct values
BLOCK_ROWS = 1 << 18  # rows of one length hashed at a time (bounds the matrix of bytes)


def _few_distinct(array: pa.LargeStringArray) -> bool:
    """Whether the first rows hold at most a quarter as many distinct values as rows."""
    sample = array.slice(0, SAMPLE_ROWS)
    return len(sample) >= 64 and 4 * len(pc.unique(sample)) <= len(sample)


def _hashes_of_distinct(array: pa.LargeStringArray, step: np.uint64, salt: np.uint64):
    """Hash each distinct value once (Arrow's dictionary encoding), then spread to the rows."""
    encoded = pc.dictionary_encode(array)
    distinct = _polynomial_hashes(encoded.dictionary, step, salt)
    indices = encoded.indices
    if not indices.null_count:
        return distinct[indices.to_numpy()]
    hashes = np.full(len(array), MISSING, np.uint64)
    hashes[np.asarray(indices.is_valid())] = distinct[indices.drop_null().to_numpy()]
    return hashes


def _byte_sums(array: pa.LargeStringArray, step: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sum of byte x step^position (mod 2^64), and the row's length in bytes."""
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64)[array.offset : array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    sums = np.zeros(len(array), np.uint64)
    filled = lengths > 0
    if not filled.any():
        return sums, lengths
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
    longest = int(lengths.max())
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.r_[np.uint64(1), np.full(longest - 1, step)], dtype=np.uint64)
        if (lengths[filled] == longest).all():
            # Every non-empty row has the same length: its bytes are a matrix, one row each
            # (unsigned integer matrix products wrap around, as the sum does).
            matrix = data.reshape(-1, longest)
            rows = np.flatnonzero(filled)
            for start in range(0, len(rows), BLOCK_ROWS):
                block = slice(start, start + BLOCK_ROWS)
                sums[rows[block]] = matrix[block].astype(np.uint64) @ powers
        else:
            starts = offsets[:-1] - offsets[0]
            position = np.arange(len(data)) - np.repeat(starts, lengths)
            terms = data.astype(np.uint64) * powers[position]
            sums[filled] = np.add.reduceat(terms, starts[filled])
    return sums, lengths


def pair(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(first * np.uint64(0x9E3779B97F4A7C15) ^ second)
