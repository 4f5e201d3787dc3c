"""Fill a database with a seeded synthetic year of scheme payments and labelled injected fraud."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import date

import numpy as np

from schemewatch import schemes, store
from schemewatch.errors import GenerationError
from schemewatch.freed_memory import give_large_blocks_back
from schemewatch.payments import LABELS, NO_AGENT, TYPOLOGIES, Payments
from schemewatch.population import ELDER, World, build_world
from schemewatch.schedule import day_number, normal_payments
from schemewatch.typologies import INJECTORS, Pool, row_numbers

DEFAULT_ANOMALY_RATE = 0.01
DEFAULT_END_DATE = date(2026, 10, 31)
PAYMENTS_PER_BENEFICIARY_GUESS = 6.0
WRITE_CHUNK = 100_000


@dataclass(frozen=True)
class GenerationSummary:
    """What a generator run wrote."""

    transactions: int
    beneficiaries: int
    payout_agents: int
    anomalies: dict[str, int]
    seconds: float


def typology_budgets(total_anomalies: int) -> dict[str, int]:
    """Split the anomaly budget evenly across typologies (remainder to the first ones)."""
    share, extra = divmod(total_anomalies, len(TYPOLOGIES))
    return {t: share + (1 if i < extra else 0) for i, t in enumerate(TYPOLOGIES)}


def build_payments(
    seed: int, transactions: int, anomaly_rate: float, end_date: date, days: int = 365
) -> tuple[World, Payments]:
    """The world and exactly `transactions` payments (honest and labelled fraud), in time order."""
    if transactions < 1:
        raise GenerationError("--transactions must be at least 1")
    if not 0 <= anomaly_rate <= 0.5:
        raise GenerationError("--anomaly-rate must be between 0 and 0.5")
    rng = np.random.default_rng(seed)
    end_day = day_number(end_date)
    start_day = end_day - days
    budgets = typology_budgets(round(transactions * anomaly_rate))
    world, honest = _honest_year(rng, transactions, start_day, end_day)
    untouched, injections = _inject(rng, world, honest, budgets, start_day, end_day)
    return world, _exactly(rng, transactions, honest, untouched, injections)


def _honest_year(rng, transactions: int, start_day: int, end_day: int) -> tuple[World, Payments]:
    """A world big enough that its honest year holds at least `transactions` payments."""
    population = max(30, int(transactions / PAYMENTS_PER_BENEFICIARY_GUESS * 1.2))
    for _attempt in range(6):
        world = build_world(rng, population, start_day)
        _honest_deaths(rng, world, start_day, end_day)
        honest = normal_payments(rng, world, start_day, end_day)
        if len(honest) >= transactions * 1.02 + 50:
            return world, honest
        population = int(population * 1.5 * (transactions + 50) / max(len(honest), 1)) + 10
    raise GenerationError(f"could not build a population for {transactions} transactions")


def _honest_deaths(rng, world: World, start_day: int, end_day: int) -> None:
    """About 1.5% of elderly beneficiaries die during the year; their payments then stop."""
    dies = (world.persona == ELDER) & (rng.random(world.size) < 0.015)
    world.death_day[dies] = rng.integers(start_day, end_day, dies.sum())


def _inject(rng, world: World, honest: Payments, budgets: dict, start_day: int, end_day: int):
    """Each typology's injection, and which honest rows are still untouched (a mask).

    The pool's lookups (hundreds of megabytes at 10 million payments) go with it, before the
    year is put together.
    """
    pool = Pool(
        honest,
        np.ones(len(honest), bool),
        start_day * schemes.DAY - schemes.IST_OFFSET_SECONDS,
        end_day * schemes.DAY - schemes.IST_OFFSET_SECONDS,
    )
    injections = [INJECTORS[t](rng, world, pool, budgets[t]) for t in TYPOLOGIES]
    return pool.free, injections


def _exactly(rng, transactions: int, honest: Payments, untouched, injections) -> Payments:
    """Injected rows, the honest rows they rely on, and enough other honest rows to total N, in
    time order. The honest year's columns are dropped as the year is put together."""
    injected = Payments.concat([i.rows for i in injections])
    kept = _kept_honest_rows(rng, transactions - len(injected), untouched, injections)
    return _in_time_order(honest, kept, injected)


