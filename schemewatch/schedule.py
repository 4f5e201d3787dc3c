"""Normal, honest payments: each scheme's instalments paid on its own calendar, with real variety.

Variety that a fraud detector must not mistake for fraud: late and very late instalments, night-time
bank batch credits, agents paying out crowds on market day, migrants drawing money in distant
cities, two MGNREGA muster rolls in one fortnight, pension arrears of two months at once (only
after a month that was missed), and the instalment due for the month someone died being paid after
their death.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date, timedelta

import numpy as np

from schemewatch import schemes
from schemewatch.geography import haversine_km
from schemewatch.payments import INDEX, NO_AGENT, Payments
from schemewatch.population import World

EPOCH = date(1970, 1, 1)
BANK = schemes.CHANNELS.index("BANK")
POST = schemes.CHANNELS.index("POST")
AEPS = schemes.CHANNELS.index("AEPS")
NEIGHBOURING = 3  # payouts "elsewhere" are at an agent of one of the nearest districts
# Share of pensioners whose missed month is paid with the next one (two months at once).
ARREARS_AFTER_MISSED_MONTH = 0.3


def day_number(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def to_date(day_number_: int) -> date:
    """Inverse of day_number."""
    return EPOCH + timedelta(days=int(day_number_))


def weekday_of(days: np.ndarray) -> np.ndarray:
    """Monday = 0 for day numbers (1970-01-01 was a Thursday)."""
    return (np.asarray(days) + 3) % 7


def normal_payments(
    rng: np.random.Generator, world: World, start_day: int, end_day: int, enrolments=None
) -> Payments:
    """Every scheduled instalment paid in [start_day, end_day), in time order, unlabelled.

    `enrolments` restricts the schedule to some enrolment indexes (default: all).
    """
    # A few enrolments (a group of ghosts) are looked at alone, not the whole registry's.
    chosen = None if enrolments is None else np.unique(enrolments)
    builders = {
        schemes.PM_KISAN: _pm_kisan,
        schemes.OLD_AGE_PENSION: _pension,
        schemes.MGNREGA: _mgnrega,
        schemes.SCHOLARSHIP: _scholarship,
        schemes.PMAY_G: _housing,
    }
    parts = []
    for code, build in builders.items():
        scheme = schemes.SCHEME_CODES.index(code)
        if chosen is None:
            enrolments = np.flatnonzero(world.enrolment_scheme == scheme)
        else:
            enrolments = chosen[world.enrolment_scheme[chosen] == scheme]
        if len(enrolments):
            # The whole schedule lives only until its part within reach is taken, and that part
            # only until it is settled (hundreds of megabytes each at 10 million payments).
            scheduled = _within_reach(
                build(rng, world, enrolments, start_day, end_day), start_day, end_day
            )
            paid = settle(rng, world, *scheduled)
            del scheduled
            parts.append(_only(paid, _inside(paid.paid_at, start_day, end_day)))
    return _concat_in_time_order(parts) if parts else Payments.empty()


def _within_reach(scheduled: tuple, start_day: int, end_day: int) -> tuple:
    """The instalments due from a week before the year (paid later, on a market day, they may
    still fall inside it) to its end."""
    enrolment, day, period, amount = scheduled
    keep = (day >= start_day - 7) & (day < end_day)
    return enrolment[keep], day[keep], period[keep], amount[keep]


def _only(payments: Payments, rows) -> Payments:
    """Keep only some rows of a batch, in place, one column at a time (a copy of the whole batch
    beside it would be the year's peak)."""
    for field in fields(Payments):
        setattr(payments, field.name, getattr(payments, field.name)[rows])
    return payments


def _concat_in_time_order(parts: list[Payments]) -> Payments:
    """Payments.concat(parts).sorted_by_time(), one field at a time, freeing the parts as it goes
    (the year's payments are held about once instead of three times).

    Each part's rows are written straight to their places: a concatenated copy of a column
    beside the sorted one would be the year's peak.
    """
    destination = _places_in_time_order([p.paid_at for p in parts])
    return Payments(**{f.name: _gathered(parts, f.name, destination) for f in fields(Payments)})


def _gathered(parts: list[Payments], name: str, destination: np.ndarray) -> np.ndarray:
    """One column of all the parts, each row at its destination; the parts' own are dropped."""
    column = np.empty(len(destination), np.result_type(*(getattr(p, name) for p in parts)))
    start = 0
    for part in parts:
        rows = getattr(part, name)
        column[destination[start : start + len(rows)]] = rows
        start += len(rows)
        setattr(part, name, None)
    return column


def _places_in_time_order(times: list[np.ndarray]) -> np.ndarray:
    """Where each row of the concatenated times goes when they are sorted (stably)."""
    order = np.argsort(np.concatenate(times), kind="stable")
    destination = np.empty_like(order)
    destination[order] = np.arange(len(order))
    return destination


def _inside(paid_at: np.ndarray, start_day: int, end_day: int) -> np.ndarray:
    local_day = (paid_at + schemes.IST_OFFSET_SECONDS) // schemes.DAY
    return (local_day >= start_day) & (local_day < end_day)


def settle(rng, world: World, enrolment, day, period, amount) -> Payments:
    """Turn scheduled instalments into payments: channel, agent, place and time of day."""
    beneficiary = world.enrolment_beneficiary[enrolment]
    channel = world.enrolment_channel[enrolment].copy()
    agent = np.where(channel == BANK, NO_AGENT, world.home_agent[beneficiary])
    elsewhere = (agent != NO_AGENT) & (rng.random(len(agent)) < 0.02)
    agent[elsewhere] = _nearby_agent(rng, world, world.district[beneficiary[elsewhere]])
    migrant = (world.away_agent[beneficiary] >= 0) & (
        world.enrolment_scheme[enrolment] == schemes.SCHEME_CODES.index(schemes.PM_KISAN)
    )
    channel[migrant], agent[migrant] = AEPS, world.away_agent[beneficiary[migrant]]
    has_agent = agent != NO_AGENT
    day = np.where(has_agent, _next_market_day(rng, world, agent, day), day)
    seconds = np.where(has_agent, _counter_hours(rng, len(day)), _bank_batch_hours(rng, len(day)))
    at_agent_point = has_agent & (channel != POST)
    lat = np.where(at_agent_point, world.agent_lat[agent], world.home_lat[beneficiary])
    lon = np.where(at_agent_point, world.agent_lon[agent], world.home_lon[beneficiary])
    n = len(day)
    return Payments(
        beneficiary=beneficiary.astype(INDEX),
        scheme=world.enrolment_scheme[enrolment].astype(np.int8),
        period=period.astype(object),
        amount=np.round(amount.astype(float, copy=False), 2),  # np.round makes the copy
        paid_at=(day.astype(np.int64) * schemes.DAY + seconds - schemes.IST_OFFSET_SECONDS),
        latitude=lat,
        longitude=lon,
        account=world.account[beneficiary].astype(INDEX),
        agent=agent.astype(INDEX),
        channel=channel.astype(np.int8),
        label=np.zeros(n, np.int8),
        group=np.full(n, -1, INDEX),
    )


def _nearby_agent(rng, world: World, district: np.ndarray) -> np.ndarray:
    """An agent in one of the three districts nearest to home (people travel to markets)."""
    districts = world.districts
    chosen = np.empty(len(district), np.int64)
    for d in np.unique(district):
        km = haversine_km(
            districts.latitude[d], districts.longitude[d], districts.latitude, districts.longitude
        )
        km[d] = np.inf
        pool = np.flatnonzero(np.isin(world.agent_district, np.argsort(km)[:NEIGHBOURING]))
        rows = np.flatnonzero(district == d)
        chosen[rows] = pool[rng.integers(0, len(pool), len(rows))]
    return chosen


def _next_market_day(rng, world: World, agent, day) -> np.ndarray:
    """Most people go to their agent on market day; some on another day soon after."""
    safe_agent = np.maximum(agent, 0)
    wait = (world.agent_market_weekday[safe_agent] - weekday_of(day)) % 7
    other_day = rng.random(len(day)) < 0.3
    return day + np.where(other_day, rng.integers(0, 5, len(day)), wait)


COUNTER_OPENS_HOUR, COUNTER_CLOSES_HOUR = 8.0, 18.5  # IST: when agents' counters pay out


def counter_open(unix_seconds) -> np.ndarray:
    """Whether agents' counters are open at these times (IST opening hours)."""
    hours = (np.asarray(unix_seconds) + schemes.IST_OFFSET_SECONDS) % schemes.DAY / 3600
    return (hours >= COUNTER_OPENS_HOUR) & (hours < COUNTER_CLOSES_HOUR)


def _counter_hours(rng, n: int) -> np.ndarray:
    """Seconds after midnight for a counter payout: market hours, busiest late morning."""
    hours = rng.normal(11.5, 2.0, n)
    # Those who come before opening or after closing queue and are served one by one, over the
    # first or last half hour (not all in the same second).
    opens, closes = COUNTER_OPENS_HOUR, COUNTER_CLOSES_HOUR
    hours = np.where(hours < opens, opens + rng.uniform(0, 0.5, n), hours)
    hours = np.where(hours > closes, closes - rng.uniform(0, 0.5, n), hours)
    return (hours * 3600).astype(np.int64)


def _bank_batch_hours(rng, n: int) -> np.ndarray:
    """Bank credits: half in overnight batch runs, half in the working day."""
    overnight = rng.random(n) < 0.5
    hours = np.where(overnight, rng.uniform(1.0, 5.0, n), rng.uniform(9.0, 19.0, n))
    return (hours * 3600).astype(np.int64)


def _alive_for(world: World, enrolment, period_start_day) -> np.ndarray:
    """Enrolled before the period began and not dead before it began."""
    beneficiary = world.enrolment_beneficiary[enrolment]
    death = world.death_day[beneficiary]
    return (world.enrolment_day[enrolment] < period_start_day) & (
        (death < 0) | (death >= period_start_day)
    )


def _period_labels(label: str, count: int) -> np.ndarray:
    """`count` payments' period, all one shared string object.

    `np.full(count, label, object)` would make a new string per payment (about 60 bytes each,
    most of a gigabyte over a year of 10 million payments); a pointer to one costs 8.
    """
    labels = np.empty(count, object)
    labels.fill(label)
    return labels


def _collect(chunks):
    if not chunks:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, object), np.empty(0, float)
    return tuple(np.concatenate(c) for c in zip(*chunks, strict=True))


