"""A live feed of new payments for existing beneficiaries, with the same fraud typologies injected.

Each honest payment settles an enrolment's instalment for the current period (the feed never pays
the same instalment twice unless it is injecting a duplicate). `LiveFeed.tick()` emits one batch;
`run()` only paces ticks, prints running counts and stops cleanly on Ctrl-C or at `--duration`.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from schemewatch import generator, schemes, store
from schemewatch.errors import FeedExhausted
from schemewatch.geography import haversine_km
from schemewatch.live_world import world_from_registry
from schemewatch.payments import LABELS, NO_AGENT, Payments
from schemewatch.schedule import BANK, counter_open, settle
from schemewatch.typologies import (
    FAMILIES,
    count_between,
    enrol_ghosts,
    inflate_amounts,
    log_uniform,
    off_cycle_period,
    send_far_away,
)

REST_SECONDS = 6 * 3600
AGENT_SECONDS_PER_PAYOUT = (180, 480)
LIVE_SCHEMES = (schemes.PM_KISAN, schemes.OLD_AGE_PENSION, schemes.MGNREGA, schemes.SCHOLARSHIP)
DAY = schemes.DAY


@dataclass
class FeedTotals:
    """Running counts of what the feed has written."""

    transactions: int = 0
    anomalies: int = 0
    by_typology: Counter = field(default_factory=Counter)

    def add(self, payments: Payments) -> None:
        labels = payments.label[payments.label > 0]
        self.transactions += len(payments)
        self.anomalies += len(labels)
        self.by_typology.update(LABELS[i] for i in labels.tolist())


class LiveFeed:
    """Pays the current period's instalments of unpaid enrolments, a batch per tick."""

    def __init__(
        self,
        conn,
        *,
        anomaly_rate: float = 0.01,
        seed: int | None = None,
        clock=store.now,
        on_busy=None,
    ):
        self.conn = conn
        self.on_busy = on_busy  # hears "busy; trying again" while another process holds the lock
        self.rng = np.random.default_rng(seed)
        self.clock = clock
        self.anomaly_rate = anomaly_rate
        self.world = world_from_registry(store.load_registry(conn), self.rng)
        if len(self.world.enrolment_scheme) == 0:
            raise FeedExhausted("the database has no enrolled beneficiaries; generate one first")
        self.totals = FeedTotals()
        self.anomaly_credit = 0.0
        self.owed_rows = 0
        self.next_group = 1 + store.max_group_number(conn)
        self.periods: dict[str, str] = {}
        self.last_paid = np.full(self.world.size + 100_000, -np.inf)
        self.agent_free_at = np.zeros(len(self.world.agent_ids))
        # Injected rows timed after the current tick, emitted when their time comes.
        self.scheduled = Payments.empty()
        # beneficiary -> (typology, group, until, account or None): their later payments belong
        # to a flowing ring or a ghost group.
        self.continuing: dict[int, tuple] = {}
        self._positions: dict | None = None  # beneficiary/account/agent id -> World index
        self._refresh_pools(int(self.clock()))

    # pools -----------------------------------------------------------------------------------
    def _refresh_pools(self, now: int) -> None:
        """Unpaid living enrolments for each live scheme's current period, in random order."""
        self.periods = {code: schemes.period_for_payment(code, now) for code in LIVE_SCHEMES}
        paid = store.paid_in_periods(self.conn, self.periods)
        world = self.world
        codes = np.array(schemes.SCHEME_CODES)[world.enrolment_scheme]
        ids = world.beneficiary_ids[world.enrolment_beneficiary]
        live = np.isin(codes, LIVE_SCHEMES) & (world.death_day[world.enrolment_beneficiary] < 0)
        already = np.array(
            [(b, s) in paid for b, s in zip(ids.tolist(), codes.tolist(), strict=True)], bool
        )
        self.pool = self.rng.permutation(np.flatnonzero(live & ~already))
        self.used = np.zeros(len(self.pool), bool)
        self.paid_enrolments = list(np.flatnonzero(live & already))

    def _take(self, count: int, where=None) -> np.ndarray:
        """Up to `count` unpaid enrolments (optionally only those where `where(enrolments)`).

        Honest picks skip beneficiaries the feed paid in the last few hours: real payments to
        one person do not arrive minutes apart, however fast the feed runs.
        """
        if where is None:
            open_slots = np.flatnonzero(~self.used)
            # The first open slots usually hold enough rested people (the pool is shuffled), and
            # then the choice is the same as over the whole pool, which at millions of
            # enrolments took most of a tick.
            chosen, enough = self._rested_first(open_slots[: max(8 * count, 4_096)], count)
            if not enough:
                chosen, _ = self._rested_first(open_slots, count)
        else:
            open_slots = np.flatnonzero(~self.used)
            chosen = open_slots[where(self.pool[open_slots])][:count]
        self.used[chosen] = True
        enrolments = self.pool[chosen]
        self.paid_enrolments.extend(enrolments.tolist())
        self.last_paid[self.world.enrolment_beneficiary[enrolments]] = self.clock()
        return enrolments

    def _rested_first(self, slots: np.ndarray, count: int) -> tuple[np.ndarray, bool]:
        """Up to `count` of the slots, one per beneficiary, rested beneficiaries first (the
        others only once nobody else is left), in pool order; and whether `count` rested ones
        were found."""
        people = self.world.enrolment_beneficiary[self.pool[slots]]
        is_ready = self.last_paid[people] < self.clock() - REST_SECONDS
        ordered = np.concatenate([slots[is_ready], slots[~is_ready]])
        people = np.concatenate([people[is_ready], people[~is_ready]])
        first = np.sort(np.unique(people, return_index=True)[1])
        chosen = ordered[first][:count]
        return chosen, int((first < is_ready.sum()).sum()) >= count

    # payments ------------------------------------------------------------------------------
    def _pay(self, enrolments: np.ndarray, now: int, periods=None) -> Payments:
        """Honest-looking payments of these enrolments' current instalments, made now."""
        world, rng = self.world, self.rng
        scheme = world.enrolment_scheme[enrolments]
        codes = np.array(schemes.SCHEME_CODES)[scheme]
        if periods is None:
            periods = np.array(
                [self.periods.get(c) or schemes.period_for_payment(c, now) for c in codes], object
            )
        amount = world.enrolment_entitlement[enrolments].copy()
        wages = codes == schemes.MGNREGA
        amount[wages] = (
            amount[wages] / schemes.MGNREGA_DAYS_PER_MUSTER_ROLL * rng.integers(2, 15, wages.sum())
        )
        today = (now + schemes.IST_OFFSET_SECONDS) // DAY
        rows = settle(
            rng,
            world,
            enrolments,
            np.full(len(enrolments), today),
            np.asarray(periods, object),
            amount,
        )
        rows.paid_at[:] = now
        return rows

    def _at_free_agents(self, rows: Payments, now: int) -> Payments:
        """An agent pays one person at a time, in counter hours; when theirs is busy or closed
        (at night, as in the generated year), the money goes to the bank."""
        world = self.world
        is_open = bool(counter_open(now))
        for i in np.flatnonzero(rows.agent != NO_AGENT):
            agent = rows.agent[i]
            if is_open and self.agent_free_at[agent] <= now:
                self.agent_free_at[agent] = now + self.rng.integers(*AGENT_SECONDS_PER_PAYOUT)
                continue
            beneficiary = rows.beneficiary[i]
            rows.agent[i], rows.channel[i] = NO_AGENT, BANK
            rows.latitude[i], rows.longitude[i] = (
                world.home_lat[beneficiary],
                world.home_lon[beneficiary],
            )
        return rows

    def _group(self) -> int:
        self.next_group += 1
        return self.next_group - 1

    def _inject(self, typology: str, now: int, writes: dict) -> Payments | None:
        """One group of labelled fraud drawn from the typology's family (`typologies.FAMILIES`,
        as the generator draws them); rows timed later than now wait in `scheduled`, and
        registry changes go into `writes`. Returns the group's rows (all of them, due or not)."""
        inject = getattr(self, f"_inject_{typology}", None)
        if inject is None:
            raise ValueError(typology)
        group = self.next_group
        rows = inject(now, writes)
        if rows is None or len(rows) == 0:
            return None
        rows.mark(typology, self._group())
        assert group == rows.group[0]  # `continuing` entries made by inject use this group
        return rows

    def _one_payment(self, now: int, periods=None) -> Payments | None:
        enrolment = self._take(1)
        return self._pay(enrolment, now, periods) if len(enrolment) else None

    def _inject_over_entitlement(self, now: int, writes: dict) -> Payments | None:
        rows = self._one_payment(now)
        if rows is not None:
            inflate_amounts(self.rng, self.world, rows)
        return rows

    def _inject_geo_mismatch(self, now: int, writes: dict) -> Payments | None:
        if len(self.world.agent_ids) == 0:
            return None
        rows = self._one_payment(now)
        if rows is not None:
            send_far_away(self.rng, self.world, rows)
        return rows

    def _inject_off_cycle(self, now: int, writes: dict) -> Payments | None:
        enrolment = self._take(1)
        if len(enrolment) == 0:
            return None
        scheme = schemes.SCHEME_CODES[self.world.enrolment_scheme[enrolment[0]]]
        return self._pay(enrolment, now, [off_cycle_period(self.rng, scheme, now)])

    def _inject_payment_after_death(self, now: int, writes: dict) -> Payments | None:
        """Paid now for a period that began after the death, 10-150 days after it."""
        rows = self._one_payment(now)
        if rows is None:
            return None
        scheme = schemes.SCHEME_CODES[rows.scheme[0]]
        began = schemes.period_start(scheme, str(rows.period[0]))
        low, high = FAMILIES["payment_after_death"]["days_dead_before"]
        low = max(low, (now - began) // DAY + 2)  # the death came before the period began
        died = now // DAY - int(self.rng.integers(low, max(high, low + 1)))
        beneficiary = int(rows.beneficiary[0])
        self.world.death_day[beneficiary] = died
        day_of_death = date.fromordinal(date(1970, 1, 1).toordinal() + died).isoformat()
        writes["deaths"].append((self.world.beneficiary_ids[beneficiary], day_of_death))
        return rows

    def _inject_duplicate_instalment(self, now: int, writes: dict) -> Payments | None:
        """A copy, paid now, of an honest payment made minutes to weeks ago."""
        low, high = FAMILIES["duplicate_instalment"]["seconds_apart"]
        delay = int(log_uniform(self.rng, low, high))
        original = store.honest_payment_between(self.conn, now - int(high), now - delay)
        if original is None:
            return None
        return self._copy_of(original, now)

    def _copy_of(self, row, now: int) -> Payments | None:
        """A stored payment as a Payments row paid at `now` (None if its people are unknown)."""
        world = self.world
        if self._positions is None:
            self._positions = {
                "beneficiary": {b: i for i, b in enumerate(world.beneficiary_ids.tolist())},
                "account": {a: i for i, a in enumerate(world.account_ids)},
                "agent": {a: i for i, a in enumerate(world.agent_ids.tolist())},
            }
        beneficiary = self._positions["beneficiary"].get(row["beneficiary_id"])
        if beneficiary is None:
            return None
        account = self._positions["account"].get(row["account_id"], world.account[beneficiary])
        agent = self._positions["agent"].get(row["agent_id"], NO_AGENT)
        return Payments(
            beneficiary=np.array([beneficiary], np.int64),
            scheme=np.array([schemes.SCHEME_CODES.index(row["scheme"])], np.int8),
            period=np.array([row["instalment_period"]], object),
            amount=np.array([row["amount"]], float),
            paid_at=np.array([now], np.int64),
            latitude=np.array([row["latitude"]], float),
            longitude=np.array([row["longitude"]], float),
            account=np.array([account], np.int64),
            agent=np.array([agent], np.int64),
            channel=np.array([schemes.CHANNELS.index(row["channel"])], np.int8),
            label=np.zeros(1, np.int8),
            group=np.full(1, -1, np.int64),
        )

    def _inject_burst(self, now: int, writes: dict) -> Payments | None:
        """3-15 payments to one beneficiary over minutes to a day, posing as arrears."""
        enrolment = self._take(1)
        if len(enrolment) == 0:
            return None
        family = FAMILIES["burst"]
        size = count_between(self.rng, *family["payments"])
        scheme = schemes.SCHEME_CODES[self.world.enrolment_scheme[enrolment[0]]]
        periods = [schemes.period_for_payment(scheme, now - k * 31 * DAY) for k in range(size)]
        rows = self._pay(np.repeat(enrolment, size), now, periods)
        span = log_uniform(self.rng, *family["seconds_spanned"])
        rows.paid_at[:] = now + np.sort(self.rng.uniform(0, span, size)).astype(np.int64)
        rows.paid_at[0] = now
        return rows

    def _inject_shared_account_ring(self, now: int, writes: dict) -> Payments | None:
        """3-60 people of one district paid into one new account: this period's payments swept
        in over minutes to weeks, or (half the rings) every payment for weeks to months."""
        family = FAMILIES["shared_account_ring"]
        seed = self._take(1)
        if len(seed) == 0:
            return None
        world, rng = self.world, self.rng
        district = world.district[world.enrolment_beneficiary[seed[0]]]
        size = count_between(rng, *family["members"])
        members = self._take(
            size - 1, where=lambda e: world.district[world.enrolment_beneficiary[e]] == district
        )
        rows = self._pay(np.r_[seed, members], now)
        rows.account[:] = world.new_account()
        if rng.random() < 0.5:
            span = log_uniform(rng, *family["seconds_spanned"])
            rows.paid_at[:] = now + np.sort(rng.uniform(0, span, len(rows))).astype(np.int64)
            rows.paid_at[0] = now
        else:  # later payments of the members keep flowing into the account
            until = now + int(log_uniform(rng, *family["days_flowing"]) * DAY)
            for beneficiary in np.unique(rows.beneficiary).tolist():
                self.continuing[beneficiary] = (
                    "shared_account_ring",
                    self.next_group,
                    until,
                    int(rows.account[0]),
                )
        return rows

    def _inject_agent_collusion(self, now: int, writes: dict) -> Payments | None:
        """One agent paying out for 5-40 people seconds to minutes apart, living nearby or 200+
        km away (by day or by night: whatever the time is now)."""
        world, rng = self.world, self.rng
        if len(world.agent_ids) == 0:
            return None
        family = FAMILIES["agent_collusion"]
        agent = int(rng.integers(0, len(world.agent_ids)))
        far = rng.random() < 0.5

        def living_as_chosen(e):
            b = world.enrolment_beneficiary[e]
            d = haversine_km(
                world.home_lat[b], world.home_lon[b], world.agent_lat[agent], world.agent_lon[agent]
            )
            return d > family["far_km"] if far else d < 150

        size = count_between(rng, *family["payouts"])
        enrolments = self._take(size, where=living_as_chosen)
        if len(enrolments) == 0:
            return None
        rows = self._pay(enrolments, now)
        gap = log_uniform(rng, *family["seconds_apart"])
        steps = rng.uniform(0.5 * gap, 1.5 * gap, len(rows))
        rows.paid_at[:] = now + np.r_[0, np.cumsum(steps)[:-1]].astype(np.int64)
        rows.agent[:], rows.channel[:] = agent, schemes.CHANNELS.index("AEPS")
        rows.latitude[:], rows.longitude[:] = world.agent_lat[agent], world.agent_lon[agent]
        return rows

    def _inject_ghost_beneficiary(self, now: int, writes: dict) -> Payments | None:
        """3-60 ghosts enrolled by one operator over 1-30 days, paid now and for 1-6 months."""
        world, rng = self.world, self.rng
        family = FAMILIES["ghost_beneficiary"]
        size = count_between(rng, *family["ghosts"])
        span = count_between(rng, *family["enrolment_days"])
        first_person = world.size
        new = enrol_ghosts(rng, world, size, (now // DAY) - span - int(rng.integers(30, 90)), span)
        writes["people"].append(np.arange(first_person, world.size))
        writes["enrolments"].append(new)
        months = count_between(rng, *family["months_paid"])
        for beneficiary in range(first_person, world.size):
            self.continuing[beneficiary] = (
                "ghost_beneficiary",
                self.next_group,
                now + months * 30 * DAY,
                None,
            )
        return self._pay(new, now)

    def _label_continuing(self, rows: Payments, now: int) -> Payments:
        """Later payments of a flowing ring's members or of ghosts still being paid carry the
        group's label (and the ring's account); ghosts past their months are not paid at all."""
        keep = np.ones(len(rows), bool)
        for i, beneficiary in enumerate(rows.beneficiary.tolist()):
            if beneficiary not in self.continuing:
                continue
            typology, group, until, account = self.continuing[beneficiary]
            if now >= until:
                keep[i] = typology != "ghost_beneficiary"
                continue
            rows.label[i] = LABELS.index(typology)
            rows.group[i] = group
            if account is not None:
                rows.account[i] = account
        return rows.take(keep)

    def tick(self, count: int) -> Payments:
        """Write about `count` new payments (honest, injected and injected earlier but due now)
        in one transaction."""
        now = int(self.clock())
        if {c: schemes.period_for_payment(c, now) for c in LIVE_SCHEMES} != self.periods:
            self._refresh_pools(now)
        writes = {"people": [], "enrolments": [], "deaths": []}
        parts = [self._due(now)]
        self.anomaly_credit += count * self.anomaly_rate
        typologies = LABELS[1:]
        while self.anomaly_credit >= 1:
            rows = self._inject(typologies[self.rng.integers(0, len(typologies))], now, writes)
            if rows is not None and len(rows):
                self.anomaly_credit -= len(rows)
                later = rows.paid_at > now
                self.scheduled = Payments.concat([self.scheduled, rows.take(later)])
                parts.append(rows.take(~later))
        injected = sum(len(p) for p in parts)
        honest = count - injected - self.owed_rows
        self.owed_rows = max(0, -honest)
        if honest > 0:
            enrolments = self._take(honest)
            if len(enrolments) == 0 and injected == 0:
                raise FeedExhausted(
                    "every enrolled beneficiary has been paid for the current period; "
                    f"stopped after {self.totals.transactions:,} transactions"
                )
            if len(enrolments):
                paid = self._label_continuing(
                    self._at_free_agents(self._pay(enrolments, now), now), now
                )
                self.anomaly_credit -= int((paid.label > 0).sum())
                parts.append(paid)
        batch = Payments.concat(parts).sorted_by_time()
        # Busy past the timeout: the same batch again (the failed try wrote nothing), not lost.
        store.retry_while_busy(lambda: self._write(batch, writes), self.on_busy)
        self.totals.add(batch)
        return batch

    def _due(self, now: int) -> Payments:
        """Scheduled rows whose time has come, taken out of the schedule."""
        due = self.scheduled.paid_at <= now
        taken, self.scheduled = self.scheduled.take(due), self.scheduled.take(~due)
        return taken

    def _write(self, batch: Payments, writes: dict) -> None:
        with store.write_transaction(self.conn):
            for people in writes["people"]:
                self._renumber_if_taken(people)
                generator.write_beneficiaries(self.conn, self.world, people, end_day=10**9)
            for enrolments in writes["enrolments"]:
                generator.write_enrolments(self.conn, self.world, enrolments)
            for beneficiary_id, died in writes["deaths"]:
                store.mark_deceased(self.conn, str(beneficiary_id), died)
            if len(batch):
                first_id = store.next_transaction_id(self.conn)
                generator.write_payments(self.conn, self.world, batch, first_id)

    def _renumber_if_taken(self, people: np.ndarray) -> None:
        """New ghosts are numbered after the registry this feed read; another feed may have
        enrolled people since. Then they take numbers past the registry's highest instead."""
        ids = self.world.beneficiary_ids[people].tolist()
        if not store.registered_beneficiaries(self.conn, ids):
            return
        first = store.highest_beneficiary_number(self.conn) + 1
        self.world.beneficiary_ids[people] = [f"B{n:08d}" for n in range(first, first + len(ids))]
        self._positions = None  # id -> index, rebuilt when next needed


class _StopRequested(Exception):
    pass


def run(
    db_path: Path,
    *,
    rate: float,
    duration: float | None = None,
    anomaly_rate: float = 0.01,
    seed: int | None = None,
    report=None,
    report_every: float = 5.0,
    busy_timeout_ms: int = 10_000,
) -> FeedTotals:
    """Emit `rate` payments per second until `duration` passes, Ctrl-C, SIGTERM or exhaustion."""
    conn = store.open_database(db_path, busy_timeout_ms=busy_timeout_ms)
    feed = LiveFeed(conn, anomaly_rate=anomaly_rate, seed=seed, on_busy=report)
    tick_seconds = max(0.05, min(1.0, 1.0 / rate)) if rate < 20 else 0.1
    started = time.monotonic()
    emitted, last_report = 0, started
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        while duration is None or time.monotonic() - started < duration:
            due = int(rate * (time.monotonic() - started)) - emitted
            if due > 0:
                feed.tick(due)
                emitted += due
            if report and time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                report(_running_line(feed.totals, last_report - started))
            time.sleep(tick_seconds)
        final = int(rate * duration) - emitted if duration is not None else 0
        if final > 0:
            feed.tick(final)
    except (KeyboardInterrupt, _StopRequested):
        pass
    except FeedExhausted as exc:
        if report:
            report(str(exc))
    finally:
        signal.signal(signal.SIGTERM, previous)
        conn.close()
    if report:
        report(_running_line(feed.totals, time.monotonic() - started) + " (stopped)")
    return feed.totals


def _raise_stop(signum, frame):
    raise _StopRequested()


def _running_line(totals: FeedTotals, elapsed: float) -> str:
    return (
        f"{elapsed:7.1f} s  {totals.transactions:>9,} transactions  "
        f"{totals.transactions / max(elapsed, 1e-9):8.1f}/s  {totals.anomalies:>6,} anomalies"
    )