def _kept_honest_rows(rng, count: int, untouched: np.ndarray, injections) -> np.ndarray:
    """`count` honest rows (ascending): those the injections rely on, and random untouched ones."""
    consumed = np.zeros(len(untouched), bool)
    for injection in injections:
        consumed[injection.consumed] = True
    required = ~untouched & ~consumed
    room = count - int(required.sum())
    optional = row_numbers(np.flatnonzero(untouched))  # the draw is the same, in half the room
    if room < 0 or room > len(optional):
        raise GenerationError("anomaly rate too high for this many transactions")
    keep = required
    keep[rng.choice(optional, size=room, replace=False)] = True
    return np.flatnonzero(keep)


def _in_time_order(honest: Payments, kept: np.ndarray, injected: Payments) -> Payments:
    """The kept honest rows and the injected rows in time order (stable: as Payments.concat of
    the two, then sorted_by_time), one column at a time, each honest column dropped once copied:
    the honest year is never held twice."""
    order = np.argsort(np.concatenate([honest.paid_at[kept], injected.paid_at]), kind="stable")
    columns = {}
    for field in fields(Payments):
        columns[field.name] = _moved_out(honest, kept, injected, field.name)[order]
    return Payments(**columns)


def _moved_out(honest: Payments, kept: np.ndarray, injected: Payments, name: str) -> np.ndarray:
    """One column of the kept honest rows then the injected rows; the honest column is dropped."""
    column = np.concatenate([getattr(honest, name)[kept], getattr(injected, name)])
    setattr(honest, name, None)
    return column


def generate(
    conn: sqlite3.Connection,
    *,
    transactions: int,
    seed: int,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    end_date: date = DEFAULT_END_DATE,
    progress=None,
) -> GenerationSummary:
    """Generate and store a synthetic year; refuses a database that already holds payments."""
    started = time.perf_counter()
    check_empty(conn)
    give_large_blocks_back()
    world, payments = build_payments(seed, transactions, anomaly_rate, end_date)
    # The payments' references are to the world written just before them, in the same commit.
    with (
        store.written_in_place(conn),
        store.without_foreign_key_lookups(conn),
        store.write_transaction(conn),
        store.bulk_load(conn),
    ):
        write_world(conn, world, end_day=day_number(end_date))
        write_payments(conn, world, payments, first_id=1, progress=progress)
        store.set_metadata(conn, "generator_seed", str(seed))
        store.set_metadata(conn, "generator_end_date", end_date.isoformat())
    return GenerationSummary(
        transactions=len(payments),
        beneficiaries=world.size,
        payout_agents=len(world.agent_ids),
        anomalies=store.typology_counts(conn),
        seconds=time.perf_counter() - started,
    )


def is_empty(conn: sqlite3.Connection) -> bool:
    """No transactions and no beneficiaries yet."""
    filled = store.count_rows(conn, store.TRANSACTIONS) or store.count_rows(
        conn, store.BENEFICIARIES
    )
    return not filled


def check_empty(conn: sqlite3.Connection) -> None:
    """The generator only fills a new, empty database."""
    if not is_empty(conn):
        raise GenerationError("the database already holds data; give a new --db path")


def _iso_days(days: np.ndarray) -> list:
    text = np.datetime_as_string(np.asarray(days, dtype="int64").astype("datetime64[D]"))
    return [None if d < 0 else t for d, t in zip(days.tolist(), text.tolist(), strict=True)]


def write_world(conn: sqlite3.Connection, world: World, end_day: int) -> None:
    """Store beneficiaries, enrolments and payout agents.

    A chunk of rows at a time: the Python rows of every beneficiary at once would take about
    half a gigabyte at 3 million payments.
    """
    for start in range(0, world.size, WRITE_CHUNK):
        write_beneficiaries(
            conn, world, np.arange(start, min(start + WRITE_CHUNK, world.size)), end_day
        )
    enrolments = len(world.enrolment_beneficiary)
    for start in range(0, enrolments, WRITE_CHUNK):
        write_enrolments(conn, world, np.arange(start, min(start + WRITE_CHUNK, enrolments)))
    write_agents(conn, world)


