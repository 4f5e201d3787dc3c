import numpy as np
import pandas as pd
import pytest

from schemewatch import features, modeling, store


@pytest.fixture
def tables(conn, generated_db):
    return store.transactions_for_scoring(generated_db, 0), modeling.load_registry(conn)


def test_features_have_the_declared_shape_and_are_finite(tables):
    transactions, registry = tables
    matrix = features.compute_features(transactions, registry)
    assert matrix.shape == (len(transactions), len(features.FEATURE_NAMES))
    assert matrix.dtype == np.float32 and np.isfinite(matrix).all()


@pytest.mark.parametrize("split", [0.5, 0.9])
def test_incremental_batches_match_the_whole_table(tables, split):
    transactions, registry = tables
    whole = features.compute_features(transactions, registry)
    cut = int(len(transactions) * split)
    earlier, later = transactions.iloc[:cut], transactions.iloc[cut:]
    for start in range(0, len(later), 400):
        batch = later.iloc[start : start + 400]
        seen = pd.concat([earlier, later.iloc[:start]])
        history = features.history_needed(batch, seen)
        part = features.compute_features(batch, registry, history)
        np.testing.assert_allclose(part, whole[cut + start : cut + start + len(batch)], rtol=1e-6)


def test_large_batches_computed_in_two_threads_give_the_same_values(tables, monkeypatch):
    transactions, registry = tables
    sequential = features.compute_features(transactions, registry)
    monkeypatch.setattr(features, "PARALLEL_ROWS", 1)
    np.testing.assert_array_equal(features.compute_features(transactions, registry), sequential)


def test_features_do_not_mutate_their_input(tables):
    transactions, registry = tables
    before = transactions.copy()
    features.compute_features(transactions, registry)
    pd.testing.assert_frame_equal(transactions, before)


def test_behavioural_features_see_only_the_past(tables):
    transactions, registry = tables
    whole = features.compute_features(transactions, registry)
    prefix = features.compute_features(transactions.iloc[:1000], registry)
    np.testing.assert_allclose(prefix, whole[:1000], rtol=1e-6)


def _column(matrix, name):
    return matrix[:, features.FEATURE_NAMES.index(name)]


@pytest.mark.parametrize(
    "typology, feature",
    [
        ("burst", "log_scheme_payments_24h"),
        ("duplicate_instalment", "period_amount_to_entitlement"),
        ("agent_collusion", "log_agent_beneficiaries_1h"),
        ("payment_after_death", "log_days_period_began_after_death"),
        ("geo_mismatch", "km_from_home"),
        ("off_cycle", "off_cycle"),
        ("over_entitlement", "amount_to_entitlement"),
        ("ghost_beneficiary", "log_beneficiaries_sharing_phone"),
        ("ghost_beneficiary", "share_of_phone_users_at_other_homes"),
        ("duplicate_instalment", "earlier_payments_same_period_same_amount"),
        ("over_entitlement", "amount_off_whole_instalments"),
        ("duplicate_instalment", "period_paid_over_entitlement"),
    ],
)
def test_each_typology_stands_out_on_its_behavioural_feature(conn, tables, typology, feature):
    transactions, registry = tables
    matrix = features.compute_features(transactions, registry)
    labelled = pd.read_sql_query(
        "SELECT transaction_id FROM ground_truth WHERE typology = ?", conn, params=(typology,)
    )["transaction_id"]
    mask = transactions["transaction_id"].isin(labelled).to_numpy()
    normal = (
        ~transactions["transaction_id"]
        .isin(pd.read_sql_query("SELECT transaction_id FROM ground_truth", conn)["transaction_id"])
        .to_numpy()
    )
    values = _column(matrix, feature)
    assert np.median(values[mask]) > np.quantile(values[normal], 0.95)


def test_ring_payments_go_into_crowded_or_newly_used_accounts(conn, tables):
    """A ring's payment lands in an account more people are paid into than any honest one, or in
    an account the beneficiary was never paid into before."""
    transactions, registry = tables
    matrix = features.compute_features(transactions, registry)
    truth = pd.read_sql_query("SELECT transaction_id, typology FROM ground_truth", conn)
    typology = transactions[["transaction_id"]].merge(truth, how="left")["typology"].to_numpy()
    ring, honest = typology == "shared_account_ring", pd.isna(typology)
    crowded = _column(matrix, "log_beneficiaries_on_account")
    crowded = crowded > crowded[honest].max()
    new = _column(matrix, "paid_into_new_account") == 1
    assert ring.sum() > 10
    # Not all: in a ring of three, a member paid again before the third joined shows neither.
    assert (crowded | new)[ring].mean() > 0.6
    assert (crowded | new)[honest].mean() < 0.005


