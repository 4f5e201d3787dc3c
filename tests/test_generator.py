import hashlib
import sqlite3
import subprocess
from dataclasses import fields
from datetime import date

import numpy as np
import pytest
from conftest import PYTHON, ROOT

from schemewatch import generator, schemes, store
from schemewatch.errors import GenerationError
from schemewatch.geography import haversine_km, load_districts, on_land
from schemewatch.payments import BEHAVIOURAL_TYPOLOGIES, INDEX, LABELS, TYPOLOGIES, Payments
from schemewatch.schedule import _concat_in_time_order

pytestmark = pytest.mark.both_engines


def _fingerprint(world, payments) -> str:
    digest = hashlib.sha256()
    for name in ("beneficiary", "scheme", "amount", "paid_at", "latitude", "account", "agent"):
        digest.update(getattr(payments, name).tobytes())
    digest.update(payments.label.tobytes())
    digest.update("|".join(payments.period.tolist()).encode())
    digest.update(world.phone_hash.tobytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_data_and_another_seed_does_not():
    first = _fingerprint(*generator.build_payments(11, 3_000, 0.01, date(2026, 3, 31)))
    again = _fingerprint(*generator.build_payments(11, 3_000, 0.01, date(2026, 3, 31)))
    other = _fingerprint(*generator.build_payments(12, 3_000, 0.01, date(2026, 3, 31)))
    assert first == again
    assert first != other


@pytest.mark.parametrize("count", [1, 50, 2_345])
def test_exactly_the_requested_number_of_transactions(count):
    _, payments = generator.build_payments(3, count, 0.01, date(2026, 3, 31))
    assert len(payments) == count


def test_every_typology_is_present_and_labelled_at_the_requested_rate(conn):
    counts = store.typology_counts(conn)
    assert set(counts) == set(TYPOLOGIES)
    total = store.count_rows(conn, store.TRANSACTIONS)
    assert total == 6_000
    assert sum(counts.values()) == pytest.approx(0.02 * total, rel=0.05)
    groups = conn.execute("SELECT COUNT(*) FROM ground_truth WHERE group_id NOT LIKE 'G%'")
    assert groups.fetchone()[0] == 0


def _amounts(conn, scheme, labelled: bool):
    sql = (
        "SELECT t.amount FROM transactions t LEFT JOIN ground_truth g USING (transaction_id) "
        f"WHERE t.scheme = ? AND g.typology IS {'NOT ' if labelled else ''}NULL"
    )
    return np.array([r[0] for r in conn.execute(sql, (scheme,))])


@pytest.mark.parametrize("scheme", schemes.SCHEME_CODES)
def test_behavioural_typologies_pay_amounts_inside_the_normal_range(conn, scheme):
    normal = _amounts(conn, scheme, labelled=False)
    placeholders = ", ".join("?" for _ in BEHAVIOURAL_TYPOLOGIES)
    behavioural = np.array(
        [
            r[0]
            for r in conn.execute(
                "SELECT t.amount FROM transactions t JOIN ground_truth g USING (transaction_id) "
                f"WHERE t.scheme = ? AND g.typology IN ({placeholders})",
                (scheme, *BEHAVIOURAL_TYPOLOGIES),
            )
        ]
    )
    if len(behavioural):
        assert behavioural.min() >= normal.min()
        assert behavioural.max() <= normal.max()


def test_over_entitlement_pays_more_than_the_entitlement(conn):
    rows = conn.execute(
        "SELECT t.amount, e.entitlement FROM transactions t "
        "JOIN ground_truth g USING (transaction_id) "
        "JOIN enrolments e ON e.beneficiary_id = t.beneficiary_id AND e.scheme = t.scheme "
        "WHERE g.typology = 'over_entitlement'"
    ).fetchall()
    assert rows and all(amount > entitlement for amount, entitlement in rows)


def test_homes_and_payouts_are_on_indian_land(conn):
    homes = np.array(
        conn.execute("SELECT home_latitude, home_longitude FROM beneficiaries").fetchall()
    )
    payouts = np.array(conn.execute("SELECT latitude, longitude FROM transactions").fetchall())
    assert on_land(homes[:, 0], homes[:, 1]).all()
    assert on_land(payouts[:, 0], payouts[:, 1]).all()


def test_district_reference_points_are_on_land_and_named():
    districts = load_districts()
    assert len(districts) >= 200
    assert on_land(districts.latitude, districts.longitude).all()
    assert len(set(districts.state.tolist())) >= 33


def test_every_instalment_period_is_valid_for_its_scheme(conn):
    for scheme, period in conn.execute(
        "SELECT DISTINCT scheme, instalment_period FROM transactions"
    ):
        assert schemes.is_valid_period(scheme, period), (scheme, period)


def test_honest_payments_are_rarely_off_cycle_and_off_cycle_fraud_always_is(conn):
    rows = conn.execute(
        "SELECT t.scheme, t.instalment_period, t.paid_at, g.typology FROM transactions t "
        "LEFT JOIN ground_truth g USING (transaction_id)"
    ).fetchall()
    honest = [schemes.is_off_cycle(s, p, t) for s, p, t, label in rows if label is None]
    fraud = [schemes.is_off_cycle(s, p, t) for s, p, t, label in rows if label == "off_cycle"]
    assert np.mean(honest) < 0.02
    assert all(fraud)


def test_geo_mismatch_payouts_are_far_from_home(conn):
    rows = np.array(
        conn.execute(
            "SELECT t.latitude, t.longitude, b.home_latitude, b.home_longitude "
            "FROM transactions t JOIN ground_truth g USING (transaction_id) "
            "JOIN beneficiaries b USING (beneficiary_id) WHERE g.typology = 'geo_mismatch'"
        ).fetchall()
    )
    assert (haversine_km(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]) > 290).all()


