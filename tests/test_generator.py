import hashlib
import subprocess
from datetime import date

import numpy as np
import pytest
from conftest import PYTHON, ROOT

from schemewatch import generator, schemes, store
from schemewatch.errors import GenerationError
from schemewatch.geography import haversine_km, load_districts, on_land
from schemewatch.payments import BEHAVIOURAL_TYPOLOGIES, TYPOLOGIES


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
