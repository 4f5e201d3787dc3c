"""Id hashes: equal text hashes alike whatever column it arrives in (the tail compares hashes of
rows read in different chunks, and each column takes its own path: ids of one length as a matrix
of bytes, columns of few values once per value, anything else byte by byte)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from schemewatch.text_hashes import MISSING, check_hashes, id_hashes

WANTED = ["B00012345", "AC0000012345", "", "PM_KISAN", "é-ünïcode"]


def _columns_holding(values):
    """The values inside columns that take each hashing path."""
    fixed = [f"B{i:08d}" for i in range(5000)]  # one length, all distinct
    mixed = [f"X{i}" for i in range(5000)]  # many lengths, all distinct
    repeated = ["OLD_AGE_PENSION", "PM_KISAN", "MGNREGA"] * 2000  # few distinct values
    return {
        "one length": pd.Series(fixed + values, dtype="string"),
        "many lengths": pd.Series(mixed + values, dtype="string"),
        "few values": pd.Series(repeated + values, dtype="string"),
        "few values with gaps": pd.Series(repeated + [None] * 100 + values, dtype="string"),
        "values alone": pd.Series(values, dtype="string"),
        "arrow slice": pa.array(["zz", None] * 3000 + values, type=pa.large_string()).slice(1),
        "numpy text": np.array(mixed + values),
    }


@pytest.mark.parametrize("hashing", [id_hashes, check_hashes])
def test_equal_text_hashes_alike_in_every_kind_of_column(hashing):
    expected = hashing(pd.Series(WANTED, dtype="string"))
    assert len(set(expected.tolist())) == len(WANTED)
    for name, column in _columns_holding(WANTED).items():
        assert hashing(column)[-len(WANTED) :].tolist() == expected.tolist(), name


def test_missing_values_hash_alike_and_apart_from_empty_text():
    column = pd.Series(["PM_KISAN", None, ""] * 3000, dtype="string")
    hashes = id_hashes(column)
    assert (hashes[1::3] == MISSING).all()
    assert (hashes[2::3] != MISSING).all()
    assert (id_hashes(pd.Series([None] * 10, dtype="string")) == MISSING).all()


def test_the_two_hashes_are_independent():
    values = pd.Series([f"B{i:08d}" for i in range(20000)], dtype="string")
    first, second = id_hashes(values), check_hashes(values)
    assert len(np.unique(first)) == len(np.unique(second)) == len(values)
    assert not np.array_equal(first, second)