def test_payments_after_death_come_after_the_registered_death(conn):
    rows = conn.execute(
        "SELECT t.paid_at, b.date_of_death FROM transactions t "
        "JOIN ground_truth g USING (transaction_id) JOIN beneficiaries b USING (beneficiary_id) "
        "WHERE g.typology = 'payment_after_death'"
    ).fetchall()
    assert rows
    for paid_at, died in rows:
        assert died is not None
        assert paid_at > (date.fromisoformat(died) - date(1970, 1, 1)).days * 86_400 - 19_800


def test_shared_account_rings_pay_many_beneficiaries_into_one_account(conn):
    sizes = conn.execute(
        "SELECT COUNT(DISTINCT t.beneficiary_id) FROM transactions t "
        "JOIN ground_truth g USING (transaction_id) WHERE g.typology = 'shared_account_ring' "
        "GROUP BY t.account_id"
    ).fetchall()
    assert max(s[0] for s in sizes) >= 5


def test_every_reference_of_a_generated_database_resolves(conn):
    """The generator writes without per-row foreign-key lookups: its references must hold."""
    unresolved = {
        "payment's beneficiary": f"SELECT COUNT(*) FROM {store.TRANSACTIONS} t "
        f"WHERE NOT EXISTS (SELECT 1 FROM {store.BENEFICIARIES} b "
        "WHERE b.beneficiary_id = t.beneficiary_id)",
        "enrolment's beneficiary": f"SELECT COUNT(*) FROM {store.ENROLMENTS} e "
        f"WHERE NOT EXISTS (SELECT 1 FROM {store.BENEFICIARIES} b "
        "WHERE b.beneficiary_id = e.beneficiary_id)",
        "label's payment": f"SELECT COUNT(*) FROM {store.GROUND_TRUTH} g "
        f"WHERE NOT EXISTS (SELECT 1 FROM {store.TRANSACTIONS} t "
        "WHERE t.transaction_id = g.transaction_id)",
    }
    for what, sql in unresolved.items():
        assert conn.execute(sql).fetchone()[0] == 0, what
    assert conn.execute(f"SELECT COUNT(*) FROM {store.GROUND_TRUTH}").fetchone()[0] > 0