def _pension_registry(date_of_death=None):
    context = pd.DataFrame(
        [("B1", 20.0, 78.0, date_of_death, 1, 0, 1, 1)], columns=list(features.REGISTRY_COLUMNS)
    )
    rights = pd.DataFrame(
        [("B1", "OLD_AGE_PENSION", 1000.0)], columns=["beneficiary_id", "scheme", "entitlement"]
    )
    return features.build_registry(context, rights)


def _pension_payments(rows, *, scheme="OLD_AGE_PENSION", account="A1", agent="G1", year=2025):
    """(day of month, month, amount, period) per payment of one beneficiary, in `year`.

    A month above 12 runs on into the next year.
    """
    frame = pd.DataFrame(
        [
            {
                "transaction_id": i + 1,
                "beneficiary_id": "B1",
                "scheme": scheme,
                "instalment_period": period,
                "amount": amount,
                "paid_at": int(
                    pd.Timestamp(year + (month - 1) // 12, (month - 1) % 12 + 1, day, 6).timestamp()
                ),
                "latitude": 20.0,
                "longitude": 78.0,
                "account_id": account,
                "agent_id": agent,
                "channel": "BANK",
            }
            for i, (day, month, amount, period) in enumerate(rows)
        ]
    )
    return frame[list(features.TRANSACTION_FIELDS)]


def test_payment_window_and_repeat_features_on_known_payments():
    payments = _pension_payments(
        [
            (3, 5, 1000.0, "2025-05"),  # on time
            (6, 5, 1000.0, "2025-05"),  # the same instalment again: a repeat of the same amount
            (2, 3, 1000.0, "2025-06"),  # months before June's window opens
            (4, 9, 2000.0, "2025-07"),  # two months' arrears, paid after the window closed
            (5, 10, 1370.0, "2025-10"),  # 1.37x: not a whole number of instalments
        ]
    )
    matrix = features.compute_features(payments, _pension_registry())
    repeat = _column(matrix, "earlier_payments_same_period_same_amount")
    assert repeat.tolist() == [0, 1, 0, 0, 0]
    before = np.expm1(_column(matrix, "log_days_before_window"))
    after = np.expm1(_column(matrix, "log_days_after_window"))
    assert before[2] > 80 and before[[0, 1, 3, 4]].max() == 0
    assert after[3] > 15 and after[[0, 1, 2, 4]].max() == 0
    off_whole = _column(matrix, "amount_off_whole_instalments")
    np.testing.assert_allclose(off_whole, [0, 0, 0, 0, 0.37], atol=1e-6)


def test_the_month_of_death_is_owed_and_later_periods_are_not():
    payments = _pension_payments(
        [
            (3, 5, 1000.0, "2025-05"),  # alive
            (20, 6, 1000.0, "2025-06"),  # died 10 June: June's pension is owed, paid after death
            (3, 7, 1000.0, "2025-07"),  # July began after the death
            (3, 8, 1000.0, "2025-08"),
        ]
    )
    matrix = features.compute_features(payments, _pension_registry("2025-06-10"))
    began_after = np.expm1(_column(matrix, "log_days_period_began_after_death"))
    np.testing.assert_allclose(began_after, [0, 0, 21, 52], atol=0.01)  # from 10 June, in days
    over = _column(matrix, "period_paid_over_entitlement")
    assert over.tolist() == [0, 0, 0, 0]


def test_wages_for_the_fortnight_of_death_are_owed():
    rights = pd.DataFrame(
        [("B1", "MGNREGA", 3500.0)], columns=["beneficiary_id", "scheme", "entitlement"]
    )
    context = pd.DataFrame(
        [("B1", 20.0, 78.0, "2025-05-10", 1, 0, 1, 1)], columns=list(features.REGISTRY_COLUMNS)
    )
    registry = features.build_registry(context, rights)
    payments = _pension_payments(
        [(20, 5, 1000.0, "2025-05-F1"), (5, 6, 1000.0, "2025-05-F2")], scheme="MGNREGA"
    )
    began_after = np.expm1(
        _column(features.compute_features(payments, registry), "log_days_period_began_after_death")
    )
    np.testing.assert_allclose(began_after, [0, 6], atol=0.01)  # F2 begins on the 16th


def test_a_same_period_payment_long_ago_is_part_of_the_history():
    """Arrears for a period paid over a year after its first payment, with no account to link."""
    payments = _pension_payments(
        [(3, 1, 1000.0, "2024-01"), (1, 16, 1000.0, "2024-01")],
        account=None,
        agent=None,
        year=2024,
    )
    registry = _pension_registry()
    whole = features.compute_features(payments, registry)
    earlier, later = payments.iloc[:1], payments.iloc[1:]
    part = features.compute_features(later, registry, features.history_needed(later, earlier))
    np.testing.assert_array_equal(part, whole[1:])
    assert _column(whole, "earlier_payments_same_period_same_amount")[1] == 1


def _payments(rows):
    """Hand-built payments: dicts with beneficiary, scheme, period, amount, paid_at and extras."""
    defaults = {
        "latitude": 20.0,
        "longitude": 78.0,
        "account_id": "A1",
        "agent_id": None,
        "channel": "BANK",
    }
    frame = pd.DataFrame(
        [
            {
                "transaction_id": i + 1,
                "beneficiary_id": r.get("beneficiary", "B1"),
                "scheme": r.get("scheme", "OLD_AGE_PENSION"),
                "instalment_period": r.get("period", "2025-05"),
                "amount": r.get("amount", 1000.0),
                **defaults,
                **{k: v for k, v in r.items() if k not in ("beneficiary", "scheme", "period")},
            }
            for i, r in enumerate(rows)
        ]
    )
    return frame[list(features.TRANSACTION_FIELDS)]


def _registry(people=("B1",), scheme="OLD_AGE_PENSION", homes=None):
    homes = homes or {}
    context = pd.DataFrame(
        [(b, *homes.get(b, (20.0, 78.0)), None, 1, 0, 1, 1) for b in people],
        columns=list(features.REGISTRY_COLUMNS),
    )
    rights = pd.DataFrame(
        [
            (b, s, 1000.0 if s != "PM_KISAN" else 2000.0)
            for b in people
            for s in (scheme, "PM_KISAN")
        ],
        columns=["beneficiary_id", "scheme", "entitlement"],
    )
    return features.build_registry(context, rights)


MAY_3 = int(pd.Timestamp("2025-05-03 04:30").timestamp())  # 10:00 IST


def test_repeat_windows_count_only_the_same_scheme():
    payments = _payments(
        [
            {"paid_at": MAY_3},
            {
                "paid_at": MAY_3 + 600,
                "scheme": "PM_KISAN",
                "period": "2025-26/P1",
                "amount": 2000.0,
            },
            {"paid_at": MAY_3 + 1200},  # the pension again, 20 minutes later
            {"paid_at": MAY_3 + 3 * 86_400},  # and again three days later
        ]
    )
    matrix = features.compute_features(payments, _registry())
    one_hour = np.expm1(_column(matrix, "log_scheme_payments_1h")).round()
    week = np.expm1(_column(matrix, "log_scheme_payments_7d")).round()
    assert one_hour.tolist() == [0, 0, 1, 0]
    assert week.tolist() == [0, 0, 1, 2]
    np.testing.assert_allclose(np.expm1(_column(matrix, "log_scheme_amount_24h")), [0, 0, 1000, 0])


def test_a_payment_into_an_account_never_used_before_for_the_beneficiary():
    payments = _payments(
        [
            {"paid_at": MAY_3, "account_id": "A1"},  # first payment seen: nothing to compare
            {"paid_at": MAY_3 + 30 * 86_400, "account_id": "A1", "period": "2025-06"},
            {"paid_at": MAY_3 + 61 * 86_400, "account_id": "RING", "period": "2025-07"},
            {"paid_at": MAY_3 + 92 * 86_400, "account_id": "A1", "period": "2025-08"},  # back home
        ]
    )
    new = _column(features.compute_features(payments, _registry()), "paid_into_new_account")
    assert new.tolist() == [0, 0, 1, 0]


def test_agent_windows_measure_pace_people_night_and_distance():
    night = int(pd.Timestamp("2025-05-03 17:30").timestamp())  # 23:00 IST
    people = ("B1", "B2", "B3", "B4")
    far = {b: (28.6, 77.2) for b in people}  # homes in Delhi, payouts in central India
    payments = _payments(
        [
            {"beneficiary": b, "paid_at": night + 60 * i, "agent_id": "G1", "channel": "AEPS"}
            for i, b in enumerate(people)
        ]
        + [{"beneficiary": "B1", "paid_at": night + 300, "agent_id": "G1", "channel": "AEPS"}]
    )
    matrix = features.compute_features(payments, _registry(people, homes=far))
    assert np.expm1(_column(matrix, "log_agent_payments_10min")).round().tolist() == [0, 1, 2, 3, 4]
    assert np.expm1(_column(matrix, "log_agent_payments_1h")).round().tolist() == [0, 1, 2, 3, 4]
    people_1h = np.expm1(_column(matrix, "log_agent_beneficiaries_1h")).round()
    assert people_1h.tolist() == [1, 2, 3, 4, 4]  # B1 came twice
    night_hours = _column(matrix, "agent_night_hours_10min")
    np.testing.assert_allclose(night_hours[:3], [4, 8 + 1 / 60, 12 + 3 / 60], atol=1e-3)
    km_in_all = np.expm1(_column(matrix, "log_agent_km_10min"))
    assert (km_in_all[:4] / np.arange(1, 5) > 900).all()
    # B1's second payout is at the place of their previous one: it adds no distance.
    assert km_in_all[4] == pytest.approx(km_in_all[3], rel=1e-5)


@pytest.mark.parametrize(
    "hour, night",
    [(13.0, 0.0), (7.0, 0.0), (19.0, 0.0), (22.0, 3.0), (1.0, 6.0), (4.0, 3.0), (23.5, 4.5)],
)
def test_hours_into_the_night_grow_continuously_beyond_the_working_day(hour, night):
    assert features.hours_into_night(np.array([hour]))[0] == pytest.approx(night)


def test_incremental_batches_match_for_agent_windows_reaching_back_a_day():
    people = [f"B{i}" for i in range(6)]
    payments = _payments(
        [
            {"beneficiary": people[i % 6], "paid_at": MAY_3 + 1_800 * i, "agent_id": "G1"}
            | {"channel": "AEPS", "period": "2025-05", "account_id": f"A{i % 6}"}
            for i in range(60)
        ]
    )
    registry = _registry(people)
    whole = features.compute_features(payments, registry)
    for cut in (10, 30, 55):
        earlier, later = payments.iloc[:cut], payments.iloc[cut:]
        history = features.history_needed(later, earlier)
        part = features.compute_features(later, registry, history)
        np.testing.assert_allclose(part, whole[cut:], rtol=1e-6)


def _small_registry() -> features.Registry:
    people = ["B-1", "B-2", "B-3"]
    context = pd.DataFrame({"beneficiary_id": people, "home_latitude": [25.0, 26.0, 27.0]})
    for name in features.REGISTRY_COLUMNS[2:]:
        context[name] = np.nan if name == "date_of_death" else 1.0
    context["home_longitude"] = 85.0
    rights = pd.DataFrame({"beneficiary_id": people, "scheme": "PM_KISAN", "entitlement": 2000.0})
    return features.build_registry(context[list(features.REGISTRY_COLUMNS)], rights)


def test_registry_finds_people_by_hash_and_by_text_when_hashes_collide(monkeypatch):
    asked = np.array(["B-3", "nobody", "B-1"], dtype=object)
    assert _small_registry().positions_of(asked).tolist() == [2, -1, 0]

    # Every id hashing alike: the registry's hashes are not unique, so the text decides.
    monkeypatch.setattr(features, "id_hashes", lambda ids: np.zeros(len(ids), np.uint64))
    assert _small_registry().positions_of(asked).tolist() == [2, -1, 0]

    # An unknown id sharing a registered id's hash: the text of the hit does not match.
    def colliding(ids):
        text = pd.Series(ids).to_numpy(dtype=object)
        return np.array([3 if value == "nobody" else ord(value[-1]) for value in text], np.uint64)

    monkeypatch.setattr(features, "id_hashes", colliding)
    assert _small_registry().positions_of(asked).tolist() == [2, -1, 0]
