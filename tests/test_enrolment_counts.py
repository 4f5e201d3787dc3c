"""The registry's counts from one read equal the store's per-beneficiary query."""

import pandas as pd
import pytest

from schemewatch import enrolment_counts, features, modeling, store


def _by_query(conn) -> pd.DataFrame:
    rows = store.registry_context(conn)
    return pd.DataFrame(rows, columns=list(features.REGISTRY_COLUMNS)).set_index("beneficiary_id")


def _by_sorting(conn) -> pd.DataFrame:
    records = store.beneficiary_records(conn)
    counts = enrolment_counts.registry_counts(records)
    return counts.set_index(records["beneficiary_id"])


@pytest.mark.both_engines
def test_counts_equal_the_per_beneficiary_query_on_a_generated_registry(conn):
    expected, got = _by_query(conn), _by_sorting(conn)
    assert len(got) == len(expected) > 1000
    for column in enrolment_counts.COUNT_COLUMNS:
        assert (got[column] == expected.loc[got.index, column]).all(), column
    # The generated registry has shared phones, camps and homes far apart: the counts vary.
    assert expected["phone_sharers_at_other_homes"].max() > 1
    assert expected["operator_enrolments_same_days"].max() > 1


def _person(number, latitude, longitude, phone, operator, enrolled_on):
    return (
        f"B{number:05d}",
        "Bihar",
        "Patna",
        latitude,
        longitude,
        None,
        None,
        phone,
        operator,
        enrolled_on,
        "active",
        None,
        0.0,
    )


EDGE_CASES = [
    # One phone, five people: three at one home (within 0.01 degrees), one 0.02 degrees north,
    # one at the same latitude far east; enrolments by one operator 30 and 31 days apart.
    _person(1, 25.60, 85.10, "p1", "op1", "2025-01-01"),
    _person(2, 25.605, 85.10, "p1", "op1", "2025-01-31"),
    _person(3, 25.62, 85.10, "p1", "op1", "2025-02-01"),
    _person(4, 25.60, 86.00, "p1", "op2", "2025-01-02"),
    # Unknown phone, operator or date: they count 0 (and are not counted by others).
    _person(5, 25.60, 85.10, None, "op1", "2025-01-01"),
    _person(6, 25.60, 85.10, "p1", None, "2025-01-01"),
    _person(7, 25.60, 85.10, "p2", "op1", None),
    _person(8, 25.60, 85.10, "p2", "import", None),
    # An operator's camp: same day, the day after, two days after.
    _person(9, 20.00, 80.00, "p3", "op3", "2025-03-10"),
    _person(10, 20.00, 80.00, "p4", "op3", "2025-03-11"),
    _person(11, 20.00, 80.00, "p5", "op3", "2025-03-12"),
    # A household of one.
    _person(12, 21.00, 81.00, "p6", "op4", "2025-04-01"),
]


@pytest.mark.parametrize("pairs_at_once", [1, 3, enrolment_counts.PAIRS_AT_ONCE])
def test_counts_equal_the_query_on_edge_cases_whatever_the_step(
    empty_conn, monkeypatch, pairs_at_once
):
    store.insert_beneficiaries(empty_conn, EDGE_CASES)
    empty_conn.commit()
    monkeypatch.setattr(enrolment_counts, "PAIRS_AT_ONCE", pairs_at_once)
    expected, got = _by_query(empty_conn), _by_sorting(empty_conn)
    for column in enrolment_counts.COUNT_COLUMNS:
        assert got[column].to_dict() == expected[column].to_dict(), column
    assert got.loc["B00001"].tolist() == [5, 2, 2, 2]  # phone p1: 1, 2, 3, 4 and 6
    assert got.loc["B00005"].tolist() == [0, 0, 0, 2]
    assert got.loc["B00012"].tolist() == [1, 0, 1, 1]


def test_the_whole_registry_and_a_few_beneficiaries_load_the_same_context(conn):
    everyone = modeling.load_registry(conn).beneficiaries
    some = everyone.index[::97].tolist()
    few = modeling.load_registry(conn, some).beneficiaries
    pd.testing.assert_frame_equal(everyone.loc[some], few.loc[some])
