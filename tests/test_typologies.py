"""The lookups that let fraud injection scale linearly give what full scans of every row gave."""

from __future__ import annotations

from dataclasses import fields
from datetime import date

import numpy as np
import pytest

from schemewatch.geography import haversine_km
from schemewatch.population import build_world
from schemewatch.schedule import day_number, normal_payments
from schemewatch.typologies import (
    FreeRows,
    HomesByPeriod,
    Pool,
    Registrar,
    RowsByKey,
    _collusion_candidates,
    enrol_ghosts,
)

END_DAY = day_number(date(2026, 3, 31))


@pytest.fixture(scope="module")
def small_year():
    """A world of 3,000 beneficiaries and its honest year of payments."""
    rng = np.random.default_rng(5)
    world = build_world(rng, 3_000, END_DAY - 365)
    return world, normal_payments(rng, world, END_DAY - 365, END_DAY)


def _pool(payments) -> Pool:
    return Pool(payments, np.ones(len(payments), bool), 0, 1)


def test_nth_free_row_equals_a_scan_while_rows_are_taken_and_given_back():
    rng = np.random.default_rng(1)
    mask = rng.random(5 * FreeRows.BLOCK + 123) < 0.7
    free = FreeRows(mask.copy())
    for _step in range(200):
        rows = rng.integers(0, len(mask), int(rng.integers(1, 40)))
        if rng.random() < 0.5:
            free.take(rows)
            mask[rows] = False
        else:
            free.give_back(rows)
            mask[rows] = True
        expected = np.flatnonzero(mask)
        assert free.count == len(expected)
        assert np.array_equal(free.mask, mask)
        for many in (1, 3, 500):  # a few rows through the counts, many through one scan
            k = rng.integers(0, len(expected), many)
            assert np.array_equal(free.nth(k), expected[k])


def test_the_pools_free_rows_can_only_change_through_the_pool(small_year):
    pool = _pool(small_year[1])
    with pytest.raises(ValueError):
        pool.free[0] = False
    pool.claim(np.array([0, 5]))
    pool.release(np.array([5]))
    assert pool.free_count == len(pool.free) - 1 and not pool.free[0]


def test_pick_draws_what_choosing_among_the_untouched_rows_drew(small_year):
    pool = _pool(small_year[1])
    taken = pool.pick(np.random.default_rng(2), 700)
    free = np.ones(len(pool.free), bool)
    free[taken] = False
    for seed, count in ((3, 1), (4, 5), (5, 40)):
        expected = np.random.default_rng(seed).choice(np.flatnonzero(free), count, replace=False)
        assert np.array_equal(pool.pick(np.random.default_rng(seed), count), np.sort(expected))
        free[expected] = False
    among = np.flatnonzero(free)[::7]
    expected = np.random.default_rng(6).choice(among, 9, replace=False)
    assert np.array_equal(pool.pick(np.random.default_rng(6), 9, among), np.sort(expected))
    assert np.array_equal(pool.free, free & ~np.isin(np.arange(len(free)), expected))


@pytest.mark.parametrize("high", [30, 100_000])  # 16-bit keys are sorted another way
def test_rows_by_key_equal_a_scan(high):
    rng = np.random.default_rng(7)
    keys = rng.integers(0, high, 20_000)
    by_key = RowsByKey(keys)
    for key in (*keys[:50], high + 1, -1):
        assert np.array_equal(by_key.of(key), np.flatnonzero(keys == key))
    some = np.unique(keys[:30])
    assert np.array_equal(by_key.of_each(some), np.flatnonzero(np.isin(keys, some)))
    within = rng.permutation(len(keys))
    reordered = RowsByKey(keys, within=within)
    for key in keys[:20]:
        assert np.array_equal(reordered.of(key), within[keys[within] == key])


def test_collusion_candidates_equal_measuring_every_home(small_year):
    world, payments = small_year
    pool = _pool(payments)
    pool.pick(np.random.default_rng(8), len(payments) // 3)
    homes = HomesByPeriod(world, pool)
    for agent in range(0, len(world.agent_ids), 3):
        for far in (False, True):
            seed = np.flatnonzero(pool.free)[(agent * 7919) % pool.free_count]
            same = np.flatnonzero((pool.period_code == pool.period_code[seed]) & pool.free)
            home = payments.beneficiary[same]
            distance = haversine_km(
                world.home_lat[home],
                world.home_lon[home],
                world.agent_lat[agent],
                world.agent_lon[agent],
            )
            expected = same[(distance > 200) if far else (distance < 150)]
            found = _collusion_candidates(world, pool, homes, agent, far, 200)
            assert np.array_equal(found, expected)


def test_registrar_lookups_equal_scans_as_ghosts_are_enrolled():
    world = build_world(np.random.default_rng(9), 2_000, END_DAY - 365)
    people, enrolments = world.size, len(world.enrolment_scheme)
    registrar = Registrar(world)
    rng = np.random.default_rng(1)
    found_among_ghosts = set()
    for _group in range(12):
        enrol_ghosts(rng, world, int(rng.integers(3, 40)), END_DAY - 100, 5, registrar)
        for operator in range(len(world.operator_ids)):
            theirs = np.flatnonzero(world.operator == operator)
            if len(theirs) and theirs[0] >= people:
                found_among_ghosts.add("operator")
            expected = world.district[theirs[0] if len(theirs) else 0]
            assert registrar.district_of_operator(operator) == expected
        district_of_enrolment = world.district[world.enrolment_beneficiary]
        for district in np.unique(world.district):
            expected = np.flatnonzero(world.district == district)
            assert np.array_equal(registrar.residents(district), expected)
            for scheme in range(5):
                first = np.flatnonzero(
                    (world.enrolment_scheme == scheme) & (district_of_enrolment == district)
                )
                if len(first) and first[0] >= enrolments:
                    found_among_ghosts.add("enrolment")
                assert registrar.first_enrolment(district, scheme) == (
                    first[0] if len(first) else None
                )
    # The lookups were also answered from the ghosts added since the registrar was built.
    assert found_among_ghosts == {"operator", "enrolment"}


def test_ghosts_enrolled_through_one_registrar_equal_ghosts_enrolled_one_group_at_a_time():
    worlds = [build_world(np.random.default_rng(11), 1_500, END_DAY - 365) for _ in range(2)]
    registrar = Registrar(worlds[0])
    rngs = [np.random.default_rng(12), np.random.default_rng(12)]
    for size in (3, 60, 17, 250, 8):
        enrol_ghosts(rngs[0], worlds[0], size, END_DAY - 90, 4, registrar)
        enrol_ghosts(rngs[1], worlds[1], size, END_DAY - 90, 4)
    for field in fields(worlds[0]):
        ours, theirs = getattr(worlds[0], field.name), getattr(worlds[1], field.name)
        if isinstance(ours, np.ndarray):
            assert ours.dtype == theirs.dtype, field.name
            assert np.array_equal(ours, theirs), field.name
    assert worlds[0].account_ids == worlds[1].account_ids
