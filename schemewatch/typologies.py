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
from schemewatch.geography import haversine_km, scatter_on_land
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


@dataclass
class Pool:
    """Honest payments an injector may draw on, and which are still untouched."""

    payments: Payments
    free: np.ndarray  # bool
    start: int  # unix seconds: injected payments stay inside [start, end)
    end: int
    next_group: int = 1

    def pick(self, rng, count: int, where=None) -> np.ndarray:
        """Up to `count` random untouched rows (optionally among `where`), marked as used."""
        candidates = np.flatnonzero(self.free if where is None else self.free & where)
        chosen = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
        self.free[chosen] = False
        return np.sort(chosen)

    def claim(self, index: np.ndarray) -> np.ndarray:
        """Mark specific rows as used."""
        index = index[self.free[index]]
        self.free[index] = False
        return index

    @cached_property
    def period_code(self) -> np.ndarray:
        """Scheme and period as one integer per row (object comparisons are slow).

        Only equality matters; numbering the periods through a dict avoids string copies of every
        row (about a gigabyte of temporaries at 3 million rows).
        """
        numbers: dict = {}
        period = np.fromiter(
            (numbers.setdefault(p, len(numbers)) for p in self.payments.period.tolist()),
            np.int64,
            len(self.payments.period),
        )
        return self.payments.scheme.astype(np.int64) * (int(period.max(initial=0)) + 1) + period

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
    district_of_row = world.district[payments.beneficiary]
    first_paid = np.full(int(payments.beneficiary.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_paid, payments.beneficiary, payments.paid_at)
    rows_of = _rows_by_beneficiary(payments.beneficiary)
    for _attempt in range(budget + 20):
        if sum(len(p) for p in parts) >= budget:
            break
        size = count_between(rng, *family["members"])
        members = _local_group(rng, world, pool, district_of_row, size)
        if members is None:
            break
        since = rng.integers(pool.start, pool.start + int(0.6 * (pool.end - pool.start)))
        until = since + int(log_uniform(rng, *family["days_flowing"]) * DAY)
        candidates = rows_of(members)
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


def _rows_by_beneficiary(beneficiary: np.ndarray):
    """A lookup: the row indexes (ascending) of some beneficiaries, without scanning every row."""
    order = np.argsort(beneficiary, kind="stable")
    ordered = beneficiary[order]

    def rows_of(members: np.ndarray) -> np.ndarray:
        low = np.searchsorted(ordered, members, side="left")
        high = np.searchsorted(ordered, members, side="right")
        parts = [order[a:b] for a, b in zip(low, high, strict=True)]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    return rows_of


def _local_group(rng, world, pool, district_of_row, size):
    """Beneficiaries of one randomly chosen district who still have untouched payments."""
    seed = pool.pick(rng, 1)
    if len(seed) == 0:
        return None
    pool.free[seed] = True
    district = district_of_row[seed[0]]
    local = np.unique(pool.payments.beneficiary[pool.free & (district_of_row == district)])
    return rng.choice(local, size=min(size, len(local)), replace=False)


def agent_collusion(rng, world: World, pool: Pool, budget: int) -> Injection:
    """One payout agent paying out for 5-40 beneficiaries seconds to minutes apart.

    By day or by night, for people living nearby or 200+ km away: four kinds of sweep.
    """
    family = FAMILIES["agent_collusion"]
    payments, parts, used = pool.payments, [], []
    for _attempt in range(20 * budget + 20):
        if sum(len(p) for p in parts) >= budget or not pool.free.any():
            break
        agent = int(rng.integers(0, len(world.agent_ids)))
        far = rng.random() < 0.5
        candidates = _collusion_candidates(world, pool, agent, far, family["far_km"])
        size = min(count_between(rng, *family["payouts"]), budget - sum(len(p) for p in parts))
        index = pool.pick(rng, size, where=candidates)
        if len(index) < min(size, 3):
            pool.free[index] = True
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
    world: World, pool: Pool, agent: int, far: bool, far_km: float
) -> np.ndarray:
    """Same scheme and period as a random untouched row; living nearby or `far_km`+ away."""
    payments = pool.payments
    free = np.flatnonzero(pool.free)
    if len(free) == 0:
        return pool.free
    seed = free[(agent * 7919) % len(free)]
    same_index = np.flatnonzero((pool.period_code == pool.period_code[seed]) & pool.free)
    home = payments.beneficiary[same_index]
    distance = haversine_km(
        world.home_lat[home], world.home_lon[home], world.agent_lat[agent], world.agent_lon[agent]
    )
    mask = np.zeros(len(payments), bool)
    mask[same_index[(distance > far_km) if far else (distance < 150)]] = True
    return mask


