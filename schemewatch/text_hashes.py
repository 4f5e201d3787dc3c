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
    """Sum of byte x step^position, mod 2^64, with the length and mixed (splitmix64)."""
    array = arrow_text(column)
    if not len(array):
        return np.zeros(0, np.uint64)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64)[array.offset : array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0]
    sums = np.zeros(len(array), np.uint64)
    filled = lengths > 0
    if filled.any():
        data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
        with np.errstate(over="ignore"):
            powers = np.cumprod(
                np.r_[np.uint64(1), np.full(int(lengths.max()) - 1, step)], dtype=np.uint64
            )
            position = np.arange(len(data)) - np.repeat(starts, lengths)
            terms = data.astype(np.uint64) * powers[position]
            sums[filled] = np.add.reduceat(terms, starts[filled])
    with np.errstate(over="ignore"):
        hashes = _mix(sums ^ lengths.astype(np.uint64) * salt)
    if array.null_count:
        hashes[~np.asarray(array.is_valid())] = MISSING
    return hashes


def pair(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(first * np.uint64(0x9E3779B97F4A7C15) ^ second)
