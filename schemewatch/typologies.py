"""Fraud typologies injected into honest payments, each row labelled with typology and group.

Every injector takes honest payments it may use (`Pool`), a row budget, and returns a `Injection`:
which pool rows it consumed (they are replaced) and the labelled rows it produced. Except for
over-entitlement, amounts stay those of honest instalments: only behaviour gives the fraud away.

Each typology is a family, not a point: every group draws its own size, pace, distance or span
from a wide range (see `FAMILIES`), so a detector that only recognised one setting would miss most
of the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from schemewatch import schemes
from schemewatch.geography import EARTH_RADIUS_KM, haversine_km, scatter_on_land
from schemewatch.payments import TYPOLOGIES, Payments
from schemewatch.population import World, phone_hashes
from schemewatch.schedule import AEPS, normal_payments

MINUTE, HOUR, DAY = 60, 3600, schemes.DAY
OFF_CYCLE_MARGIN = 20 * DAY  # off-cycle payments fall at least this far outside their window
OFF_CYCLE_REACH = 365 * DAY  # and at most about this far from it (the generator's year)

# The range each family's parameters are drawn from (log-uniformly where they span decades).
FAMILIES = {
    "over_entitlement": {"times_entitlement": (1.2, 6.0)},
    "duplicate_instalment": {"seconds_apart": (10 * MINUTE, 42 * DAY)},
    "burst": {"payments": (3, 15), "seconds_spanned": (5 * MINUTE, DAY)},
    "shared_account_ring": {
        "members": (3, 60),
        "seconds_spanned": (10 * MINUTE, 28 * DAY),  # a sweep of each member's next payment
        "days_flowing": (14, 180),  # or every payment for weeks to months
    },
    "agent_collusion": {"payouts": (5, 40), "seconds_apart": (10, 2 * MINUTE), "far_km": 200},
    "payment_after_death": {"days_dead_before": (10, 150)},
    "geo_mismatch": {"km_from_home": (300, 1500)},
    "ghost_beneficiary": {"ghosts": (3, 60), "enrolment_days": (1, 30), "months_paid": (1, 6)},
}


def log_uniform(rng, low: float, high: float, size=None):
    """Values spread evenly over orders of magnitude between low and high."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def count_between(rng, low: int, high: int) -> int:
    """A whole number in [low, high], small ones as likely per decade as large ones."""
    return int(np.floor(log_uniform(rng, low, high + 1)))