def write_beneficiaries(conn, world: World, index: np.ndarray, end_day: int) -> None:
    """Store some beneficiaries of the world (by index) in the registry."""
    districts, district = world.districts, world.district[index]
    death_day = world.death_day[index]
    deceased = (death_day >= 0) & (death_day < end_day)
    # Picked from the list: converting every account id to an array per chunk would be slow.
    accounts = [world.account_ids[i] for i in world.account[index].tolist()]
    store.insert_beneficiaries(
        conn,
        zip(
            world.beneficiary_ids[index].tolist(),
            districts.state[district].tolist(),
            districts.name[district].tolist(),
            world.home_lat[index].tolist(),
            world.home_lon[index].tolist(),
            accounts,
            [mask_account(a) for a in accounts],
            world.phone_hash[index].tolist(),
            np.array(world.operator_ids)[world.operator[index]].tolist(),
            _iso_days(world.enrolled_day[index]),
            np.where(deceased, "deceased", "active").tolist(),
            _iso_days(np.where(deceased, death_day, -1)),
            [store.now()] * len(index),
            strict=True,
        ),
    )


def write_enrolments(conn, world: World, index: np.ndarray) -> None:
    """Store some enrolments of the world (by index)."""
    store.insert_enrolments(
        conn,
        zip(
            world.beneficiary_ids[world.enrolment_beneficiary[index]].tolist(),
            np.array(schemes.SCHEME_CODES)[world.enrolment_scheme[index]].tolist(),
            np.round(world.enrolment_entitlement[index], 2).tolist(),
            _iso_days(world.enrolment_day[index]),
            strict=True,
        ),
    )


def write_agents(conn, world: World) -> None:
    """Store the payout agents."""
    districts = world.districts
    store.insert_agents(
        conn,
        zip(
            world.agent_ids.tolist(),
            districts.state[world.agent_district].tolist(),
            districts.name[world.agent_district].tolist(),
            world.agent_lat.tolist(),
            world.agent_lon.tolist(),
            world.agent_market_weekday.tolist(),
            strict=True,
        ),
    )


def mask_account(account_id: str) -> str:
    """Only the last four characters of an account reference are ever shown."""
    return "X" * max(0, len(account_id) - 4) + account_id[-4:]


# Names picked from arrays of Python strings share one string per name: a new string per row
# and column was a third of the memory of a chunk's rows (100,000 rows: 56 -> 34 MB).
SCHEME_NAMES = np.array(schemes.SCHEME_CODES, object)
CHANNEL_NAMES = np.array(schemes.CHANNELS, object)


def payment_rows(world: World, payments: Payments, first_id: int) -> tuple[list, list]:
    """Store-ready transaction tuples and ground-truth tuples for a batch of payments."""
    n = len(payments)
    ids = list(range(first_id, first_id + n))
    agent_ids = np.append(world.agent_ids, None).astype(object)
    district = world.district[payments.beneficiary]
    columns = (
        ids,
        [None] * n,
        world.beneficiary_ids[payments.beneficiary].tolist(),
        SCHEME_NAMES[payments.scheme].tolist(),
        payments.period.tolist(),
        payments.amount.tolist(),
        payments.paid_at.tolist(),
        payments.latitude.tolist(),
        payments.longitude.tolist(),
        [world.account_ids[i] for i in payments.account.tolist()],  # not the whole list as array
        agent_ids[
            np.where(payments.agent == NO_AGENT, len(world.agent_ids), payments.agent)
        ].tolist(),
        CHANNEL_NAMES[payments.channel].tolist(),
        world.districts.state.astype(object)[district].tolist(),
        world.districts.name.astype(object)[district].tolist(),
        [store.now()] * n,
    )
    labelled = np.flatnonzero(payments.label > 0)
    truth = [
        (ids[i], LABELS[payments.label[i]], f"G{payments.group[i]:06d}") for i in labelled.tolist()
    ]
    return list(zip(*columns, strict=True)), truth


def write_payments(conn, world: World, payments: Payments, first_id: int, progress=None) -> None:
    """Store payments and their labels, in chunks, inside the caller's write transaction.

    A helper thread builds the next chunk's rows while SQLite stores this one (SQLite lets go
    of the interpreter while it works).
    """
    chunks = (
        payments.take(slice(s, s + WRITE_CHUNK)) for s in range(0, len(payments), WRITE_CHUNK)
    )

    def build(chunk, start):
        return len(chunk), *payment_rows(world, chunk, start)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rows") as helper:
        pending, start = None, first_id
        for chunk in chunks:
            following = helper.submit(build, chunk, start)
            start += len(chunk)
            if pending is not None:
                _store_rows(conn, *pending.result(), progress)
            pending = following
        if pending is not None:
            _store_rows(conn, *pending.result(), progress)


def _store_rows(conn, count: int, rows: list, truth: list, progress) -> None:
    store.insert_transactions(conn, rows)
    store.insert_ground_truth(conn, truth)
    if progress is not None:
        progress(count)