def test_the_generator_leaves_wal_foreign_keys_and_every_index_in_place(empty_conn):
    generator.generate(empty_conn, transactions=500, seed=2)
    if not store.is_postgres(empty_conn):
        assert empty_conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert empty_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cache = empty_conn.execute("PRAGMA cache_size").fetchone()[0]
        assert cache == -store.WRITER_CACHE_KIB  # the index builds' small cache was put back
        names = {
            row[0]
            for row in empty_conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        for wanted in (
            "idx_transactions_beneficiary_paid_at",
            "idx_beneficiaries_phone",
            "idx_beneficiaries_operator",
            "idx_beneficiaries_state_district",
        ):
            assert wanted in names
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            empty_conn.execute(
                f"INSERT INTO {store.ENROLMENTS} VALUES ('nobody', 'PM_KISAN', 1.0, NULL)"
            )


def test_generator_refuses_a_database_that_already_has_data(conn):
    with pytest.raises(GenerationError, match="already holds data"):
        generator.generate(conn, transactions=10, seed=1)


def test_cli_generates_and_prints_a_summary(tmp_path):
    db = tmp_path / "cli.db"
    result = subprocess.run(
        [PYTHON, "generate_database.py", "--transactions", "2000", "--seed", "5", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Wrote 2,000 transactions" in result.stdout
    for typology in TYPOLOGIES:
        assert typology in result.stdout
    check = store.connect(db, readonly=True)
    assert store.count_rows(check, store.TRANSACTIONS) == 2000


def test_cli_refuses_a_used_database_with_one_clear_line(generated_db):
    result = subprocess.run(
        [PYTHON, "generate_database.py", "-n", "10", "--db", str(generated_db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error:")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def families():
    """A year big enough that every family shows its range (built in memory, not stored)."""
    return generator.build_payments(5, 120_000, 0.04, date(2026, 3, 31))


def _groups(payments, typology):
    label = LABELS.index(typology)
    rows = np.flatnonzero(payments.label == label)
    return {g: rows[payments.group[rows] == g] for g in np.unique(payments.group[rows])}


def test_ring_sizes_span_a_handful_to_dozens(families):
    _, payments = families
    sizes = [
        len(np.unique(payments.beneficiary[rows]))
        for rows in _groups(payments, "shared_account_ring").values()
    ]
    assert min(sizes) <= 5 and max(sizes) >= 20


def test_ring_payments_span_minutes_to_weeks(families):
    _, payments = families
    spans = [
        np.ptp(payments.paid_at[rows]) for rows in _groups(payments, "shared_account_ring").values()
    ]
    assert min(spans) < 2 * 86_400 and max(spans) > 14 * 86_400


def test_bursts_of_three_and_bursts_over_hours_exist(families):
    _, payments = families
    groups = _groups(payments, "burst").values()
    assert min(len(rows) for rows in groups) == 3  # never fewer
    spans = [np.ptp(payments.paid_at[rows]) for rows in groups]
    assert min(spans) < 3_600 and max(spans) > 6 * 3_600


def test_agent_sweeps_happen_by_day_and_by_night_near_and_far(families):
    world, payments = families
    kinds = set()
    for rows in _groups(payments, "agent_collusion").values():
        hour = schemes.local_hours(payments.paid_at[rows[:1]])[0]
        home = payments.beneficiary[rows]
        agent = payments.agent[rows[0]]
        km = haversine_km(
            world.home_lat[home],
            world.home_lon[home],
            world.agent_lat[agent],
            world.agent_lon[agent],
        )
        kinds.add(
            ("night" if hour >= 21 or hour < 5 else "day", "far" if km.min() > 200 else "near")
        )
    assert kinds == {("day", "near"), ("day", "far"), ("night", "near"), ("night", "far")}


def test_duplicates_come_the_same_day_and_weeks_later(families):
    _, payments = families
    label = LABELS.index("duplicate_instalment")
    copies = np.flatnonzero(payments.label == label)
    originals = np.flatnonzero(payments.label == 0)
    key = lambda i: (payments.beneficiary[i], payments.scheme[i], payments.period[i])  # noqa: E731
    first_paid = {}
    for i in originals:
        first_paid.setdefault(key(i), payments.paid_at[i])
    gaps = np.array(
        [abs(payments.paid_at[i] - first_paid[key(i)]) for i in copies if key(i) in first_paid]
    )
    assert gaps.min() < 86_400 and gaps.max() > 14 * 86_400


def test_geo_mismatch_runs_from_a_few_hundred_km_to_across_india(families):
    world, payments = families
    rows = np.flatnonzero(payments.label == LABELS.index("geo_mismatch"))
    home = payments.beneficiary[rows]
    km = haversine_km(
        world.home_lat[home],
        world.home_lon[home],
        payments.latitude[rows],
        payments.longitude[rows],
    )
    assert km.min() > 290 and km.min() < 500 and km.max() > 1_200


def test_over_entitlement_runs_from_modest_to_gross(families):
    world, payments = families
    rows = np.flatnonzero(payments.label == LABELS.index("over_entitlement"))
    ratio = payments.amount[rows] / world.entitlement_of(
        payments.beneficiary[rows], payments.scheme[rows]
    )
    assert ratio.min() < 1.4 and ratio.max() > 4


def test_ghost_groups_vary_in_size_and_enrolment_span(families):
    world, payments = families
    sizes, spans = [], []
    for rows in _groups(payments, "ghost_beneficiary").values():
        ghosts = np.unique(payments.beneficiary[rows])
        sizes.append(len(ghosts))
        spans.append(np.ptp(world.enrolled_day[ghosts]))
    assert min(sizes) <= 8 and max(sizes) >= 20
    assert min(spans) <= 1 and max(spans) >= 7


def test_a_two_month_pension_arrear_always_follows_an_unpaid_month(families):
    world, payments = families
    pension = schemes.SCHEME_CODES.index(schemes.OLD_AGE_PENSION)
    rows = np.flatnonzero((payments.scheme == pension) & (payments.label == 0))
    entitlement = world.entitlement_of(payments.beneficiary[rows], payments.scheme[rows])
    paid = {(payments.beneficiary[i], payments.period[i]) for i in rows}
    arrears = rows[np.isclose(payments.amount[rows], 2 * entitlement)]
    assert len(arrears) > 5
    first_month = min(payments.period[rows])
    for i in arrears:
        year, month = map(int, payments.period[i].split("-"))
        previous = f"{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"
        if previous >= first_month:
            assert (payments.beneficiary[i], previous) not in paid


def _random_payments(rng, count: int) -> Payments:
    """Payments with random values, many at the same second (to see that sorting is stable)."""
    return Payments(
        beneficiary=rng.integers(0, 50, count).astype(INDEX),
        scheme=rng.integers(0, 5, count).astype(np.int8),
        period=np.array([f"P{i}" for i in rng.integers(0, 9, count)], object),
        amount=rng.random(count),
        paid_at=rng.integers(0, 30, count),
        latitude=rng.random(count),
        longitude=rng.random(count),
        account=rng.integers(0, 60, count).astype(INDEX),
        agent=rng.integers(-1, 9, count).astype(INDEX),
        channel=rng.integers(0, 4, count).astype(np.int8),
        label=rng.integers(0, len(LABELS), count).astype(np.int8),
        group=rng.integers(-1, 99, count).astype(INDEX),
    )


def _assert_same_rows(got: Payments, wanted: Payments) -> None:
    for field in fields(Payments):
        assert getattr(got, field.name).dtype == getattr(wanted, field.name).dtype, field.name
        assert np.array_equal(getattr(got, field.name), getattr(wanted, field.name)), field.name


def test_the_year_put_in_order_column_by_column_equals_concatenating_then_sorting():
    rng = np.random.default_rng(3)
    honest, injected = _random_payments(rng, 500), _random_payments(rng, 40)
    kept = np.sort(rng.choice(500, 300, replace=False))
    wanted = Payments.concat([honest.take(kept), injected]).sorted_by_time()
    _assert_same_rows(generator._in_time_order(honest, kept, injected), wanted)


def test_honest_parts_gathered_in_time_order_equal_concatenating_then_sorting():
    rng = np.random.default_rng(4)
    parts = [_random_payments(rng, count) for count in (200, 1, 350, 90)]
    wanted = Payments.concat([part.copy() for part in parts]).sorted_by_time()
    _assert_same_rows(_concat_in_time_order(parts), wanted)


def test_a_generated_years_indexes_take_32_bits(families):
    _, payments = families
    for name in ("beneficiary", "account", "agent", "group"):
        assert getattr(payments, name).dtype == np.int32, name