def payment_after_death(rng, world: World, pool: Pool, budget: int) -> Injection:
    """Instalments that keep flowing for periods that began after the beneficiary died."""
    payments, parts, used = pool.payments, [], []
    per_beneficiary = np.bincount(payments.beneficiary[pool.free], minlength=world.size)
    regulars = np.flatnonzero((per_beneficiary >= 4) & (world.death_day < 0))
    rng.shuffle(regulars)
    for beneficiary in regulars:
        if sum(len(p) for p in parts) >= budget:
            break
        mine = np.flatnonzero((payments.beneficiary == beneficiary) & pool.free)
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
    attempts = 0
    while produced < budget and attempts < 200:
        attempts += 1
        size = count_between(rng, *family["ghosts"])
        span = count_between(rng, *family["enrolment_days"])
        enrolled = int(rng.integers(start_day - 200, max(start_day - 199, end_day - 60)))
        new = enrol_ghosts(rng, world, size, enrolled, span)
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


def enrol_ghosts(rng, world: World, size: int, enrolled_day: int, days: int = 2) -> np.ndarray:
    """Register `size` ghosts by one operator over `days` days; returns their enrolment indexes.

    The ghosts share a few phones (about one for every three ghosts, at most six).
    """
    operator = int(rng.integers(0, len(world.operator_ids)))
    district = (
        int(world.district[world.operator == operator][0])
        if (world.operator == operator).any()
        else int(world.district[0])
    )
    first = world.size
    ids = np.array([f"B{i + 1:08d}" for i in range(first, first + size)])
    home_pick = rng.choice(np.flatnonzero(world.district == district), size)
    # Made-up addresses in the villages of real people nearby.
    home_lat, home_lon = scatter_on_land(
        rng, world.home_lat[home_pick], world.home_lon[home_pick], 3.0
    )
    pension = rng.random(size) < 0.6
    phone_count = int(rng.integers(1, min(6, max(1, size // 3)) + 1))
    phones = phone_hashes(rng.integers(6_000_000_000, 9_999_999_999, phone_count), "ghost")
    accounts = [world.new_account() for _ in range(size)]
    _extend(
        world,
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
        code: np.flatnonzero(
            (world.enrolment_scheme == schemes.SCHEME_CODES.index(code))
            & (world.district[world.enrolment_beneficiary] == district)
        )
        for code in (schemes.OLD_AGE_PENSION, schemes.PM_KISAN)
    }
    entitlement = np.array(
        [
            world.enrolment_entitlement[template[c][0]]
            if len(template[c])
            else (2000.0 if c == schemes.PM_KISAN else 1000.0)
            for c in scheme_code
        ]
    )
    channel = np.array(
        [schemes.CHANNELS.index(schemes.SCHEMES[c].channel_mix[0][0]) for c in scheme_code]
    )
    first_enrolment = len(world.enrolment_scheme)
    world.enrolment_beneficiary = np.r_[world.enrolment_beneficiary, np.arange(first, first + size)]
    world.enrolment_scheme = np.r_[
        world.enrolment_scheme, [schemes.SCHEME_CODES.index(c) for c in scheme_code]
    ].astype(np.int8)
    world.enrolment_entitlement = np.r_[world.enrolment_entitlement, entitlement]
    world.enrolment_channel = np.r_[world.enrolment_channel, channel].astype(np.int8)
    world.enrolment_day = np.r_[world.enrolment_day, world.enrolled_day[first:]]
    return np.arange(first_enrolment, first_enrolment + size)


def _extend(world: World, **arrays) -> None:
    for name, values in arrays.items():
        setattr(world, name, np.concatenate([getattr(world, name), np.asarray(values)]))


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
