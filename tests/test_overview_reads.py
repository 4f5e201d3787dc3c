"""The overview's reads from indexes and small tables equal the direct computation: the
filters' choices equal the distinct values."""

from __future__ import annotations

import pytest

from schemewatch import store

pytestmark = pytest.mark.both_engines


def test_filter_choices_are_the_distinct_schemes_states_and_districts(conn, empty_conn):
    pairs = [
        tuple(r)
        for r in conn.execute("SELECT DISTINCT state, district FROM beneficiaries ORDER BY 1, 2")
    ]
    schemes = [r[0] for r in conn.execute("SELECT DISTINCT scheme FROM transactions ORDER BY 1")]
    assert len(pairs) > 5 and len(schemes) > 1
    assert store.filter_options(conn) == {
        "schemes": schemes,
        "states": sorted({state for state, _ in pairs}),
        "districts": pairs,
    }
    assert store.filter_options(empty_conn) == {"schemes": [], "states": [], "districts": []}