def _fiscal_years(start_day: int, end_day: int, first_month: int = 4) -> range:
    first, last = to_date(start_day), to_date(end_day)
    return range(first.year - 1, last.year + 1)


def _pm_kisan(rng, world, enrolments, start_day, end_day):
    chunks = []
    for year in _fiscal_years(start_day, end_day):
        for part in (1, 2, 3):
            label = f"{schemes.fiscal_year_label(year)}/P{part}"
            window_start, window_end = schemes.period_window(schemes.PM_KISAN, label)
            first = window_start // schemes.DAY + 1
            last = window_end // schemes.DAY
            if last < start_day - 30 or first >= end_day:
                continue
            release = first + int(rng.integers(30, 100))
            paid = enrolments[
                _alive_for(world, enrolments, first) & (rng.random(len(enrolments)) < 0.93)
            ]
            lateness = rng.random(len(paid))
            day = release + np.where(
                lateness < 0.8,
                rng.integers(0, 2, len(paid)),
                np.minimum(rng.exponential(20, len(paid)).astype(int), last - release - 1),
            )
            very_late = lateness > 0.995
            day[very_late] = last + rng.integers(1, 60, very_late.sum())
            chunks.append((paid, day, _period_labels(label, len(paid)), np.full(len(paid), 2000.0)))
    return _collect(chunks)