class FreeRows:
    """Which rows are still untouched, and the k-th untouched row without scanning them all.

    Injectors pick a few random rows at a time from millions, many times over; a scan of every
    row per pick made injection quadratic in the size of the year. Untouched rows are counted per
    block of BLOCK rows instead, so finding the k-th costs a look at the counts and one block.
    """

    BLOCK = 4096

    def __init__(self, free: np.ndarray):
        self._free = free
        self.mask = free.view()
        # Read-only: a row changed behind the counts' back would make them wrong.
        self.mask.flags.writeable = False
        blocks = -(-len(free) // self.BLOCK)
        self._per_block = np.bincount(np.flatnonzero(free) // self.BLOCK, minlength=blocks)
        self.count = int(self._per_block.sum())

    def nth(self, k: np.ndarray) -> np.ndarray:
        """The k-th untouched rows (0-based, in row order), equal to np.flatnonzero(mask)[k]."""
        k = np.asarray(k, np.int64)
        if len(k) * 16 > len(self._per_block):  # one scan is cheaper for many rows at once
            return np.flatnonzero(self._free)[k]
        ends = np.cumsum(self._per_block)
        block = np.searchsorted(ends, k, side="right")
        rank = k - (ends[block] - self._per_block[block])  # among the block's untouched rows
        starts = block * self.BLOCK
        return np.array(
            [
                start + np.flatnonzero(self._free[start : start + self.BLOCK])[r]
                for start, r in zip(starts.tolist(), rank.tolist(), strict=True)
            ],
            np.int64,
        )

    def take(self, rows: np.ndarray) -> None:
        """Mark untouched rows as used."""
        self._set(rows, False)

    def give_back(self, rows: np.ndarray) -> None:
        """Mark used rows as untouched again."""
        self._set(rows, True)

    def _set(self, rows: np.ndarray, free: bool) -> None:
        rows = np.unique(rows[self._free[rows] != free])
        self._free[rows] = free
        np.add.at(self._per_block, rows // self.BLOCK, 1 if free else -1)
        self.count += len(rows) if free else -len(rows)


class RowsByKey:
    """Row indexes grouped by a key (beneficiary, district, scheme and period), from one sort.

    Finding a key's rows by comparing every row with it, once per group of fraud, made the
    injectors quadratic in the size of the year.
    """

    def __init__(self, keys: np.ndarray, within: np.ndarray | None = None):
        """`within`: every row index, in the order wanted inside a key (default: ascending)."""
        small = len(keys) > 0 and keys.min() >= -(2**15) and keys.max() < 2**15
        # Stable sorts of 16-bit keys are radix sorts: linear, several times faster.
        sortable = keys.astype(np.int16) if small else keys
        self.order = row_numbers(
            np.argsort(sortable, kind="stable")
            if within is None
            else within[np.argsort(sortable[within], kind="stable")]
        )
        ordered = sortable[self.order]  # runs of equal keys, 16-bit when they fit
        self._starts = np.flatnonzero(_run_starts(ordered))
        self._ends = np.r_[self._starts[1:], len(ordered)].astype(np.int64)
        self._keys = keys[self.order[self._starts]]

    def of(self, key) -> np.ndarray:
        """The rows of one key (a view into `order`: not to be changed)."""
        at = int(np.searchsorted(self._keys, key))
        if at == len(self._keys) or self._keys[at] != key:
            return self.order[:0]
        return self.order[self._starts[at] : self._ends[at]]

    def of_each(self, keys: np.ndarray) -> np.ndarray:
        """The rows of several keys, ascending."""
        parts = [self.of(key) for key in keys]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def row_numbers(positions: np.ndarray) -> np.ndarray:
    """Row positions as int32 when every row of the year can be numbered so (half the room of
    int64: a lookup over a year of 10 million payments is 56 MB instead of 112)."""
    return positions.astype(np.int32, copy=False) if len(positions) < 2**31 else positions


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins (a mask), in values that are grouped."""
    starts = np.ones(len(values), bool)
    starts[1:] = values[1:] != values[:-1]
    return starts


@dataclass
class Pool:
    """Honest payments an injector may draw on, and which are still untouched.

    `free` is read-only: rows are taken with `pick` or `claim` and given back with `release`, so
    that the counts behind `nth_free` stay right.
    """

    payments: Payments
    free: np.ndarray  # bool
    start: int  # unix seconds: injected payments stay inside [start, end)
    end: int
    next_group: int = 1

    def __post_init__(self):
        self._free_rows = FreeRows(self.free)
        self.free = self._free_rows.mask

    @property
    def free_count(self) -> int:
        """How many rows are still untouched."""
        return self._free_rows.count

    def nth_free(self, k: int) -> int:
        """The k-th untouched row (0-based, in row order)."""
        return int(self._free_rows.nth(np.array([k]))[0])

    def pick(self, rng, count: int, among: np.ndarray | None = None) -> np.ndarray:
        """Up to `count` random untouched rows, marked as used.

        `among` restricts the choice to some untouched rows (ascending). The draw depends only on
        how many rows there are to choose from, as `rng.choice` of the rows themselves would.
        """
        available = self.free_count if among is None else len(among)
        drawn = rng.choice(available, size=min(count, available), replace=False)
        chosen = self._free_rows.nth(drawn) if among is None else among[drawn]
        self._free_rows.take(chosen)
        return np.sort(chosen)

    def claim(self, index: np.ndarray) -> np.ndarray:
        """Mark specific rows as used; returns those that were untouched."""
        index = index[self.free[index]]
        self._free_rows.take(index)
        return index

    def release(self, index: np.ndarray) -> None:
        """Give rows back untouched (a group that could not be formed)."""
        self._free_rows.give_back(index)

    @cached_property
    def rows_by_beneficiary(self) -> RowsByKey:
        """Every row, grouped by beneficiary."""
        return RowsByKey(self.payments.beneficiary)

    @cached_property
    def period_code(self) -> np.ndarray:
        """Scheme and period as one integer per row (object comparisons are slow).

        Only equality matters; numbering the periods through a dict avoids string copies of every
        row (about a gigabyte of temporaries at 3 million rows).
        """
        numbers: dict = {}
        # The array itself is walked: a list of every row's period would be 112 MB at 10
        # million payments. A few hundred periods make codes far below 2**31.
        period = np.fromiter(
            (numbers.setdefault(p, len(numbers)) for p in self.payments.period),
            np.int32,
            len(self.payments.period),
        )
        code = self.payments.scheme.astype(np.int32) * (int(period.max(initial=0)) + 1)
        code += period
        return code

    def new_groups(self, count: int = 1) -> np.ndarray:
        """Fresh group ids."""
        groups = np.arange(self.next_group, self.next_group + count)
        self.next_group += count
        return groups


@dataclass
class Injection:
    """Pool rows replaced (consumed) and the labelled rows that take their place or add to them."""

    consumed: np.ndarray
    rows: Payments


def _replace(pool: Pool, index: np.ndarray, typology: str, groups) -> tuple[Payments, Injection]:
    rows = pool.payments.take(index)
    rows.mark(typology, groups)
    return rows, Injection(index, rows)


def _added(rows: Payments, typology: str, groups) -> Injection:
    rows.mark(typology, groups)
    return Injection(np.empty(0, np.int64), rows)


def _replace_each(rng, world, pool: Pool, budget: int, typology: str, alter) -> Injection:
    """Replace `budget` random honest rows, each its own group, altered by `alter` in place."""
    index = pool.pick(rng, budget)
    rows, injection = _replace(pool, index, typology, pool.new_groups(len(index)))
    alter(rng, world, rows)
    return injection


def over_entitlement(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Instalments paid at 1.2-6x the beneficiary's entitlement (modest to gross)."""
    return _replace_each(rng, world, pool, budget, "over_entitlement", inflate_amounts)


def inflate_amounts(rng, world: World, rows: Payments) -> None:
    """Pay 1.2-6x the beneficiary's entitlement for the instalment, in place."""
    entitlement = world.entitlement_of(rows.beneficiary, rows.scheme)
    low, high = FAMILIES["over_entitlement"]["times_entitlement"]
    rows.amount[:] = np.ceil(entitlement * log_uniform(rng, low, high, len(rows)) / 10) * 10


def duplicate_instalment(rng, world: World, pool: Pool, budget: int) -> Injection:
    """The same instalment paid a second time, minutes to weeks after the first."""
    index = pool.pick(rng, budget)
    rows = pool.payments.take(index)
    delay = log_uniform(rng, *FAMILIES["duplicate_instalment"]["seconds_apart"], len(rows))
    delay = delay.astype(np.int64)
    # Always after the original (the copy is the fraud), however close to the year's end.
    rows.paid_at[:] = np.minimum(rows.paid_at + delay, np.maximum(rows.paid_at + 1, pool.end - 1))
    return _added(rows, "duplicate_instalment", pool.new_groups(len(rows)))


def off_cycle(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Instalments paid weeks or months outside their period's payment window."""
    index = pool.pick(rng, budget)
    rows, injection = _replace(pool, index, "off_cycle", pool.new_groups(len(index)))
    for i in range(len(rows)):
        start, end = schemes.period_window(schemes.SCHEME_CODES[rows.scheme[i]], rows.period[i])
        rows.paid_at[i] = _outside(
            rng, start - OFF_CYCLE_MARGIN, end + OFF_CYCLE_MARGIN, pool.start, pool.end
        )
    return injection


def off_cycle_period(rng, scheme: str, paid_at: int) -> str:
    """A period of `scheme` whose payment window lies at least OFF_CYCLE_MARGIN from `paid_at`,
    early or late by up to about a year (the live feed pays now, so it picks the period)."""
    for _attempt in range(100):
        moment = paid_at + int(rng.integers(-OFF_CYCLE_REACH, OFF_CYCLE_REACH))
        period = schemes.period_for_payment(scheme, moment)
        start, end = schemes.period_window(scheme, period)
        if paid_at < start - OFF_CYCLE_MARGIN or paid_at >= end + OFF_CYCLE_MARGIN:
            return period
    return schemes.period_for_payment(scheme, paid_at - OFF_CYCLE_REACH)


def _outside(rng, avoid_start: int, avoid_end: int, start: int, end: int) -> int:
    """A random time in [start, end) that avoids [avoid_start, avoid_end) (if there is room)."""
    before = max(0, min(avoid_start, end) - start)
    after = max(0, end - max(avoid_end, start))
    if before + after == 0:
        return int(avoid_end + rng.integers(20 * DAY, 60 * DAY))
    offset = int(rng.integers(0, before + after))
    return start + offset if offset < before else max(avoid_end, start) + offset - before


def burst(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Three to fifteen payments to one beneficiary within minutes to a day, posing as arrears."""
    family = FAMILIES["burst"]
    parts, produced = [], 0
    while produced < budget:
        template = pool.pick(rng, 1)
        if len(template) == 0:
            break
        size = min(count_between(rng, *family["payments"]), budget - produced)
        if budget - produced - size < family["payments"][0]:
            size = budget - produced  # too few left for a burst of their own
        rows = pool.payments.take(np.repeat(template, size))
        span = log_uniform(rng, *family["seconds_spanned"])
        offsets = np.sort(rng.uniform(0, span, size)).astype(np.int64)
        rows.paid_at[:] = rows.paid_at[0] + MINUTE + offsets
        scheme = schemes.SCHEME_CODES[rows.scheme[0]]
        rows.period[:] = [
            schemes.period_for_payment(scheme, int(rows.paid_at[0]) - k * 31 * DAY)
            for k in range(size)
        ]
        rows.mark("burst", pool.new_groups()[0])
        parts.append(rows)
        produced += size
    return Injection(np.empty(0, np.int64), Payments.concat(parts or [Payments.empty()]))


def shared_account_ring(rng, world: World, pool: Pool, budget: int) -> Injection:
    """A handful to dozens of beneficiaries of one district paid into one new account.

    Either the members' next payments are swept into the account within minutes to weeks, or
    (half the rings) all their payments flow there for weeks to months.
    """
    family = FAMILIES["shared_account_ring"]
    payments, parts, used = pool.payments, [], []
    # In the narrowest type that numbers every district (16 bits: 28 MB instead of 112 at 10
    # million payments).
    narrow = np.min_scalar_type(-len(world.districts))
    district_of_row = world.district.astype(narrow)[payments.beneficiary]
    first_paid = np.full(int(payments.beneficiary.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_paid, payments.beneficiary, payments.paid_at)
    by_beneficiary = pool.rows_by_beneficiary
    # Within a district, one beneficiary's rows together: its people are then found in order.
    by_district = RowsByKey(district_of_row, within=by_beneficiary.order)
    for _attempt in range(budget + 20):
        if sum(len(p) for p in parts) >= budget:
            break
        size = count_between(rng, *family["members"])
        members = _local_group(rng, pool, by_district, district_of_row, size)
        if members is None:
            break
        since = rng.integers(pool.start, pool.start + int(0.6 * (pool.end - pool.start)))
        until = since + int(log_uniform(rng, *family["days_flowing"]) * DAY)
        candidates = by_beneficiary.of_each(members)
        paid_at = payments.paid_at[candidates]
        candidates = candidates[(paid_at >= since) & (paid_at < until) & pool.free[candidates]]
        # Rings divert established beneficiaries: members already paid before the ring began.
        candidates = candidates[first_paid[payments.beneficiary[candidates]] < since]
        swept = rng.random() < 0.5
        if swept:  # each member's next payment only, re-timed into a short span
            first_of_member = np.unique(payments.beneficiary[candidates], return_index=True)[1]
            candidates = candidates[first_of_member]
        index = pool.claim(candidates)
        index = index[: budget - sum(len(p) for p in parts)]
        if len(index) == 0:
            continue
        rows = payments.take(index)
        if swept:
            span = log_uniform(rng, *family["seconds_spanned"])
            start = min(int(rows.paid_at.min()), pool.end - int(span) - 1)
            rows.paid_at[:] = start + np.sort(rng.uniform(0, span, len(rows))).astype(np.int64)
            scheme_codes = [schemes.SCHEME_CODES[c] for c in rows.scheme]
            rows.period[:] = [
                schemes.period_for_payment(code, int(t))
                for code, t in zip(scheme_codes, rows.paid_at, strict=True)
            ]
        rows.account[:] = world.new_account()
        rows.mark("shared_account_ring", pool.new_groups()[0])
        parts.append(rows)
        used.append(index)
    return _combined(parts, used)


def _local_group(rng, pool: Pool, by_district: RowsByKey, district_of_row, size):
    """Beneficiaries of one randomly chosen district who still have untouched payments."""
    seed = pool.pick(rng, 1)
    if len(seed) == 0:
        return None
    pool.release(seed)
    rows = by_district.of(district_of_row[seed[0]])
    local = pool.payments.beneficiary[rows[pool.free[rows]]]  # in order of beneficiary
    local = local[_run_starts(local)]  # as np.unique, without sorting again
    return rng.choice(local, size=min(size, len(local)), replace=False)


def agent_collusion(rng, world: World, pool: Pool, budget: int) -> Injection:
    """One payout agent paying out for 5-40 beneficiaries seconds to minutes apart.

    By day or by night, for people living nearby or 200+ km away: four kinds of sweep.
    """
    family = FAMILIES["agent_collusion"]
    payments, parts, used = pool.payments, [], []
    homes = HomesByPeriod(world, pool)
    for _attempt in range(20 * budget + 20):
        if sum(len(p) for p in parts) >= budget or pool.free_count == 0:
            break
        agent = int(rng.integers(0, len(world.agent_ids)))
        far = rng.random() < 0.5
        candidates = _collusion_candidates(world, pool, homes, agent, far, family["far_km"])
        size = min(count_between(rng, *family["payouts"]), budget - sum(len(p) for p in parts))
        index = pool.pick(rng, size, among=candidates)
        if len(index) < min(size, 3):
            pool.release(index)
            continue
        rows = payments.take(index)
        local_day = (int(rows.paid_at.min()) + schemes.IST_OFFSET_SECONDS) // DAY
        at_night = rng.random() < 0.5
        hour = rng.uniform(21, 29) if at_night else rng.uniform(8, 18)
        first = local_day * DAY + int(hour * HOUR) - schemes.IST_OFFSET_SECONDS
        gap = log_uniform(rng, *family["seconds_apart"])
        rows.paid_at[:] = first + np.cumsum(rng.uniform(0.5 * gap, 1.5 * gap, len(rows))).astype(
            np.int64
        )
        rows.agent[:], rows.channel[:] = agent, AEPS
        rows.latitude[:], rows.longitude[:] = world.agent_lat[agent], world.agent_lon[agent]
        rows.mark("agent_collusion", pool.new_groups()[0])
        parts.append(rows)
        used.append(index)
    return _combined(parts, used)


def _collusion_candidates(
    world: World, pool: Pool, homes: HomesByPeriod, agent: int, far: bool, far_km: float
) -> np.ndarray:
    """Untouched rows (ascending) of the same scheme and period as a random untouched row, of
    beneficiaries living nearby or `far_km`+ away."""
    if pool.free_count == 0:
        return np.empty(0, np.int64)
    seed = pool.nth_free((agent * 7919) % pool.free_count)
    lat, lon = world.agent_lat[agent], world.agent_lon[agent]
    rows, measured, distance = homes.near(pool.period_code[seed], lat, lon, far_km if far else 150)
    chosen = np.full(len(rows), far)  # the homes not measured are farther than the limit
    chosen[measured] = (distance > far_km) if far else (distance < 150)
    return rows[chosen & pool.free[rows]]


class HomesByPeriod:
    """The rows of each scheme and period, with their beneficiaries' homes in order of latitude.

    Collusion wants the rows of one period whose beneficiaries live near an agent, or far from
    it; measuring every row of the period (a million at 10 million payments) for each group made
    it quadratic. A home more than `km` north or south of a place is more than `km` from it, so
    only the homes in that band of latitude need measuring.
    """

    MARGIN_DEGREES = 0.1  # about 11 km, far beyond any rounding in a measured distance

    def __init__(self, world: World, pool: Pool):
        self._world, self._beneficiary = world, pool.payments.beneficiary
        self._rows = RowsByKey(pool.period_code)
        self._periods: dict = {}

    def near(self, period_code: int, lat: float, lon: float, km: float):
        """The period's rows (ascending, used or not), which of them (positions) have homes
        within about `km` north or south of the place, and those homes' distances from it; every
        other home is more than `km` away."""
        rows, by_latitude, latitude = self._period(period_code)
        reach = np.degrees(km / EARTH_RADIUS_KM) + self.MARGIN_DEGREES
        low, high = np.searchsorted(latitude, [lat - reach, lat + reach])
        measured = by_latitude[low:high]
        longitude = self._world.home_lon[self._beneficiary[rows[measured]]]
        distance = haversine_km(latitude[low:high], longitude, lat, lon)
        return rows, measured, distance

    def _period(self, period_code: int):
        """The period's rows, and their homes (positions in the rows, latitude) in order of
        latitude.

        Kept for every period used (most of them), so kept small: whose homes they are and
        their longitudes are looked up for the band measured only.
        """
        if period_code not in self._periods:
            rows = self._rows.of(period_code)
            latitude = self._world.home_lat[self._beneficiary[rows]]
            by_latitude = row_numbers(np.argsort(latitude))
            self._periods[period_code] = (rows, by_latitude, latitude[by_latitude])
        return self._periods[period_code]


def payment_after_death(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Instalments that keep flowing for periods that began after the beneficiary died."""
    payments, parts, used = pool.payments, [], []
    by_beneficiary = pool.rows_by_beneficiary
    per_beneficiary = np.bincount(payments.beneficiary[pool.free], minlength=world.size)
    regulars = np.flatnonzero((per_beneficiary >= 4) & (world.death_day < 0))
    rng.shuffle(regulars)
    for beneficiary in regulars:
        if sum(len(p) for p in parts) >= budget:
            break
        mine = by_beneficiary.of(beneficiary)
        mine = mine[pool.free[mine]]
        if len(mine) < 4:
            continue
        times = np.sort(payments.paid_at[mine])
        days_before = rng.integers(*FAMILIES["payment_after_death"]["days_dead_before"])
        death_time = times[len(times) // 2] - int(days_before) * DAY
        period_start = np.array(
            [
                schemes.period_start(schemes.SCHEME_CODES[payments.scheme[i]], payments.period[i])
                for i in mine
            ]
        )
        after = mine[(period_start > death_time) & (payments.paid_at[mine] > death_time)]
        after = pool.claim(after[: budget - sum(len(p) for p in parts)])
        if len(after) == 0:
            continue
        world.death_day[beneficiary] = (death_time + schemes.IST_OFFSET_SECONDS) // DAY
        rows = payments.take(after)
        rows.mark("payment_after_death", pool.new_groups()[0])
        parts.append(rows)
        used.append(after)
    return _combined(parts, used)


def geo_mismatch(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Payouts drawn at an agent a few hundred to 1,500+ km from the beneficiary's home."""
    return _replace_each(rng, world, pool, budget, "geo_mismatch", send_far_away)


def send_far_away(rng, world: World, rows: Payments) -> None:
    """Move each payout to an agent 300-1,500+ km from the beneficiary's home, in place."""
    least = log_uniform(rng, *FAMILIES["geo_mismatch"]["km_from_home"], len(rows))
    for i in range(len(rows)):
        home = rows.beneficiary[i]
        distance = haversine_km(
            world.home_lat[home], world.home_lon[home], world.agent_lat, world.agent_lon
        )
        far = np.flatnonzero((distance > least[i]) & (distance < 1.5 * least[i]))
        if len(far) == 0:
            far = np.flatnonzero(distance > least[i])
        if len(far) == 0:
            far = np.array([int(np.argmax(distance))])
        agent = far[rng.integers(0, len(far))]
        rows.agent[i], rows.channel[i] = agent, AEPS
        rows.latitude[i], rows.longitude[i] = world.agent_lat[agent], world.agent_lon[agent]


def ghost_beneficiary(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Groups of 3-60 fictitious beneficiaries enrolled by one operator within 1-30 days, then
    paid for one to six months (until the money stops or the ghosts are found)."""
    family = FAMILIES["ghost_beneficiary"]
    parts, produced = [], 0
    start_day, end_day = pool.start // DAY + 1, pool.end // DAY
    registrar = Registrar(world)
    attempts = 0
    while produced < budget and attempts < 200:
        attempts += 1
        size = count_between(rng, *family["ghosts"])
        span = count_between(rng, *family["enrolment_days"])
        enrolled = int(rng.integers(start_day - 200, max(start_day - 199, end_day - 60)))
        new = enrol_ghosts(rng, world, size, enrolled, span, registrar)
        months = count_between(rng, *family["months_paid"])
        rows = normal_payments(rng, world, start_day, end_day, enrolments=new)
        first = int(rows.paid_at.min()) if len(rows) else 0
        rows = rows.take(rows.paid_at < first + months * 30 * DAY)
        rows = rows.take(slice(0, budget - produced))
        if len(rows) == 0:
            continue
        rows.mark("ghost_beneficiary", pool.new_groups()[0])
        parts.append(rows)
        produced += len(rows)
    return Injection(np.empty(0, np.int64), Payments.concat(parts or [Payments.empty()]))


def enrol_ghosts(
    rng,
    world: World,
    size: int,
    enrolled_day: int,
    days: int = 2,
    registrar: Registrar | None = None,
) -> np.ndarray:
    """Register `size` ghosts by one operator over `days` days; returns their enrolment indexes.

    The ghosts share a few phones (about one for every three ghosts, at most six). Enrolling
    group after group into one world, pass the same `Registrar` of it each time.
    """
    registrar = Registrar(world) if registrar is None else registrar
    operator = int(rng.integers(0, len(world.operator_ids)))
    district = registrar.district_of_operator(operator)
    first = world.size
    ids = np.array([f"B{i + 1:08d}" for i in range(first, first + size)])
    home_pick = rng.choice(registrar.residents(district), size)
    # Made-up addresses in the villages of real people nearby.
    home_lat, home_lon = scatter_on_land(
        rng, world.home_lat[home_pick], world.home_lon[home_pick], 3.0
    )
    pension = rng.random(size) < 0.6
    phone_count = int(rng.integers(1, min(6, max(1, size // 3)) + 1))
    phones = phone_hashes(rng.integers(6_000_000_000, 9_999_999_999, phone_count), "ghost")
    accounts = [world.new_account() for _ in range(size)]
    registrar.append(
        beneficiary_ids=ids,
        district=np.full(size, district),
        home_lat=home_lat,
        home_lon=home_lon,
        account=np.array(accounts),
        phone_hash=phones[rng.integers(0, len(phones), size)],
        operator=np.full(size, operator),
        enrolled_day=enrolled_day + rng.integers(0, days, size),
        death_day=np.full(size, -1),
        persona=np.where(pension, 0, 2),
        home_agent=world.home_agent[home_pick],
        away_agent=np.full(size, -1),
    )
    scheme_code = np.where(pension, schemes.OLD_AGE_PENSION, schemes.PM_KISAN)
    template = {
        code: registrar.first_enrolment(district, schemes.SCHEME_CODES.index(code))
        for code in (schemes.OLD_AGE_PENSION, schemes.PM_KISAN)
    }
    entitlement = np.array(
        [
            world.enrolment_entitlement[template[c]]
            if template[c] is not None
            else (2000.0 if c == schemes.PM_KISAN else 1000.0)
            for c in scheme_code
        ]
    )
    channel = np.array(
        [schemes.CHANNELS.index(schemes.SCHEMES[c].channel_mix[0][0]) for c in scheme_code]
    )
    first_enrolment = len(world.enrolment_scheme)
    registrar.append(
        enrolment_beneficiary=np.arange(first, first + size),
        enrolment_scheme=np.array([schemes.SCHEME_CODES.index(c) for c in scheme_code], np.int8),
        enrolment_entitlement=entitlement,
        enrolment_channel=channel.astype(np.int8),
        enrolment_day=world.enrolled_day[first:],
    )
    return np.arange(first_enrolment, first_enrolment + size)


class Registrar:
    """Looks people and enrolments up in a world's registry and adds new ones (ghosts), each in
    time proportional to what is looked up or added rather than to the registry's size.

    Scanning and copying the whole registry for every group of ghosts made ghost injection
    quadratic. The lookups are built once; people and enrolments added since are searched on
    their own. Columns grow into spare room (a sixteenth more each time room runs out), so a
    group's ghosts are written in place instead of copying every column.
    """

    def __init__(self, world: World):
        self.world = world
        self._people, self._enrolments = world.size, len(world.enrolment_scheme)
        operator = world.operator[: self._people]
        self._first_of_operator = np.full(len(world.operator_ids), self._people)
        np.minimum.at(self._first_of_operator, operator, np.arange(self._people))
        self._residents = RowsByKey(world.district[: self._people])
        self._scheme_count = len(schemes.SCHEME_CODES)
        key = self._enrolment_key(np.arange(self._enrolments))
        self._first_enrolment_of = np.full(int(key.max(initial=-1)) + 1, self._enrolments)
        np.minimum.at(self._first_enrolment_of, key, np.arange(self._enrolments))
        self._room: dict = {}  # column name -> (the column as last set, its spare room)

    def district_of_operator(self, operator: int) -> int:
        """The district of the operator's first enrollee (the registry's first if none)."""
        world, first = self.world, self._first_of_operator[operator]
        if first == self._people:
            added = np.flatnonzero(world.operator[self._people :] == operator)
            first = self._people + added[0] if len(added) else 0
        return int(world.district[first])

    def residents(self, district: int) -> np.ndarray:
        """The people living in a district (ascending), as np.flatnonzero(district == ...)."""
        added = np.flatnonzero(self.world.district[self._people :] == district)
        return np.r_[self._residents.of(district), self._people + added]

    def first_enrolment(self, district: int, scheme: int) -> int | None:
        """The first enrolment in a scheme (index into SCHEME_CODES) of someone living in a
        district, or None."""
        key = district * self._scheme_count + scheme
        if key < len(self._first_enrolment_of) and self._first_enrolment_of[key] < self._enrolments:
            return int(self._first_enrolment_of[key])
        added = np.arange(self._enrolments, len(self.world.enrolment_scheme))
        added = added[self._enrolment_key(added) == key]
        return int(added[0]) if len(added) else None

    def _enrolment_key(self, enrolment: np.ndarray) -> np.ndarray:
        world = self.world
        district = world.district[world.enrolment_beneficiary[enrolment]].astype(np.int64)
        return district * self._scheme_count + world.enrolment_scheme[enrolment]

    def append(self, **columns) -> None:
        """Add rows at the end of some of the world's columns, of the type a concatenation
        would give."""
        for name, values in columns.items():
            current, values = getattr(self.world, name), np.asarray(values)
            last, room = self._room.get(name, (None, None))
            length = len(current) + len(values)
            dtype = np.result_type(current, values)
            if current is not last or room.dtype != dtype or len(room) < length:
                room = np.empty(length + length // 16, dtype)
                room[: len(current)] = current
            room[len(current) : length] = values
            setattr(self.world, name, room[:length])
            self._room[name] = getattr(self.world, name), room


def _combined(parts: list[Payments], used: list[np.ndarray]) -> Injection:
    if not parts:
        return Injection(np.empty(0, np.int64), Payments.empty())
    return Injection(np.concatenate(used), Payments.concat(parts))


INJECTORS = {
    "over_entitlement": over_entitlement,
    "duplicate_instalment": duplicate_instalment,
    "off_cycle": off_cycle,
    "burst": burst,
    "shared_account_ring": shared_account_ring,
    "agent_collusion": agent_collusion,
    "payment_after_death": payment_after_death,
    "geo_mismatch": geo_mismatch,
    "ghost_beneficiary": ghost_beneficiary,
}
# Injectors that add rows (the others replace honest rows one for one).
ADDING = ("duplicate_instalment", "burst", "ghost_beneficiary")
assert set(INJECTORS) == set(TYPOLOGIES)