def _pension(rng, world, enrolments, start_day, end_day):
    chunks = []
    first, last = to_date(start_day - 31), to_date(end_day)
    month = date(first.year, first.month, 1)
    entitlement = world.enrolment_entitlement[enrolments]
    missed = np.zeros(len(enrolments), bool)  # last month's pension was due but not paid
    while month <= last:
        label = f"{month:%Y-%m}"
        month_start = day_number(month)
        due = _alive_for(world, enrolments, month_start)
        alive = due & (rng.random(len(enrolments)) < 0.97)
        paid = enrolments[alive]
        day = month_start + int(rng.integers(0, 6)) + rng.integers(0, 3, len(paid))
        late = rng.random(len(paid)) < 0.03
        day[late] += rng.integers(5, 14, late.sum())
        amount = entitlement[alive].copy()
        # A real arrear: the month before was missed, and now both months are paid at once.
        arrears = missed[alive] & (rng.random(len(paid)) < ARREARS_AFTER_MISSED_MONTH)
        amount[arrears] *= 2
        chunks.append((paid, day, _period_labels(label, len(paid)), amount))
        missed = due & ~alive
        month = (month + timedelta(days=32)).replace(day=1)
    return _collect(chunks)


def _mgnrega(rng, world, enrolments, start_day, end_day):
    chunks = []
    day_rate = world.enrolment_entitlement[enrolments] / schemes.MGNREGA_DAYS_PER_MUSTER_ROLL
    first = to_date(start_day - 60)
    month = date(first.year, first.month, 1)
    while day_number(month) < end_day:
        lean_season = month.month <= 6
        for half in ("F1", "F2"):
            label = f"{month:%Y-%m}-{half}"
            window_start, _ = schemes.period_window(schemes.MGNREGA, label)
            fortnight_end = window_start // schemes.DAY + 1
            works = _alive_for(world, enrolments, fortnight_end - 14) & (
                rng.random(len(enrolments)) < (0.35 if lean_season else 0.12)
            )
            worked = enrolments[works]
            days_worked = rng.integers(2, 15, len(worked))
            rate = day_rate[works]
            day = fortnight_end + 8 + np.minimum(rng.gamma(2.0, 5.0, len(worked)), 30).astype(int)
            two_sites = (rng.random(len(worked)) < 0.03) & (days_worked >= 4)
            # Days at the two worksites fall as they fall, rarely exactly half each.
            split = rng.integers(1, np.maximum(days_worked, 2))
            first_part = np.where(two_sites, split, days_worked)
            chunks.append((worked, day, _period_labels(label, len(worked)), rate * first_part))
            second = np.flatnonzero(two_sites)
            chunks.append(
                (
                    worked[second],
                    day[second] + rng.integers(0, 6, len(second)),
                    _period_labels(label, len(second)),
                    rate[second] * (days_worked[second] - first_part[second]),
                )
            )
        month = (month + timedelta(days=32)).replace(day=1)
    return _collect(chunks)


def _scholarship(rng, world, enrolments, start_day, end_day):
    chunks = []
    for year in _fiscal_years(start_day, end_day):
        label = schemes.fiscal_year_label(year)
        first, last = day_number(date(year, 10, 1)), day_number(date(year + 1, 4, 1))
        paid_mask = _alive_for(world, enrolments, first) & (rng.random(len(enrolments)) < 0.85)
        paid = enrolments[paid_mask]
        amount = world.enrolment_entitlement[paid].copy()
        amount[rng.random(len(paid)) < 0.1] *= 0.5
        day = rng.integers(first, last, len(paid))
        chunks.append((paid, day, _period_labels(label, len(paid)), amount))
    return _collect(chunks)


def _housing(rng, world, enrolments, start_day, end_day):
    unit = world.enrolment_entitlement[enrolments] / schemes.PMAY_G_INSTALMENT_SHARES[0]
    sanction = rng.integers(start_day - 300, end_day, len(enrolments))
    sanction = np.maximum(sanction, world.enrolment_day[enrolments] + 30)
    chunks = []
    for number, (low, high) in enumerate(((0, 30), (90, 180), (200, 360)), start=1):
        day = sanction + rng.integers(low, high, len(enrolments))
        fiscal = np.array([(d.year if d.month >= 4 else d.year - 1) for d in map(to_date, day)])
        names = {y: f"{schemes.fiscal_year_label(y)}/I{number}" for y in set(fiscal.tolist())}
        label = np.array([names[y] for y in fiscal.tolist()], object)
        share = schemes.PMAY_G_INSTALMENT_SHARES[number - 1]
        alive = _alive_for(world, enrolments, day)
        chunks.append((enrolments[alive], day[alive], label[alive], unit[alive] * share))
    return _collect(chunks)
